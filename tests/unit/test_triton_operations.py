"""
Triton's operations (operations/triton.py): what they decide, and their shell run for real.

The environment is built with the real `python3 -m venv` and pip in a temporary folder
standing in for /opt/triton, so "a failed build leaves the running environment and its link
alone" and "the link moves only once the new environment is complete" are shown by running
the commands, in order, stopping at the first failure as pyinfra does. The readiness wait is
run against fake `systemctl`/`journalctl` and a local HTTP server here; against the real
tritonserver in tests/contract/test_triton_deploy.py.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploys.gpu_host import triton
from facts.managed import ManagedState
from oceanid.triton_runtime import (
    PYTHON_BACKEND_FILES,
    STUB,
    TritonDistribution,
    installed_distribution,
)
from operations import _desired
from operations import triton as triton_ops
from operations.managed import DesiredState, ManagedFile
from tests.unit.test_operations import (
    managed_state,
    run_op,
    shell_syntax_errors,
)
from tests.unit.test_progress import watched

STAMP = b"0.7.0 " + b"a" * 64 + b"\n"


@pytest.fixture(autouse=True)
def _fresh_state_cache():
    _desired.STATE_CACHE.clear()
    yield
    _desired.STATE_CACHE.clear()


def run_in_order(commands: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run each command with sh, stopping at the first that fails (as pyinfra does)."""
    for command in commands:
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        if done.returncode != 0:
            return done
    return None


# ---- environment: built beside the running one, switched when complete


def _environment(
    root: Path,
    current: bytes | None,
    requirements: str,
    finish: str | None = "true",
    wheel: str | None = None,
    image: str | None = None,
):
    link, env = root / "venv", root / "venvs" / "new"
    (root / "model-requirements.txt").write_text(requirements)
    desired = DesiredState(name="gpu host calypso", read=[f"{link}/.oceanid-stamp"])
    state = managed_state(contents={f"{link}/.oceanid-stamp": current})
    return run_op(
        triton_ops.environment,
        desired,
        link=str(link),
        env=str(env),
        stamp_name=".oceanid-stamp",
        stamp=STAMP,
        wheel_requirements=wheel,
        model_requirements=str(root / "model-requirements.txt"),
        finish=finish,
        image=image,
        facts={ManagedState: state},
    )


def _running_env(root: Path) -> Path:
    """An environment Triton runs on, reached through the link, as a previous run left it."""
    old = root / "venvs" / "old"
    old.mkdir(parents=True)
    (old / ".oceanid-stamp").write_text("0.6.0 old\n")
    (root / "venv").symlink_to(old)
    return old


def test_environment_with_matching_stamp_is_a_noop(tmp_path: Path) -> None:
    run = _environment(tmp_path, STAMP, "")
    assert run.commands == []
    assert run.noop == f"Triton's environment at {tmp_path}/venv is built from the pinned inputs"


def test_environment_is_stamped_and_switched_last(tmp_path: Path) -> None:
    run = _environment(tmp_path, None, "", finish="ln -sfn x y")
    assert shell_syntax_errors(run.commands) == []
    new = tmp_path / "venvs" / "new"
    assert run.strings[0].endswith(f"fi; rm -rf {new} && python3 -m venv {new}")
    assert run.strings[-3:-1] == [
        "ln -sfn x y",
        f"printf %s '{STAMP.decode()}' > {tmp_path}/venvs/new/.oceanid-stamp",
    ]
    assert run.strings[-1].endswith(f"mv -T {tmp_path}/venv.oceanid-new {tmp_path}/venv")
    assert not any("--clear" in text or "--upgrade pip" in text for text in run.strings)


def test_the_wheel_is_installed_by_hash_into_the_new_environment(tmp_path: Path) -> None:
    run = _environment(tmp_path, None, "", wheel="/opt/triton/wheel-requirements.txt")
    pip = f"{tmp_path}/venvs/new/bin/pip install -q --disable-pip-version-check"
    assert run.strings[1:3] == [
        f"{pip} --no-deps --require-hashes -r /opt/triton/wheel-requirements.txt",
        f"{pip} -r {tmp_path}/model-requirements.txt",
    ]


def test_a_failed_build_leaves_the_running_environment_and_its_link(tmp_path: Path) -> None:
    old = _running_env(tmp_path)
    run = _environment(tmp_path, b"0.6.0 old\n", "./no-such-requirement\n")
    failed = run_in_order(run.strings)
    assert failed is not None and "no-such-requirement" in failed.stderr
    assert os.readlink(tmp_path / "venv") == str(old)
    assert (tmp_path / "venv" / ".oceanid-stamp").read_text() == "0.6.0 old\n"
    assert not (tmp_path / "venvs" / "new" / ".oceanid-stamp").exists()  # retried next run


def test_a_complete_build_switches_the_link_and_keeps_the_old_until_ready(tmp_path: Path) -> None:
    old = _running_env(tmp_path)
    env = tmp_path / "venvs" / "new"
    run = _environment(tmp_path, b"0.6.0 old\n", "")
    assert run_in_order(run.strings) is None
    assert os.readlink(tmp_path / "venv") == str(env)
    assert (tmp_path / "venv" / ".oceanid-stamp").read_bytes() == STAMP  # what the fact reads
    assert old.is_dir()  # until Triton answered ready on the new one

    leftover = tmp_path / "dist"
    leftover.symlink_to(old)
    cleanup = run_op(
        triton_ops.old_environments,
        str(tmp_path / "venv"),
        str(tmp_path / "venvs"),
        [str(leftover)],
        rebuilt=True,
        facts={},
    )
    assert run_in_order(cleanup.strings) is None
    assert sorted(p.name for p in (tmp_path / "venvs").iterdir()) == ["new"]
    assert not leftover.is_symlink()
    assert (tmp_path / "venv" / ".oceanid-stamp").read_bytes() == STAMP


# ---- the container runtime: the environment is built by the image, for its Python

IMAGE = "sha256:" + "b3" * 32

# `docker run --rm --network host -v SRC:DST IMAGE sh -c SCRIPT`, run here: SCRIPT with DST
# read as SRC, and `python3` an interpreter other than the one the tests run on, standing in
# for the image's (its version differs from the host's, as 3.12 in the NGC image from 3.11)
FAKE_DOCKER = r"""#!/bin/sh
echo "$*" >> "$LOG"
[ "$1 $2 $3 $4 $5" = "run --rm --network host -v" ] || exit 64
src=${6%%:*}; dst=${6#*:}; image=$7
[ "$image" = "$IMAGE" ] && [ "$8 $9" = "sh -c" ] || exit 65
shift 9
printf '%s' "$1" | sed "s#$dst#$src#g" > "$src/.script"
PATH="$IMAGE_BIN:$PATH" sh "$src/.script"; status=$?; rm -f "$src/.script"; exit $status
"""
# The image's `python3 -m venv … DIR`: a venv whose python is the image's (3.99), its pip
# installing into DIR/site (the real pip, offline)
IMAGE_PYTHON = r"""#!/bin/sh
if [ "$1 $2" = "-m venv" ]; then
  for dir; do :; done
  mkdir -p "$dir/bin"
  cat > "$dir/bin/python" <<EOF
#!/bin/sh
if [ "\$1 \$2" = "-m pip" ]; then shift 2; exec "$REAL_PYTHON" -m pip "\$@" --target "$dir/site"; fi
echo 3.99
EOF
  chmod 0755 "$dir/bin/python"
  exit 0
fi
echo 3.99
"""


def _image_environment(tmp_path: Path, requirements: str):
    bin_dir, image_bin = tmp_path / "bin", tmp_path / "image-bin"
    for folder, name, text in (
        (bin_dir, "docker", FAKE_DOCKER),
        (image_bin, "python3", IMAGE_PYTHON),
    ):
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    root = tmp_path / "opt-triton"
    root.mkdir()
    run = _environment(root, None, requirements, finish=None, image=IMAGE)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(tmp_path / "docker.log"),
        "IMAGE": IMAGE,
        "IMAGE_BIN": str(image_bin),
        "PIP_NO_INDEX": "1",
        "REAL_PYTHON": sys.executable,
    }
    return root, run, env


def test_the_image_builds_the_environment_for_its_own_python(tmp_path: Path) -> None:
    project = tmp_path / "tiny_pkg-1-py3-none-any.whl"  # a requirement pip needs no index for
    with zipfile.ZipFile(project, "w") as wheel:
        wheel.writestr("tiny_pkg/__init__.py", "")
        info = "tiny_pkg-1.dist-info"
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tiny_pkg\nVersion: 1\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    root, run, env = _image_environment(tmp_path, f"{project}\n")
    assert shell_syntax_errors(run.commands) == []
    host_side = [text for text in run.strings if not text.startswith("docker run")]
    assert not any("python3 -m venv" in text or "/bin/pip" in text for text in host_side)
    docker_run = next(text for text in run.strings if text.startswith("docker run"))
    new = root / "venvs" / "new"
    assert docker_run.startswith(
        f"docker run --rm --network host -v {new}:/opt/oceanid/env {IMAGE} sh -c "
    )
    for command in run.strings:
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stderr)
    built = root / "venv"
    assert os.readlink(built) == str(new)
    assert (built / "requirements.txt").read_text() == f"{project}\n"
    assert (built / "python-version").read_text() == "3.99\n"  # the image's, not the host's
    assert (built / "venv" / "site" / "tiny_pkg" / "__init__.py").is_file()  # the image's venv
    path = (built / "container.env").read_text()
    assert path.startswith(f"PATH={new}/venv/bin:{tmp_path}/image-bin:"), path  # venv first
    assert (built / ".oceanid-stamp").read_bytes() == STAMP


def test_a_failed_image_build_leaves_the_running_environment(tmp_path: Path) -> None:
    root, run, env = _image_environment(tmp_path, "./no-such-requirement\n")
    old = _running_env(root)
    for command in run.strings:
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
        if done.returncode:
            break
    assert done.returncode != 0 and "no-such-requirement" in done.stderr
    assert os.readlink(root / "venv") == str(old)
    assert not (root / "venvs" / "new" / ".oceanid-stamp").exists()


def test_the_environment_in_use_is_never_built_over(tmp_path: Path) -> None:
    """Its stamp removed by hand, the environment is rebuilt: never in the folder Triton runs on."""
    (tmp_path / "venvs" / "new").mkdir(parents=True)
    (tmp_path / "venv").symlink_to(tmp_path / "venvs" / "new")
    (tmp_path / "venvs" / "new" / "python-of-the-running-triton").touch()
    failed = run_in_order(_environment(tmp_path, None, "").strings)
    assert failed is not None
    assert "venv links to " in failed.stderr and "the environment in use" in failed.stderr
    assert (tmp_path / "venv" / "python-of-the-running-triton").exists()


def test_a_venv_folder_of_the_old_layout_is_moved_aside_not_overwritten(tmp_path: Path) -> None:
    legacy = tmp_path / "venv"
    legacy.mkdir()
    (legacy / ".oceanid-stamp").write_text("0.6.0 legacy\n")
    env = tmp_path / "venvs" / "new"
    env.mkdir(parents=True)
    (env / ".oceanid-stamp").write_bytes(STAMP)
    switch = _environment(tmp_path, b"0.6.0 legacy\n", "").strings[-1]
    assert run_in_order([switch]) is None
    assert os.readlink(legacy) == str(env)
    assert (tmp_path / "venvs" / "previous" / ".oceanid-stamp").read_text() == "0.6.0 legacy\n"


def test_a_first_build_creates_the_link(tmp_path: Path) -> None:
    env = tmp_path / "venvs" / "new"
    env.mkdir(parents=True)
    switch = _environment(tmp_path, None, "").strings[-1]
    assert run_in_order([switch]) is None
    assert os.readlink(tmp_path / "venv") == str(env)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-requirements.txt", "venv", "venvs"]


def test_old_environments_stay_when_nothing_was_rebuilt() -> None:
    run = run_op(
        triton_ops.old_environments,
        "/opt/triton/venv",
        "/opt/triton/venvs",
        [],
        rebuilt=False,
        facts={},
    )
    assert run.commands == []
    assert run.noop == "no new environment was built: nothing beside /opt/triton/venv's to remove"


# ---- wait_ready: judged by Triton's answers, not by systemd's "active"


class _Triton(http.server.BaseHTTPRequestHandler):
    """Answers readiness like Triton: 200 once ready, 400 for a model that is not."""

    ready: set[str] = set()

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.send_response(200 if self.path in self.ready else 400)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_triton() -> Iterator[tuple[int, type[_Triton]]]:
    handler = type("Handler", (_Triton,), {"ready": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()


def fake_systemd(tmp_path: Path, substate: str, restarts: list[str]) -> dict[str, str]:
    """systemctl reporting `substate` and NRestarts taken in turn from `restarts`; journalctl
    printing Triton's fatal line. Returns the environment that puts them first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    counter = tmp_path / "restarts"
    counter.write_text("\n".join(restarts) + "\n")
    (bin_dir / "systemctl").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *SubState*) echo {substate};;\n'
        f"*NRestarts*) head -n1 {counter}; [ $(wc -l < {counter}) -gt 1 ] && "
        f"sed -i 1d {counter};;\nesac\nexit 0\n"
    )
    (bin_dir / "journalctl").write_text(
        "#!/bin/sh\necho 'E tritonserver: failed to load all models'\n"
    )
    (bin_dir / "sleep").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _wait(port: int, started: bool = True, timeout: int = 5):
    return run_op(
        triton_ops.wait_ready,
        "tritonserver.service",
        port,
        ["docling_granite_python", "echo"],
        started,
        timeout,
        facts={},
    )


def test_no_wait_when_triton_was_not_started() -> None:
    run = _wait(8000, started=False)
    assert run.commands == []
    assert run.noop == "tritonserver.service was neither started nor restarted: nothing to wait for"


def test_wait_passes_once_triton_and_every_model_are_ready(tmp_path, fake_triton) -> None:
    port, handler = fake_triton
    handler.ready |= {
        "/v2/health/ready",
        "/v2/models/docling_granite_python/ready",
        "/v2/models/echo/ready",
    }
    run = _wait(port)
    assert shell_syntax_errors(run.commands) == []
    env = fake_systemd(tmp_path, "running", ["0"])
    done = subprocess.run(["sh", "-c", run.strings[0]], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_wait_fails_with_the_log_when_a_model_never_gets_ready(tmp_path, fake_triton) -> None:
    port, handler = fake_triton
    handler.ready |= {"/v2/health/ready", "/v2/models/echo/ready"}
    env = fake_systemd(tmp_path, "running", ["0"])
    command = _wait(port).strings[0]
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert (
        f"Triton on 127.0.0.1:{port} was not ready with model(s) docling_granite_python, echo "
        "after 5 s; its last log lines:"
    ) in done.stderr
    assert "failed to load all models" in done.stderr


@pytest.mark.parametrize(
    ("substate", "restarts", "said"),
    [
        ("auto-restart", ["0"], "exited before Triton was ready"),
        ("failed", ["0"], "exited before Triton was ready"),
        ("running", ["0", "1"], "restarted before Triton was ready"),
    ],
)
def test_wait_fails_at_once_when_triton_exits(tmp_path, substate, restarts, said) -> None:
    env = fake_systemd(tmp_path, substate, restarts)
    run = _wait(1, timeout=1000)  # nothing listens on port 1: only the exit can end the wait
    done = subprocess.run(
        ["sh", "-c", run.strings[0]], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert f"tritonserver.service {said}; its last log lines:" in done.stderr
    assert "failed to load all models" in done.stderr


# ---- retire: model folders the deploy wrote and no longer wants


ROOT = "/opt/triton/models"


def recorded(*paths: str) -> bytes:
    """The host's record of a previous run that wrote `paths` (files) under the models."""
    previous = DesiredState(name="gpu host calypso", files=[ManagedFile(p, b"") for p in paths])
    return json.dumps(previous.declared()).encode()


def _retire(record: bytes | None, models: list[str], caplog=None):
    desired = DesiredState(
        name="gpu host calypso",
        files=[ManagedFile(f"{ROOT}/{m}/config.pbtxt", b"") for m in models],
        trees=[ROOT],
    )
    state = {**managed_state(), "record": record}
    return run_op(triton_ops.retire, desired, ROOT, models, 9000, facts={ManagedState: state})


def test_removed_and_renamed_models_are_unloaded_then_deleted(caplog) -> None:
    caplog.set_level(logging.INFO)
    record = recorded(
        f"{ROOT}/docling_granite_python/config.pbtxt",
        f"{ROOT}/old_name/config.pbtxt",
        f"{ROOT}/old_name/1/model.py",
        f"{ROOT}/removed/config.pbtxt",
        "/etc/cloudflared/config.yaml",  # outside the models: sweep's business, not this one's
    )
    run = _retire(record, ["docling_granite_python", "new_name"])
    base = "http://127.0.0.1:9000/v2"
    limits = "--connect-timeout 5 --max-time"
    assert run.strings == [
        f"if curl -fs -o /dev/null {limits} 5 {base}/health/live; then "
        + watched(
            f"curl -fsS -X POST -o /dev/null {limits} 120 {base}/repository/models/{model}/unload",
            f"Triton to finish unloading model {model}",
            120,
        )
        + " || "
        f'{{ if [ "$?" = 28 ]; then echo \'Triton did not finish unloading model {model} in '
        "120 s (the limit set in operations/triton.py); see its log' >&2; else echo "
        f"'Triton refused to unload model {model}; see its log' >&2; fi; exit 1; }} ; fi"
        if step == 0
        else f"rm -rf {ROOT}/{model}"
        for model in ("old_name", "removed")
        for step in (0, 1)
    ]
    assert shell_syntax_errors(run.commands) == []
    said = [r.getMessage() for r in caplog.records if "no longer in the repo" in r.getMessage()]
    assert said == [
        "model old_name: no longer in the repository; unloaded from Triton and deleted",
        "model removed: no longer in the repository; unloaded from Triton and deleted",
    ]  # named in a dry run, once each


@pytest.mark.parametrize("record", [None, recorded(f"{ROOT}/docling_granite_python/config.pbtxt")])
def test_folders_the_deploy_never_wrote_or_still_wants_stay(record) -> None:
    run = _retire(record, ["docling_granite_python"])
    assert run.commands == []
    assert run.noop == f"no retired model folder under {ROOT}"


def test_backends_are_assembled_inside_the_new_environment(tmp_path: Path) -> None:
    """The host runtime's finish step, run for real on an environment holding the wheel."""
    wheel = Path(installed_distribution().root)
    env = tmp_path / "venvs" / "new"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(env)], check=True)
    site = Path(
        subprocess.run(
            [env / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    for name in ("pytriton", "nvidia_pytriton.libs"):
        (site / name).symlink_to(wheel / name)
    (tmp_path / "venv").symlink_to(env)
    command = triton.backend_copy_command(str(env)).get_raw_value()
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # the unit's paths, through the link, now lead to this environment's files
    unit_root = tmp_path / "venv"
    distribution = TritonDistribution(unit_root / "dist")
    assert distribution.server.is_file()
    python_dir = unit_root / "backends" / "python"
    assert sorted(p.name for p in python_dir.iterdir()) == sorted([*PYTHON_BACKEND_FILES, STUB])
    assert os.access(python_dir / STUB, os.X_OK)


# ---- every call to Triton's API has a time limit


def curl_calls(command: str) -> list[str]:
    """Each `curl …` of a shell command, up to the next ;, && or ||."""
    import re

    return [m.group(0) for m in re.finditer(r"\bcurl\b[^;&|]*", command)]


class _SlowRepository(http.server.BaseHTTPRequestHandler):
    """Triton's repository API: live at once; a load answered after `delay` seconds with
    `status` (400 and Triton's error body for a model that failed to load)."""

    delay = 0.0
    status = 200

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        import time

        time.sleep(self.delay)
        body = b'{"error":"failed to load"}' if self.status != 200 else b""
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def repository() -> Iterator[tuple[int, type[_SlowRepository]]]:
    handler = type("Handler", (_SlowRepository,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()


@pytest.mark.parametrize(
    ("delay", "status", "said"),
    [
        (0, 200, None),
        (5, 200, "Triton did not finish loading model echo in 1 s (the limit set in"),
        (0, 400, "Triton refused to load model echo; see its log"),
    ],
    ids=["loaded", "hangs", "refused"],
)
def test_a_load_is_given_a_time_limit_and_a_late_one_is_told_from_a_refusal(
    monkeypatch, repository, delay, status, said
) -> None:
    """Run for real against a local server playing Triton's repository API, the limit
    shortened to 1 s: a load that hangs fails in at most the limit, saying so."""
    port, handler = repository
    handler.delay, handler.status = delay, status
    monkeypatch.setattr(triton_ops, "LOAD_WAIT", 1)
    run = run_op(triton_ops.load, ["echo"], port, facts={})
    assert shell_syntax_errors(run.commands) == []
    assert all("--connect-timeout 5" in c for s in run.strings for c in curl_calls(s))
    done = run_in_order(run.strings)
    if said is None:
        assert done is None
    else:
        assert done is not None and done.returncode == 1
        assert said in done.stderr


def test_every_call_to_triton_carries_a_connect_and_a_total_limit(caplog) -> None:
    record = recorded(f"{ROOT}/old_name/config.pbtxt")
    commands = [
        *run_op(triton_ops.load, ["echo", "docling_granite_python"], 8000, facts={}).strings,
        *_retire(record, ["echo"]).strings,
        *_wait(8000).strings,
    ]
    calls = [call for command in commands for call in curl_calls(command)]
    assert len(calls) == 3 + 2 + 3  # live and two loads; live and unload; three probes
    for call in calls:
        assert "--connect-timeout 5 --max-time " in call, call
    assert sum(f"--max-time {triton_ops.LOAD_WAIT} " in c for c in calls) == 2
    assert sum(f"--max-time {triton_ops.UNLOAD_WAIT} " in c for c in calls) == 1
