"""`make drift` against real pyinfra dry runs on this machine (`@local`, a tiny deploy).

The verdict is read from what pyinfra really prints with `--dry --diff --json` and no `-y`:
its plan on stdout and the per-host change messages on stderr.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from oceanid import drift

REPO = Path(__file__).resolve().parents[2]


def deploy(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "deploy.py"
    path.write_text("from pyinfra.operations import files\n" + body)
    return path


def run_drift(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oceanid.drift", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def config_deploy(tmp_path: Path) -> tuple[Path, Path, Path]:
    source, target = tmp_path / "config.src", tmp_path / "config.yaml"
    source.write_text("metrics: 127.0.0.1:2200\n")
    target.write_text(source.read_text())
    body = f'files.put(name="Connector config", src="{source}", dest="{target}", mode="644")\n'
    target.chmod(0o644)
    return deploy(tmp_path, body), source, target


def test_no_drift_exits_0(config_deploy):
    path, _, _ = config_deploy
    done = run_drift("@local", "--deploy", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["drift: none; a converge would change nothing"]


def test_hand_edited_file_exits_2_naming_host_operation_and_file(config_deploy):
    path, _, target = config_deploy
    target.write_text("metrics: 0.0.0.0:2200  # edited by hand, with a secret-looking s3cr3t\n")
    done = run_drift("@local", "--deploy", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "CHANGE Connector config — @local"
    assert f"  [@local] Will modify {target}" in lines
    assert lines[-1] == "drift: 1 operation(s) would change @local"
    assert "s3cr3t" not in done.stdout  # diff bodies are never repeated
    assert target.read_text().startswith("metrics: 0.0.0.0")  # a dry run changes nothing


def test_failed_dry_run_exits_1_with_the_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory belongs\n")
    path = deploy(tmp_path, f'files.directory(name="Models", path="{blocker}")\n')
    done = run_drift("@local", "--deploy", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    error = f"ERROR Operation error in {path} line 2: {blocker} exists and is not a directory"
    assert error in done.stdout.splitlines()
    assert done.stdout.splitlines()[-1] == "drift: the dry run failed; the hosts' state is unknown"


def test_unreachable_host_exits_1_naming_it(tmp_path):
    path = deploy(tmp_path, f'files.directory(name="Models", path="{tmp_path}")\n')
    done = run_drift("@ssh/127.0.0.1:1", "--deploy", str(path))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    # pyinfra reads "127.0.0.1:1" as a host name (no port syntax in @ssh/): unresolvable
    assert any(line.startswith("FAILED @ssh/127.0.0.1:1: Could not resolve") for line in lines)
    assert "ERROR pyinfra error: No hosts remaining!" in lines


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_one_host_unreachable_among_reachable_ones_exits_1_naming_it(tmp_path):
    """The real CLI with an inventory of two: @local connects and has nothing to change, so
    pyinfra's plan alone says "no drift"; only its exit status and its log say the other
    host was never read."""
    port = _closed_port()
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        "hosts = [\n"
        '    "@local",\n'
        f'    ("@ssh/127.0.0.1", {{"ssh_port": {port}, "ssh_connect_timeout": 2,\n'
        '                         "ssh_connect_retries": 0}),\n'
        "]\n"
    )
    path = deploy(tmp_path, f'files.directory(name="Models", path="{tmp_path}")\n')
    done = run_drift(str(inventory), "--deploy", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "drift: the dry run failed on @ssh/127.0.0.1; the hosts' state is unknown"
    assert any(line.startswith("FAILED @ssh/127.0.0.1: Could not connect") for line in lines)
    assert not any("@local" in line for line in lines)  # it connected and had nothing to say


# What pyinfra printed for the run above (stderr, PYINFRA_PROGRESS=off; stdout its plan).
TWO_HOSTS_PLAN = (
    '{"plan": [{"op_hash": "e6a1", "name": "Models", "names": ["Models"], "args": [], '
    '"hosts_with_change": [], "hosts_with_conditional_change": []}], "results": null}'
)
TWO_HOSTS_LOG = (
    "--> Connecting to hosts...\n"
    "    [@local]         Connected\n"
    "    [@ssh/127.0.0.1] Could not connect ([Errno None] Unable to connect to port 1 on "
    "127.0.0.1)\n"
    "\n--> Preparing operation files...\n"
    "    Loading: deploy.py\n"
    "    [@local]         Ready: deploy.py\n"
)


def test_pyinfras_exit_status_alone_fails_the_check():
    """A failure pyinfra logs in no way drift knows still fails it: the plan of the hosts
    that answered is not a verdict on the others."""
    verdict = drift.parse(1, TWO_HOSTS_PLAN, "--> Connecting to hosts...\n")
    assert verdict.code == drift.ERROR
    assert verdict.lines()[-1] == "drift: the dry run failed; the hosts' state is unknown"


def test_a_host_pyinfra_could_not_reach_fails_the_check_whatever_its_exit_status():
    verdict = drift.parse(0, TWO_HOSTS_PLAN, TWO_HOSTS_LOG)
    assert verdict.code == drift.ERROR
    assert verdict.lines() == [
        "FAILED @ssh/127.0.0.1: Could not connect ([Errno None] Unable to connect to port 1 "
        "on 127.0.0.1)",
        "drift: the dry run failed on @ssh/127.0.0.1; the hosts' state is unknown",
    ]


def test_parse_keeps_changed_hosts_messages_and_drops_diff_bodies():
    """Two hosts, one drifted: the unchanged host's progress lines say nothing."""
    stdout = (
        '{"plan": [{"op_hash": "a", "name": "GPU host files", "names": ["GPU host files"], '
        '"args": [], "hosts_with_change": ["calypso"], "hosts_with_conditional_change": []}, '
        '{"op_hash": "b", "name": "Base packages", "names": ["Base packages"], "args": [], '
        '"hosts_with_change": [], "hosts_with_conditional_change": []}], "results": null}'
    )
    stderr = (
        "--> Preparing operation files...\n"
        "    Loading: deploys/site.py\n"
        "    [calypso] /etc/cloudflared/config.yaml: changes\n"
        "      - metrics: 127.0.0.1:2200\n"
        "      + metrics: 0.0.0.0:2200\n"
        "    [\x1b[1mcalypso\x1b[0m] Ready: deploys/site.py\n"
        "    [styx] Ready: deploys/site.py\n"
    )
    verdict = drift.parse(0, stdout, stderr)
    assert verdict.code == drift.DRIFT
    assert verdict.lines() == [
        "CHANGE GPU host files — calypso",
        "  [calypso] /etc/cloudflared/config.yaml: changes",
        "drift: 1 operation(s) would change calypso",
    ]


def test_parse_without_a_plan_is_an_error():
    verdict = drift.parse(0, "", "--> Loading config...\n")
    assert verdict.code == drift.ERROR


def test_the_dry_run_has_no_yes_flag():
    argv = drift.pyinfra_argv("inventory.py", "deploys/site.py")
    assert "-y" not in argv and "--yes" not in argv
    assert argv[1:] == ["--dry", "--diff", "--json", "inventory.py", "deploys/site.py"]


def test_an_inventory_that_refuses_to_load_is_its_one_line(tmp_path):
    inventory = tmp_path / "lab.py"
    inventory.write_text('raise SystemExit("lab: the lab is down (no bridge ocl-br0)")\n')
    path = deploy(tmp_path, f'files.directory(name="Models", path="{tmp_path}")\n')
    done = run_drift(str(inventory), "--deploy", str(path))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "ERROR lab: the lab is down (no bridge ocl-br0)",
        "drift: the dry run failed; the hosts' state is unknown",
    ]


def test_json_prints_one_object_per_finding(config_deploy):
    """`--json` (issue 23): JSON lines for monitoring, the same exit status."""
    import json

    path, _, target = config_deploy
    clean = run_drift("@local", "--deploy", str(path), "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert [json.loads(line)["status"] for line in clean.stdout.splitlines()] == ["ok"]
    target.write_text("metrics: 0.0.0.0:2200  # edited by hand, s3cr3t\n")
    done = run_drift("@local", "--deploy", str(path), "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (record["status"], record["check"], record["hosts"]) == (
        "drift",
        "Connector config",
        ["@local"],
    )
    assert f"[@local] Will modify {target}" in record["detail"]
    assert "s3cr3t" not in done.stdout


def test_a_bad_argument_exits_3_never_drifts_2():
    done = run_drift("--no-such-option")
    assert done.returncode == 3 and "unrecognized arguments" in done.stderr
