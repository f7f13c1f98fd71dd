"""The k3s cluster in the lab (issue 10, item 12), with provisioning and the HAProxy endpoint on
(the lab's group data): tethys serves, styx and calypso join through the endpoint and are Ready
with their labels and taints; binaries are pinned, upgraded with one restart each, and rolled
back when the new one is unhealthy; the API is reachable from this machine through
`make kubeconfig` and `make tunnel`. k3s here is the stand-in (tests/standins/k3s) with the real
kubectl behind `k3s kubectl`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from lab.converge import pyinfra
from lab.mirror import RELEASES
from lab.topology import ARTIFACTS_FILE, MIRROR_DIR
from tests.lab import k3s_tunnel, ssh

pytestmark = pytest.mark.lab

UNITS = {"tethys": "k3s", "styx": "k3s-agent", "calypso": "k3s-agent"}
BINARY = "/usr/local/bin/k3s"


def nodes() -> dict[str, dict]:
    done = ssh("tethys", "sudo k3s kubectl get nodes -o json")
    assert done.returncode == 0, done.stderr
    return {item["metadata"]["name"]: item for item in json.loads(done.stdout)["items"]}


def ready(node: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


def wait_ready(names, timeout: float = 90) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = nodes()
        if all(name in found and ready(found[name]) for name in names):
            return found
        assert time.monotonic() < deadline, {n: ready(v) for n, v in found.items()}
        time.sleep(2)


def invocation(name: str) -> str:
    unit = UNITS[name]
    return ssh(name, f"systemctl show -p InvocationID --value {unit}").stdout.strip()


def test_cluster_is_up_with_labels_taints_and_the_endpoint(converged):
    for name, unit in UNITS.items():
        assert ssh(name, f"systemctl is-active {unit}").stdout.strip() == "active", name
    assert ssh("tethys", "systemctl is-active haproxy").stdout.strip() == "active"
    found = wait_ready(UNITS)
    calypso = found["calypso"]
    assert calypso["metadata"]["labels"].get("oceanid.cluster/tunnel-enabled") == "true"
    taints = {(t["key"], t.get("value"), t["effect"]) for t in calypso["spec"].get("taints", [])}
    assert ("workload-type", "gpu-compute", "NoSchedule") in taints
    for name in ("styx", "calypso"):  # agents join through HAProxy, not the server's 6443
        config = yaml.safe_load(ssh(name, "sudo cat /etc/rancher/k3s/config.yaml").stdout)
        assert config["server"] == "https://10.77.0.11:7443", config
        assert "token" not in config and config["token-file"]
    server = yaml.safe_load(ssh("tethys", "sudo cat /etc/rancher/k3s/config.yaml").stdout)
    assert {"127.0.0.1", "10.77.0.11"} <= set(server["tls-san"])
    assert server["write-kubeconfig-mode"] == "0600"
    mode = ssh("tethys", "sudo stat -c '%a %U' /etc/rancher/k3s/token").stdout.strip()
    assert mode == "600 root"


def test_kubeconfig_and_tunnel_reach_the_api_from_this_machine(converged, tmp_path):
    with k3s_tunnel(tmp_path) as kubeconfig:
        assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
        api = kube_config.new_client_from_config(str(kubeconfig), context="oceanid")
        names = {n.metadata.name for n in kube_client.CoreV1Api(api).list_node().items}
        assert names == set(UNITS)


def release(version: str, body: bytes) -> dict:
    """A k3s release in the lab's mirror, as upstream lays it out; its pin for `--data k3s=`."""
    folder = MIRROR_DIR / "k3s-io/k3s/releases/download" / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "k3s").write_bytes(body)
    (folder / "k3s").chmod(0o755)
    pins = json.loads(ARTIFACTS_FILE.read_text())["k3s"]
    return {**pins, "version": version, "sha256": {"amd64": hashlib.sha256(body).hexdigest()}}


def standin(version: str) -> bytes:
    source = Path(RELEASES["k3s"]["files"]["k3s"]).read_text()
    return source.replace('VERSION = "v1.33.4+k3s1"', f'VERSION = "{version}"', 1).encode()


def test_tampered_binary_is_refused_and_the_installed_one_kept(converged):
    served = next(MIRROR_DIR.rglob("v1.33.4+k3s1/k3s"))
    original = served.read_bytes()
    ssh("styx", f"echo '# local' | sudo tee -a {BINARY} >/dev/null")
    drifted = ssh("styx", f"sha256sum {BINARY}").stdout
    try:
        served.write_bytes(original + b"# tampered\n")
        run = pyinfra("deploys/site.py", "--limit", "styx", json_output=False)
    finally:
        served.write_bytes(original)
    assert run.returncode != 0
    assert "SHA-256 mismatch" in run.output and "installed binary was left in place" in run.output
    assert ssh("styx", f"sha256sum {BINARY}").stdout == drifted
    fixed = pyinfra("deploys/site.py", "--limit", "styx")
    assert fixed.returncode == 0, fixed.output[-4000:]
    assert ssh("styx", f"sha256sum {BINARY}").stdout != drifted
    wait_ready(["styx"])


def test_version_bump_restarts_each_service_once_and_back(converged):
    bumped = release("v1.33.5+k3s1", standin("v1.33.5+k3s1"))
    before = {name: invocation(name) for name in UNITS}
    try:
        run = pyinfra("deploys/site.py", "--data", f"k3s={json.dumps(bumped)}")
        assert run.returncode == 0, run.output[-6000:]
        for name in UNITS:
            assert invocation(name) != before[name], f"{UNITS[name]} on {name} did not restart"
            assert "v1.33.5+k3s1" in ssh(name, f"{BINARY} --version").stdout
            assert ssh(name, f"test -x {BINARY}.previous").returncode == 0
        once = {name: invocation(name) for name in UNITS}
        again = pyinfra("deploys/site.py", "--data", f"k3s={json.dumps(bumped)}")
        assert again.returncode == 0 and again.changed == {}, again.changed
        assert {name: invocation(name) for name in UNITS} == once, "a second run restarted"
        found = wait_ready(UNITS)
        assert found["styx"]["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.5+k3s1"
    finally:
        back = pyinfra("deploys/site.py")
        shutil.rmtree(MIRROR_DIR / "k3s-io/k3s/releases/download/v1.33.5+k3s1")
    assert back.returncode == 0, back.output[-6000:]
    assert "v1.33.4+k3s1" in ssh("styx", f"{BINARY} --version").stdout
    wait_ready(UNITS)


def lab_hosts() -> dict:
    """`hosts` as the lab's group data (inventories/group_data/all.py) gives it."""
    from lab.topology import REPO

    source = REPO / "inventories" / "group_data" / "all.py"
    namespace: dict = {"__file__": str(source), "__name__": "lab_group_data"}
    exec(compile(source.read_text(), str(source), "exec"), namespace)  # noqa: S102 - our file
    return namespace["hosts"]


def test_a_label_and_taint_edit_is_applied_without_a_k3s_restart(converged):
    """The API step sets labels and taints on the running node; their file beside config.yaml
    (config.yaml.d) is written for k3s's next start but restarts nothing (issue 20 item 6)."""
    from deploys.k3s.config import LABELS_FILE

    label, taint = "oceanid.cluster/lab-edit", "oceanid.cluster/lab-edit=yes:PreferNoSchedule"
    hosts = lab_hosts()
    hosts["calypso"]["k3s"]["labels"][label] = "yes"
    hosts["calypso"]["k3s"]["taints"].append(taint)
    before = {name: invocation(name) for name in UNITS}
    try:
        run = pyinfra("deploys/site.py", "--data", f"hosts={json.dumps(hosts)}")
        assert run.returncode == 0, run.output[-6000:]
        calypso = nodes()["calypso"]
        assert calypso["metadata"]["labels"].get(label) == "yes"
        assert {"key": label, "value": "yes", "effect": "PreferNoSchedule"} in calypso["spec"][
            "taints"
        ]
        drop_in = ssh("calypso", f"sudo cat {LABELS_FILE}").stdout
        assert f"{label}=yes" in drop_in and taint in drop_in
        assert {name: invocation(name) for name in UNITS} == before, "a label edit restarted k3s"
    finally:
        back = pyinfra("deploys/site.py")
    assert back.returncode == 0, back.output[-6000:]
    calypso = nodes()["calypso"]
    assert label not in calypso["metadata"]["labels"]
    assert all(t["key"] != label for t in calypso["spec"].get("taints", []))
    assert {name: invocation(name) for name in UNITS} == before, "taking it back restarted k3s"
