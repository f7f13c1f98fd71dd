"""The lab: boot real hosts, converge twice (the second must change nothing), verify with
testinfra, tear down and check nothing is left.

Needs root, systemd-nspawn and mmdebstrap (`make lab-deps`); CI installs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab import docker_host, network, processes, roundtrips
from lab.converge import lab_env, pyinfra, verify_argv
from lab.topology import GPU_HOSTS, HOSTS, REPO
from tests.lab import edges, lab_cli, lab_secret_lines, ssh

pytestmark = pytest.mark.lab


PROXY_PROBE = (
    "import sys, urllib.request as u\n"
    "opener = u.build_opener(u.ProxyHandler({'http': 'http://10.77.0.1:3128'}))\n"
    "try:\n    print(opener.open(sys.argv[1], timeout=20).status)\n"
    "except u.HTTPError as e:\n    print(e.code)\n"
)


def test_hosts_reach_only_the_registries_through_the_proxy(lab):
    """No route off the bridge; the proxy passes the registries and refuses anything else
    (the refusal is the proxy's own answer: nothing leaves the machine for it)."""
    for lab_host in HOSTS:
        route = ssh(lab_host.name, "ip route get 192.0.2.1")  # TEST-NET-1: never contacted
        assert route.returncode != 0 and "unreachable" in route.stderr
    probe = f'python3 -c "{PROXY_PROBE}"'
    assert ssh("styx", f"{probe} http://example.com/").stdout.strip() == "403"
    release = "http://deb.debian.org/debian/dists/bookworm/Release"
    assert ssh("styx", f"{probe} {release}").stdout.strip() == "200"


def test_dry_run_changes_nothing_and_shows_no_secret(dry_run):
    assert dry_run.returncode == 0, dry_run.output[-4000:]
    assert "cloudflared-node" in dry_run.output
    for key, line in lab_secret_lines():
        assert line not in dry_run.output, f"{key} appears in --dry --diff -vv output"
    assert ssh("calypso", "test -e /etc/cloudflared").returncode == 1, "--dry wrote files"


def test_first_converge_output_shows_no_secret(converged):
    assert '"operations"' in converged.output  # pyinfra's --json results, with op arguments
    for key, line in lab_secret_lines():
        assert line not in converged.output, f"{key} appears in the converge's output"


def test_second_converge_changes_nothing(converged):
    """...and costs each host one connection and one command, counted by the host's sshd:
    every role's state is read in one command, and nothing else runs."""
    marks = roundtrips.cursors()
    second = pyinfra("deploys/site.py")
    assert second.returncode == 0, second.output[-6000:]
    assert second.totals["error"] == 0
    assert second.changed == {}, f"the second converge changed: {second.changed}"
    assert second.totals["success"] == 0
    counts = roundtrips.since(marks)
    assert counts == {h.name: roundtrips.Count(1, 1) for h in HOSTS}, counts


def test_held_package_counts_as_installed(converged):
    """A package held with `apt-mark hold` (dpkg status `hi`) is installed: no reinstall."""
    assert ssh("styx", "apt-mark hold curl").returncode == 0
    try:
        run = pyinfra("deploys/site.py", "--limit", "styx")
    finally:
        ssh("styx", "apt-mark unhold curl")
    assert run.returncode == 0, run.output[-4000:]
    assert run.changed == {}, f"a held package made the converge change: {run.changed}"


def pyinfra_ssh(*args: str) -> subprocess.CompletedProcess[str]:
    """`pyinfra @ssh/calypso deploys/gpu.py`: no inventory file, the host's data by its name;
    no `--sudo` either: calypso's `hosts:` entry says it is reached as oceanid with sudo."""
    argv = [str(REPO / ".venv/bin/pyinfra"), "-y",
            f"--data=ssh_config_file={REPO / '.lab/ssh/config'}", *args,
            "@ssh/calypso", "deploys/gpu.py"]  # fmt: skip
    return subprocess.run(argv, cwd=REPO, env=lab_env(), capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


def test_one_gpu_host_without_the_inventory_file(converged):
    done = pyinfra_ssh("--json", "--group-data=inventories/group_data")
    assert done.returncode == 0, done.stderr[-4000:]
    totals = json.loads(done.stdout)["results"]["totals"]
    assert totals["success"] == 0 and totals["error"] == 0 and totals["no_change"] >= 10, totals


def test_gpu_required_host_without_a_gpu_fails_before_any_change(converged):
    """Production's settings say calypso must have a GPU; the lab's calypso has none."""
    before = ssh("calypso", "sudo find /etc /opt /usr/local -newer /etc/hostname | wc -l").stdout
    done = pyinfra_ssh('--data=secret_sources=["file"]')
    assert done.returncode != 0
    assert "calypso: no usable NVIDIA GPU" in done.stderr
    assert "set hosts.calypso.gpu.require_gpu: false" in done.stderr
    assert "Traceback" not in done.stderr
    after = ssh("calypso", "sudo find /etc /opt /usr/local -newer /etc/hostname | wc -l").stdout
    assert after == before


def test_secrets_stay_out_of_units_and_process_arguments(converged):
    for name in GPU_HOSTS:
        seen = ssh(name, "sudo cat /etc/systemd/system/*.service; ps -eo args").stdout
        assert "ExecStart" in seen
        for key, line in lab_secret_lines():
            assert line not in seen, f"{key} is in a unit file or a process argument on {name}"


def test_checksum_mismatch_fails_and_keeps_the_installed_binary(converged):
    served = next((REPO / ".lab/mirror/cloudflare").rglob("cloudflared-linux-amd64"))
    original = served.read_bytes()
    # the host's binary drifted, and the mirror now serves something else than the pin
    ssh("calypso", "echo '# local' | sudo tee -a /usr/local/bin/cloudflared >/dev/null")
    drifted = ssh("calypso", "sha256sum /usr/local/bin/cloudflared").stdout
    try:
        served.write_bytes(original + b"# tampered\n")
        run = pyinfra("deploys/gpu.py", "--limit", "calypso", json_output=False)
    finally:
        served.write_bytes(original)
    assert run.returncode != 0
    assert "SHA-256 mismatch" in run.output and "installed binary was left in place" in run.output
    assert ssh("calypso", "sha256sum /usr/local/bin/cloudflared").stdout == drifted
    assert ssh("calypso", "test -e /usr/local/bin/cloudflared.oceanid-new").returncode == 1
    repaired = pyinfra("deploys/gpu.py", "--limit", "calypso")
    assert repaired.returncode == 0, repaired.output[-4000:]
    assert "cloudflared-node" in repaired.changed  # restarted for the new binary
    assert ssh("calypso", "sha256sum /usr/local/bin/cloudflared").stdout != drifted


@pytest.mark.parametrize("name", ["calypso", "calypso2"], ids=["host runtime", "container"])
def test_model_change_reloads_without_restarting_triton(converged, name):
    model = "/opt/triton/models/docling_granite_python"
    pid = ssh(name, "systemctl show -p MainPID --value tritonserver").stdout.strip()
    ssh(
        name,
        f"echo '# drift' | sudo tee -a {model}/1/model.py >/dev/null; "
        f"sudo touch {model}/stray.txt; sudo mkdir -p /opt/triton/models/local_model; "
        "sudo touch /opt/triton/models/local_model/keep.txt",
    )
    run = pyinfra("deploys/site.py", "--limit", name)
    assert run.returncode == 0, run.output[-4000:]
    assert "Load changed models" in run.changed and "tritonserver" not in run.changed
    after = ssh(name, "systemctl show -p MainPID --value tritonserver").stdout.strip()
    assert after == pid, "Triton was restarted for a model change"
    assert ssh(name, f"test -e {model}/stray.txt").returncode == 1
    assert ssh(name, "test -e /opt/triton/models/local_model/keep.txt").returncode == 0
    assert "# drift" not in ssh(name, f"cat {model}/1/model.py").stdout
    ready = ssh(
        name,
        "curl -s -o /dev/null -w '%{http_code}' "
        "localhost:8000/v2/models/docling_granite_python/ready",
    ).stdout
    assert ready == "200"
    ssh(name, "sudo rm -rf /opt/triton/models/local_model")


def test_config_change_restarts_only_the_service_that_reads_it(converged):
    pids = {
        unit: ssh("calypso", f"systemctl show -p MainPID --value {unit}").stdout.strip()
        for unit in ("cloudflared-node", "tritonserver")
    }
    changed = pyinfra("deploys/site.py", "--limit", "calypso", "--data", "tunnel_protocol=http2")
    assert changed.returncode == 0, changed.output[-4000:]
    assert changed.changed == {"GPU host files": ["calypso"], "cloudflared-node": ["calypso"]}
    after = {
        unit: ssh("calypso", f"systemctl show -p MainPID --value {unit}").stdout.strip()
        for unit in pids
    }
    assert after["cloudflared-node"] != pids["cloudflared-node"]
    assert after["tritonserver"] == pids["tritonserver"]
    assert "protocol: http2" in ssh("calypso", "cat /etc/cloudflared/config.yaml").stdout
    back = pyinfra("deploys/site.py", "--limit", "calypso")
    assert back.returncode == 0 and set(back.changed) == {"GPU host files", "cloudflared-node"}


def test_server_reboot_comes_back_and_stays_converged(converged):
    """pyinfra's server.reboot on a lab host: uptime restarts (own time namespace), the host
    comes back by itself, and what the deploy set up survives the reboot unchanged."""
    before = float(ssh("calypso2", "cut -d' ' -f1 /proc/uptime").stdout)
    reboot = pyinfra("--limit", "calypso2", "server.reboot")
    assert reboot.returncode == 0, reboot.output[-4000:]
    after = float(ssh("calypso2", "cut -d' ' -f1 /proc/uptime").stdout)
    assert after < before
    for unit in ("cloudflared-node", "tritonserver"):
        assert ssh("calypso2", f"systemctl is-active {unit}").stdout.strip() == "active", unit
    again = pyinfra("deploys/site.py", "--limit", "calypso2")
    assert again.returncode == 0 and again.changed == {}, again.changed


def test_smoke_through_port_forwards(converged):
    """`make smoke` on the lab: tunnels from the API stand-in, each GPU host's public name through
    an SSH port forward to its connector's edge (the lab has no Cloudflare edge; the connector
    routes the name by its own rules)."""
    names = {"calypso": "gpu", "calypso2": "gpu2", "calypso3": "gpu3"}
    with edges(*names) as edge:
        urls = [arg for name, public in names.items()
                for arg in ("--url", f"{public}.boathou.se={edge[name]}")]  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "oceanid.smoke", "inventories/lab.py", "--only", "gpu", *urls],
            cwd=REPO, env=lab_env(), capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    assert done.stdout.count("PASS") >= 6
    for key, line in lab_secret_lines():
        assert line not in done.stdout + done.stderr, key


def test_testinfra_checks_pass(converged):
    done = subprocess.run(
        verify_argv(), cwd=REPO, env=lab_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-6000:]
    assert " passed" in done.stdout


def test_teardown_leaves_nothing(lab):
    """Runs last in this module: `lab down` removes every process, namespace and link."""
    down = lab_cli("down")
    assert down.returncode == 0, down.stderr
    assert network.leftovers() == {"netns": [], "links": []}
    assert processes.names() == []
    assert not list(Path("/run/netns").glob("ocl-*")) if Path("/run/netns").exists() else True
    mounts = Path("/proc/mounts").read_text()
    assert ".lab/hosts" not in mounts and "/run/netns/ocl-" not in mounts
    for lab_host in HOSTS:
        assert not lab_host.rootfs.exists()
        assert docker_host.remove_cgroups(lab_host.name) == [], "lab down left a cgroup"
