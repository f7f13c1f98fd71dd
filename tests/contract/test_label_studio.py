"""Label Studio (PyPI) on a real PostgreSQL (Debian), started as the rendered Deployment says.

The manifests are rendered by deploys/cluster_apps from group_data and lab-style fake
secrets, exactly as the deploy renders them; the container's environment is resolved
from the rendered objects (secretKeyRef into the rendered Secret), never written here
again. Only what a pod gets from the cluster is redirected: the database's host and port
(the Service name `db` becomes the throwaway cluster), the data volume (a temp folder),
the port Label Studio listens on, and for the ML-backend job the in-cluster Label Studio
URL and the GPU's public URL (a local fake ML backend, which Label Studio is then allowed
to reach on loopback: ML_BLOCK_LOCAL_IP and SSRF_PROTECTION_ENABLED false, test-only).

Label Studio runs from its own virtualenv (.lab/cache/label-studio-<version>, made on
first use: it pins many packages), the version taken from the Deployment's image tag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from deploys import cluster_apps
from deploys.cluster_apps import label_studio as ls_app
from deploys.cluster_apps import ml_backend
from lab import fake_secrets
from oceanid.preflight import HostView, check
from oceanid.settings import from_data
from tests.contract import postgres
from tests.gpu.triton_smoke import free_ports, stop_server

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]
SDK_VERSION = "2.1.2"  # what label-studio 1.23.2 itself pins (its Requires-Dist)
READY_TIMEOUT_S = 300  # a first start applies every migration
GROUPS = {"tethys": {"k3s_servers"}, "calypso": {"k3s_agents", "gpu_hosts"}}


@dataclass
class Rendered:
    secrets: dict[str, str]
    objects: list[dict]  # every object of every file, Secrets included

    def find(self, kind: str, name: str) -> dict:
        (found,) = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        return found

    def environment(self, container: dict, namespace: str) -> dict[str, str]:
        """A container's environment as the kubelet would give it, from these objects."""
        env = {}
        for item in container["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            ref = item["valueFrom"]
            kind, ref = (
                ("Secret", ref["secretKeyRef"])
                if "secretKeyRef" in ref
                else ("ConfigMap", ref["configMapKeyRef"])
            )
            source = self.find(kind, ref["name"])
            assert source["metadata"]["namespace"] == namespace
            env[item["name"]] = (source.get("stringData") or source["data"])[ref["key"]]
        return env


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Rendered:
    namespace: dict[str, Any] = {}
    exec(compile((ROOT / "group_data/all.py").read_text(), "group_data/all.py", "exec"), namespace)
    data = {k: v for k, v in namespace.items() if not k.startswith("__")}
    data["secret_sources"] = ["file"]
    values = fake_secrets.generate()
    path = tmp_path_factory.mktemp("secrets") / "secrets.yaml"
    path.write_text(yaml.safe_dump(values))
    path.chmod(0o600)
    site = check(
        [HostView(n, frozenset(g), data) for n, g in GROUPS.items()],
        environ={"SECRETS_FILE": str(path)},
    )
    files = cluster_apps.manifest_files(site, from_data(data))
    found = [o for f in files for o in yaml.safe_load_all(f.content)]
    return Rendered(values, found)


def label_studio_version(rendered: Rendered) -> str:
    deployment = rendered.find("Deployment", ls_app.NAME)
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def venv(rendered) -> Path:
    """Label Studio's own virtualenv, made once and kept in .lab/cache."""
    version = label_studio_version(rendered)
    folder = ROOT / ".lab" / "cache" / f"label-studio-{version}"
    stamp = folder / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        subprocess.run(
            [folder / "bin/pip", "install", "-q", f"label-studio=={version}",
             f"label-studio-sdk=={SDK_VERSION}"],
            check=True,
        )  # fmt: skip
        stamp.touch()
    return folder


@pytest.fixture(scope="module")
def database(rendered) -> Iterator[postgres.Cluster]:
    """PostgreSQL with the role and database the rendered Secret names."""
    secret = rendered.find("Secret", ls_app.SECRET)["stringData"]
    cluster = postgres.start_cluster()
    try:
        cluster.create_database(
            secret["POSTGRE_NAME"], secret["POSTGRE_USER"], secret["POSTGRE_PASSWORD"]
        )
        yield cluster
    finally:
        postgres.remove(cluster)


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    env: dict[str, str]
    command: list[str]
    workdir: Path
    log: Path

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def start_label_studio(rendered, venv, database, workdir: Path, log: Path) -> Server:
    container = rendered.find("Deployment", ls_app.NAME)["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = rendered.environment(container, ls_app.NAMESPACE)
    assert env["POSTGRE_HOST"] == "db"  # the lab's URL names the database's Service
    (data_mount,) = container["volumeMounts"]
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == data_mount["mountPath"]
    env |= {
        "POSTGRE_HOST": "127.0.0.1",
        "POSTGRE_PORT": str(database.port),
        "LABEL_STUDIO_BASE_DATA_DIR": str(workdir / "data"),  # the volume
        # the fake ML backend is on loopback: the backend and the webhook Label Studio
        # makes for it (ml/models.py create_ml_webhook) are refused there by default
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
    }
    (port,) = free_ports(1)
    program, *args = container["args"]
    command = [
        str(venv / "bin" / program),
        *args,
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    base = {k: os.environ[k] for k in ("PATH", "LANG", "TZ") if k in os.environ}
    full_env = {**base, "HOME": str(workdir), **env}
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=full_env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Server(f"http://127.0.0.1:{port}", process, full_env, command, workdir, log)


def wait_health(server: Server, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            if requests.get(f"{server.url}/health", timeout=5).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(1)
    return False


@pytest.fixture(scope="module")
def server(rendered, venv, database, tmp_path_factory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("label-studio")
    started = time.monotonic()
    server = start_label_studio(rendered, venv, database, workdir, workdir / "label-studio.log")
    try:
        if not wait_health(server, READY_TIMEOUT_S):
            pytest.fail(f"Label Studio not healthy in {READY_TIMEOUT_S}s:\n{server.tail()}")
        print(f"label studio healthy after {time.monotonic() - started:.0f}s")
        yield server
    finally:
        stop_server(server.process, timeout=20)


def sqlite_files(*folders: Path) -> list[Path]:
    """SQLite databases under the server's folders (its cwd, HOME and data volume)."""
    return [p for folder in folders for p in folder.rglob("*.sqlite*")]


def test_health_and_the_login_redirect(server, venv, rendered):
    answer = requests.get(f"{server.url}/health", timeout=10)
    assert (answer.status_code, answer.json()) == (200, {"status": "UP"})
    root = requests.get(f"{server.url}/", allow_redirects=False, timeout=10)
    assert root.status_code == 302
    assert root.headers["Location"].endswith("/user/login/")
    version = subprocess.run(
        [venv / "bin/python", "-c", "import label_studio; print(label_studio.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert version == label_studio_version(rendered)
    log = server.log.read_text(errors="replace")
    for outside in ("pypi.org", "sentry.io"):  # no version check, no error reports
        assert outside not in log


def test_tables_are_in_postgresql_and_no_sqlite_file(server, database, rendered):
    secret = rendered.find("Secret", ls_app.SECRET)["stringData"]
    tables = database.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", secret["POSTGRE_NAME"]
    ).split()
    assert {"project", "authtoken_token", "htx_user", "django_migrations"} <= set(tables)
    assert sqlite_files(server.workdir) == []


def test_the_admin_token_is_accepted(server, rendered):
    token = rendered.secrets["labelStudioApiToken"]
    whoami = f"{server.url}/api/current-user/whoami"
    answer = requests.get(whoami, headers={"Authorization": f"Token {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["email"] == rendered.secrets["labelStudioAdminEmail"]
    wrong = requests.get(whoami, headers={"Authorization": f"Token {token[::-1]}"}, timeout=10)
    assert wrong.status_code == 401


def login(server: Server, email: str, password: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{server.url}/user/login/", timeout=10)
    session.post(
        f"{server.url}/user/login/",
        data={
            "email": email,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{server.url}/user/login/"},
        allow_redirects=False,
        timeout=10,
    )
    return session


def test_the_admin_logs_in_with_the_esc_password(server, rendered):
    email = rendered.secrets["labelStudioAdminEmail"]
    whoami = f"{server.url}/api/current-user/whoami"
    session = login(server, email, rendered.secrets["labelStudioAdminPassword"])
    answer = session.get(whoami, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["email"] == email
    refused = login(server, email, rendered.secrets["labelStudioAdminPassword"] + "x")
    assert refused.get(whoami, timeout=10).status_code == 401


class FakeMlBackend(BaseHTTPRequestHandler):
    """Just enough of Label Studio's ML-backend API for it to accept a backend."""

    def _json(self, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._json({"status": "UP", "model_class": "Fake"})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._json({"model_version": "fake-1"})

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_backend() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeMlBackend)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def backends(server: Server, headers: dict, project: int) -> list[tuple[int, str]]:
    answer = requests.get(
        f"{server.url}/api/ml", params={"project": project}, headers=headers, timeout=30
    )
    answer.raise_for_status()
    return sorted((b["id"], b["url"]) for b in answer.json())


def test_the_ml_backend_job_adds_the_backend_once_and_keeps_others(
    server, rendered, venv, fake_backend, tmp_path
):
    headers = {"Authorization": f"Token {rendered.secrets['labelStudioApiToken']}"}
    projects = []
    for title in ("first", "second"):
        answer = requests.post(
            f"{server.url}/api/projects", json={"title": title}, headers=headers, timeout=30
        )
        assert answer.status_code == 201, answer.text[:300]
        projects.append(answer.json()["id"])
    other = f"{fake_backend}/another-backend"
    answer = requests.post(
        f"{server.url}/api/ml",
        json={"project": projects[1], "url": other, "title": "someone else's"},
        headers=headers,
        timeout=60,
    )
    assert answer.status_code == 201, answer.text[:300]

    job = rendered.find("CronJob", ml_backend.NAME)["spec"]["jobTemplate"]["spec"]["template"]
    (container,) = job["spec"]["containers"]
    env = rendered.environment(container, ml_backend.NAMESPACE)
    assert env["ML_BACKEND_URL"] == "https://gpu.boathou.se"
    assert env["LABEL_STUDIO_URL"] == ls_app.SERVICE_URL
    env |= {"LABEL_STUDIO_URL": server.url, "ML_BACKEND_URL": fake_backend}
    config_map = rendered.find("ConfigMap", ml_backend.NAME)
    script = tmp_path / ml_backend.SCRIPT.name
    (name,) = config_map["data"]
    script.write_text(config_map["data"][name])
    assert container["command"] == ["python3", f"{ml_backend.SCRIPT_DIR}/{name}"]
    command = [str(venv / "bin/python"), str(script)]
    base = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}

    def run_job() -> subprocess.CompletedProcess:
        return subprocess.run(
            command, env={**base, **env}, capture_output=True, text=True, timeout=300
        )

    first = run_job()
    assert first.returncode == 0, first.stderr[-2000:]
    assert "2 added, 0 already had it, 0 failed" in first.stdout
    after_first = {p: backends(server, headers, p) for p in projects}
    assert [url for _, url in after_first[projects[0]]] == [fake_backend]
    assert sorted(url for _, url in after_first[projects[1]]) == sorted([other, fake_backend])

    second = run_job()
    assert second.returncode == 0, second.stderr[-2000:]
    assert "0 added, 2 already had it, 0 failed" in second.stdout
    assert {p: backends(server, headers, p) for p in projects} == after_first


def test_a_stopped_database_fails_readiness_and_never_falls_back_to_sqlite(
    server, rendered, venv, database, tmp_path
):
    """Last in this module: it stops the database under the running server."""
    database.stop()
    answer = requests.get(f"{server.url}/health", timeout=30)
    assert answer.status_code != 200
    # A fresh start without its database must fail, not come up on SQLite.
    workdir = tmp_path / "cold"
    workdir.mkdir()
    cold = start_label_studio(rendered, venv, database, workdir, workdir / "label-studio.log")
    try:
        assert not wait_health(cold, 120), "Label Studio came up without its database"
        assert cold.process.poll() not in (None, 0), cold.tail()
    finally:
        stop_server(cold.process, timeout=20)
    assert sqlite_files(server.workdir, workdir) == []
