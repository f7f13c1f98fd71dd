"""`make verify`, `make smoke`, `make status` and `make drift` against the converged lab, green,
then red for each thing broken on purpose (and put back in a `finally`):

- Triton stopped on calypso: smoke and verify red, status shows it;
- calypso's node connector stopped: smoke red on its tunnel check;
- a k3s agent stopped: smoke red on its node check (needs the k3s role in the lab);
- calypso's connector config edited by hand: drift exits 2 naming calypso and the file.

The lab has no Cloudflare edge: smoke reaches each GPU host's public name through an SSH port
forward to its connector, which plays the edge for its hostnames (`--url`; the cloudflared
stand-in's edge routes by the connector's rules), and label.<base> is SKIP. Nor does Cloudflare
see the lab's connectors: the API stand-in is told what each connector's own `/ready` says
(`edge_sees`), which is what the real edge learns from the connector's connections.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from lab.converge import lab_env, pyinfra
from lab.services import CLOUDFLARE_URL
from lab.topology import REPO, SECRETS_FILE
from tests.lab import edges, k3s_tunnel, lab_secret_lines, ssh

pytestmark = pytest.mark.lab

LAB = "inventories/lab.py"
GPU_NAMES = {"calypso": "gpu", "calypso2": "gpu2", "calypso3": "gpu3"}
TRITON_HOSTS = ("calypso", "calypso2")  # calypso3 serves the `http` kind
NODE_TUNNEL_KEYS = {
    "calypso": "cloudflareNodeTunnelId",
    "calypso2": "cloudflareNode2TunnelId",
    "calypso3": "cloudflareNode3TunnelId",
}
CONNECTOR_CONFIG = "/etc/cloudflared/config.yaml"


def run(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(argv), cwd=REPO, env=lab_env(), capture_output=True, text=True, timeout=timeout
    )
    for key, line in lab_secret_lines():
        assert line not in done.stdout + done.stderr, f"{key} in the output of {argv[:3]}"
    return done


def make(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run("make", "-s", target, f"INVENTORY={LAB}", *args)


def drift() -> subprocess.CompletedProcess[str]:
    """Not through make: make turns every failure into its own exit status 2."""
    return run(sys.executable, "-m", "oceanid.drift", LAB)


@contextmanager
def gpu_forwards() -> Iterator[list[str]]:
    """`--url` arguments sending each GPU host's public name to its connector's edge, through
    an SSH port forward: the name is routed by the connector's own rules, as Cloudflare's edge
    would hand it over."""
    with edges(*GPU_NAMES) as urls:
        yield [arg for name, public in GPU_NAMES.items()
               for arg in ("--url", f"{public}.boathou.se={urls[name]}")]  # fmt: skip


def edge_sees(name: str) -> None:
    """Tell the API stand-in what Cloudflare's edge would know: the connector's own /ready."""
    answer = ssh(name, "curl -s --max-time 5 http://127.0.0.1:2200/ready || true").stdout
    try:
        ready = json.loads(answer)
        connections = int(ready.get("readyConnections", 0))
    except ValueError:
        ready, connections = {}, 0
    values = yaml.safe_load(SECRETS_FILE.read_text())
    tunnel = values[NODE_TUNNEL_KEYS[name]]
    # listed by its own connector ID, as the edge lists a connector (the hand-over to the
    # cluster tells the host's connector from another by it: deploys/gpu_host/cloudflared_node)
    connector = {"conns": connections, "id": ready.get("connectorId")}
    body = {"connectors": [connector] if connections else []}
    request = urllib.request.Request(
        f"{CLOUDFLARE_URL}/__standin__/tunnels/{tunnel}/connectors",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={
            "Authorization": f"Bearer {values['cloudflareApiToken']}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def smoke(*args: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "oceanid.smoke", LAB, *args)


def heal(limit: str) -> None:
    """A converge puts back whatever was broken on this host; the next one changes nothing."""
    healed = pyinfra("deploys/site.py", "--limit", limit)
    assert healed.returncode == 0, healed.output[-4000:]


def failed(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("FAIL ")]


# -- green ---------------------------------------------------------------------------------------


def test_verify_passes(converged):
    done = make("verify")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout


def test_smoke_passes_with_skips_for_what_the_lab_cannot_run(converged):
    for name in GPU_NAMES:
        edge_sees(name)
    with gpu_forwards() as urls:
        done = smoke(*urls)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not failed(done.stdout)
    assert "SKIP label.boathou.se — no Cloudflare edge serves it here" in done.stdout
    for name, public in GPU_NAMES.items():
        assert f"PASS {name}'s node tunnel ({public}.boathou.se)" in done.stdout
        if name in TRITON_HOSTS:
            assert f"PASS {public}.boathou.se inference docling_granite_python" in done.stdout
        else:
            assert f"PASS {public}.boathou.se service" in done.stdout


def test_status_shows_every_host(converged):
    done = make("status")
    assert done.returncode == 0, done.stdout + done.stderr
    tables = done.stdout.split("\n\n")
    assert [table.splitlines()[0] for table in tables] == [
        "tethys",
        "styx",
        "calypso",
        "calypso2",
        "calypso3",
    ]
    calypso = " ".join(tables[2].split())
    assert "Triton tritonserver.service running; ready" in calypso
    assert "model docling_granite_python READY" in calypso
    assert "connector cloudflared-node.service running;" in calypso and "ready, " in calypso
    done = make("status", "JSON=1")
    report = json.loads(done.stdout)
    assert report["calypso"]["triton"]["state"]["ready"] is True


def test_drift_is_clean_after_a_converge(converged):
    done = drift()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "drift: none; a converge would change nothing"


# -- red, one thing at a time --------------------------------------------------------------------


def test_triton_stopped_on_calypso(converged):
    try:
        assert ssh("calypso", "sudo systemctl stop tritonserver.service").returncode == 0
        with gpu_forwards() as urls:
            done = smoke("--only", "gpu", *urls)
        assert done.returncode == 1, done.stdout
        assert any(line.startswith("FAIL gpu.boathou.se Triton — ") for line in failed(done.stdout))
        assert not any("gpu2.boathou.se" in line for line in failed(done.stdout))

        done = make("verify")
        assert done.returncode != 0
        assert "test_triton.py::test_unit_enabled_and_active[ssh://calypso]" in done.stdout
        assert "calypso2]" not in "".join(
            line for line in done.stdout.splitlines() if line.startswith("FAILED")
        )

        done = make("status")
        calypso = " ".join(done.stdout.split("\n\n")[2].split())
        assert "Triton tritonserver.service NOT running; nothing answers on port 8000" in calypso
    finally:
        heal("calypso")


def test_node_connector_stopped(converged):
    try:
        assert ssh("calypso", "sudo systemctl stop cloudflared-node.service").returncode == 0
        edge_sees("calypso")
        done = smoke("--only", "gpu", "--status-only")
        assert done.returncode == 1, done.stdout
        (line,) = failed(done.stdout)
        assert line.startswith("FAIL calypso's node tunnel (gpu.boathou.se) — ")
        assert "not serving: no live connection (is its cloudflared running?)" in line
    finally:
        heal("calypso")
        edge_sees("calypso")
    assert smoke("--only", "gpu", "--status-only").returncode == 0


def test_hand_edited_config_is_drift(converged):
    try:
        edit = f"echo '# edited by hand' | sudo tee -a {CONNECTOR_CONFIG} >/dev/null"
        assert ssh("calypso", edit).returncode == 0
        done = drift()
        assert done.returncode == 2, done.stdout + done.stderr
        named = [line.split() for line in done.stdout.splitlines()]
        assert ["[calypso]", f"{CONNECTOR_CONFIG}:", "changes"] in named, done.stdout
        changes = [line for line in done.stdout.splitlines() if line.startswith("CHANGE ")]
        assert changes and all(line.endswith("— calypso") for line in changes), changes
        assert done.stdout.splitlines()[-1].endswith("would change calypso")
    finally:
        heal("calypso")
    assert drift().returncode == 0


# -- k3s (needs the k3s role in the lab: deploys/k3s wired into deploys/site.py) -----------------


def node_check(kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return smoke("--only", "k3s", "--kubeconfig", str(kubeconfig))


def test_k3s_agent_stopped(converged, tmp_path):
    with k3s_tunnel(tmp_path) as kubeconfig:
        done = node_check(kubeconfig)
        assert done.returncode == 0, done.stdout + done.stderr
        for name in ("calypso", "styx", "tethys"):
            assert f"PASS k3s node {name} — Ready" in done.stdout
        try:
            assert ssh("styx", "systemctl stop k3s-agent.service").returncode == 0
            deadline = time.monotonic() + 120  # the node turns NotReady after its grace period
            while (done := node_check(kubeconfig)).returncode == 0:
                assert time.monotonic() < deadline, done.stdout
                time.sleep(3)
            (line,) = failed(done.stdout)
            assert line.startswith("FAIL k3s node styx — NOT Ready")
        finally:
            assert ssh("styx", "systemctl start k3s-agent.service").returncode == 0
            deadline = time.monotonic() + 120
            while node_check(kubeconfig).returncode != 0:
                assert time.monotonic() < deadline, "styx did not come back Ready"
                time.sleep(3)


def test_kubeconfig_and_tunnel_as_typed_with_the_lab_inventory(converged):
    """`make kubeconfig INVENTORY=inventories/lab.py && make tunnel INVENTORY=inventories/lab.py`
    as docs/lab.md types them, with no SSH setting of the lab's (no `-F .lab/ssh/config`): the
    inventory alone says tethys is root@10.77.0.11 with the lab's key; then the real kubectl
    lists tethys through https://127.0.0.1:16443, and `make tunnel-close` closes it."""
    kubeconfig = REPO / "cluster" / "kubeconfig.yaml"
    saved = kubeconfig.read_bytes() if kubeconfig.exists() else None
    env = {k: v for k, v in lab_env().items() if k != "SSH"}

    def typed(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )

    try:
        wrote = typed("make", "-s", "kubeconfig", f"INVENTORY={LAB}")
        assert wrote.returncode == 0, wrote.stdout + wrote.stderr
        assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
        opened = typed("make", "-s", "tunnel", f"INVENTORY={LAB}")
        assert opened.returncode == 0, opened.stdout + opened.stderr
        nodes = typed("kubectl", f"--kubeconfig={kubeconfig}", "get", "nodes", "-o", "name")
        assert nodes.returncode == 0, nodes.stderr
        assert "node/tethys" in nodes.stdout.split()
    finally:
        closed = typed("make", "-s", "tunnel-close", f"INVENTORY={LAB}")
        if saved is None:
            kubeconfig.unlink(missing_ok=True)
        else:
            kubeconfig.write_bytes(saved)
    assert closed.returncode == 0 and "closed" in closed.stdout, closed.stdout + closed.stderr
