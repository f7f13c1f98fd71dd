"""Label Studio (PyPI) on a real PostgreSQL (Debian), started as the rendered Deployment says.

The manifests are rendered by deploys/cluster_apps from group_data and lab-style fake
secrets, exactly as the deploy renders them; the container's environment is resolved
from the rendered objects (secretKeyRef into the rendered Secret), never written here
again. Only what a pod gets from the cluster is redirected: the database's host and port
(the Service name `db` becomes the throwaway cluster), the data volume (a temp folder),
the port Label Studio listens on, and for the ML-backend job the in-cluster Label Studio
URL and the adapter's public URL (the real adapter, deploys/gpu_host/ml_backend, in front of
the real CPU Triton, on loopback, which Label Studio is then allowed to reach:
ML_BLOCK_LOCAL_IP and SSRF_PROTECTION_ENABLED false, test-only).

Label Studio runs from its own virtualenv (.lab/cache/label-studio-<version>, made on
first use: it pins many packages), the version taken from the Deployment's image tag.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from deploys import cluster_apps
from deploys.cluster_apps import label_studio as ls_app
from deploys.cluster_apps import ml_backend
from lab import fake_secrets
from oceanid.model import HostView
from oceanid.preflight import check
from oceanid.settings import from_data
from tests.contract import postgres
from tests.contract.ml_adapter import FileServer, start_adapter
from tests.gpu.triton_smoke import free_ports, minimal_pdf, stop_server

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
    return render(tmp_path_factory.mktemp("secrets"))


def render(folder: Path) -> Rendered:
    """Every object of every cluster-app file, as the deploy renders them for group_data and
    the lab's fake secrets (written to `folder`); the backup drill renders with it too."""
    namespace: dict[str, Any] = {}
    exec(compile((ROOT / "group_data/all.py").read_text(), "group_data/all.py", "exec"), namespace)
    data = {k: v for k, v in namespace.items() if not k.startswith("__")}
    data["secret_sources"] = ["file"]
    values = fake_secrets.generate()
    path = folder / "secrets.yaml"
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
    return label_studio_venv(rendered)


def label_studio_venv(rendered: Rendered) -> Path:
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


DOCUMENT_CONFIG = """<View>
  <Pdf name="document" value="$pdf"/>
  <TextArea name="transcript" toName="document" editable="true"/>
</View>"""
SENTENCE = "Oceanid reads this sentence (contract 7)."


def backends(server: Server, headers: dict, project: int) -> list[tuple[int, str]]:
    answer = requests.get(
        f"{server.url}/api/ml", params={"project": project}, headers=headers, timeout=60
    )
    answer.raise_for_status()
    return sorted((b["id"], b["url"]) for b in answer.json())


@dataclass
class Job:
    """The connector's CronJob as rendered, runnable here against this Label Studio."""

    command: list[str]
    env: dict[str, str]

    def run(self, **overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command, env={**self.env, **overrides}, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip


@pytest.fixture
def job(server, rendered, venv, tmp_path) -> Job:
    """The job's script and environment from the rendered objects; only the in-cluster
    Label Studio URL is this server's (ML_BACKEND_URL is each test's adapter)."""
    template = rendered.find("CronJob", ml_backend.NAME)["spec"]["jobTemplate"]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    env = rendered.environment(container, ml_backend.NAMESPACE)
    assert env["ML_BACKEND_URL"] == "https://ml.boathou.se"  # calypso's adapter, not Triton
    assert env["LABEL_STUDIO_URL"] == ls_app.SERVICE_URL
    assert (env["ML_BACKEND_USER"], env["ML_BACKEND_PASSWORD"]) == (
        rendered.secrets["mlBackendUser"], rendered.secrets["mlBackendPassword"],
    )  # fmt: skip
    config_map = rendered.find("ConfigMap", ml_backend.NAME)
    script = tmp_path / ml_backend.SCRIPT.name
    (name,) = config_map["data"]
    script.write_text(config_map["data"][name])
    assert container["command"] == ["python3", f"{ml_backend.SCRIPT_DIR}/{name}"]
    base = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    return Job(
        [str(venv / "bin/python"), str(script)], {**base, **env, "LABEL_STUDIO_URL": server.url}
    )


def create_project(server: Server, headers: dict, title: str) -> int:
    answer = requests.post(
        f"{server.url}/api/projects",
        json={"title": title, "label_config": DOCUMENT_CONFIG},
        headers=headers,
        timeout=30,
    )
    assert answer.status_code == 201, answer.text[:300]
    return answer.json()["id"]


def delete_projects(server: Server, headers: dict, projects: list[int]) -> None:
    """Each test leaves no project behind: the job it or the next test runs sees them all."""
    for project in projects:
        requests.delete(f"{server.url}/api/projects/{project}/", headers=headers, timeout=60)


def test_the_ml_backend_job_registers_the_adapter_with_basic_auth_and_keeps_others(
    server, rendered, job, triton, tmp_path
):
    headers = {"Authorization": f"Token {rendered.secrets['labelStudioApiToken']}"}
    user, password = rendered.secrets["mlBackendUser"], rendered.secrets["mlBackendPassword"]
    projects: list[int] = []
    with start_adapter(tmp_path / "a", triton.url, user=user, password=password) as adapter:
        port = adapter.url.rsplit(":", 1)[1]
        try:
            projects += [create_project(server, headers, t) for t in ("first", "second")]
            # someone else's backend: the same adapter under another URL and title
            other = f"http://localhost:{port}"
            answer = requests.post(
                f"{server.url}/api/ml",
                json={"project": projects[1], "url": other, "title": "someone else's",
                      "auth_method": "BASIC_AUTH", "basic_auth_user": user,
                      "basic_auth_pass": password},
                headers=headers,
                timeout=60,
            )  # fmt: skip
            assert answer.status_code == 201, answer.text[:300]

            first = job.run(ML_BACKEND_URL=adapter.url)
            assert first.returncode == 0, first.stderr[-2000:]
            assert "2 added, 0 updated, 0 already had it, 0 failed" in first.stdout
            after = {p: backends(server, headers, p) for p in projects}
            assert [url for _, url in after[projects[0]]] == [adapter.url]
            assert sorted(url for _, url in after[projects[1]]) == sorted([other, adapter.url])
            for project in projects:  # with basic auth, connected, the password write-only
                for found in requests.get(f"{server.url}/api/ml", params={"project": project},
                                          headers=headers, timeout=60).json():  # fmt: skip
                    assert (found["auth_method"], found["basic_auth_user"]) == ("BASIC_AUTH", user)
                    assert (found["state"], found["basic_auth_pass_is_set"]) == ("CO", True)
                    assert "basic_auth_pass" not in found

            second = job.run(ML_BACKEND_URL=adapter.url)
            assert second.returncode == 0, second.stderr[-2000:]
            assert "0 added, 0 updated, 2 already had it, 0 failed" in second.stdout
            assert {p: backends(server, headers, p) for p in projects} == after

            # a registration at an old URL is moved, not duplicated
            ((ours, _),) = after[projects[0]]
            moved = requests.patch(
                f"{server.url}/api/ml/{ours}",
                json={"project": projects[0], "url": other, "auth_method": "BASIC_AUTH",
                      "basic_auth_user": user, "basic_auth_pass": password},
                headers=headers, timeout=60,
            )  # fmt: skip
            assert moved.status_code == 200, moved.text[:300]
            third = job.run(ML_BACKEND_URL=adapter.url)
            assert third.returncode == 0, third.stderr[-2000:]
            assert "0 added, 1 updated, 1 already had it, 0 failed" in third.stdout
            assert backends(server, headers, projects[0]) == after[projects[0]]
        except BaseException:
            print(adapter.tail())
            raise
    # The password changes: the adapter restarts with the new one on the same port.
    new_password = password + "-rotated"
    with start_adapter(tmp_path / "b", triton.url, user=user, password=new_password,
                       port=int(port)) as adapter:  # fmt: skip
        try:
            stale = job.run(ML_BACKEND_URL=adapter.url)  # the Secret not yet updated
            assert stale.returncode == 1, stale.stdout
            for project, title in zip(projects, ("first", "second"), strict=True):
                assert f"project {project} ({title!r}): Label Studio refused to update" in (
                    stale.stderr
                )
            assert "0 added, 0 updated, 0 already had it, 2 failed" in stale.stdout
            fixed = job.run(ML_BACKEND_URL=adapter.url, ML_BACKEND_PASSWORD=new_password)
            assert fixed.returncode == 0, fixed.stderr[-2000:]
            assert "0 added, 2 updated, 0 already had it, 0 failed" in fixed.stdout
            again = job.run(ML_BACKEND_URL=adapter.url, ML_BACKEND_PASSWORD=new_password)
            assert "0 added, 0 updated, 2 already had it, 0 failed" in again.stdout
        finally:
            delete_projects(server, headers, projects)


def test_a_project_without_a_textarea_is_refused_by_name(server, rendered, job, triton, tmp_path):
    headers = {"Authorization": f"Token {rendered.secrets['labelStudioApiToken']}"}
    user, password = rendered.secrets["mlBackendUser"], rendered.secrets["mlBackendPassword"]
    answer = requests.post(
        f"{server.url}/api/projects",
        json={"title": "choices only", "label_config": (
            '<View><Pdf name="document" value="$pdf"/><Choices name="kind" toName="document">'
            '<Choice value="report"/></Choices></View>')},
        headers=headers, timeout=30,
    )  # fmt: skip
    assert answer.status_code == 201, answer.text[:300]
    project = answer.json()["id"]
    try:
        with start_adapter(tmp_path, triton.url, user=user, password=password) as adapter:
            ran = job.run(ML_BACKEND_URL=adapter.url)
        assert ran.returncode == 1, ran.stdout
        (line,) = [line for line in ran.stderr.splitlines() if line.startswith("project ")]
        assert line.startswith(f"project {project} ('choices only'): Label Studio refused to add")
        assert "the label config has no <TextArea>" in line  # the adapter's words reach it
        assert backends(server, headers, project) == []
    finally:
        delete_projects(server, headers, [project])


def test_a_pdf_sentence_reaches_the_task_prediction_through_label_studio(
    server, rendered, job, triton, tmp_path
):
    """Label Studio -> the adapter -> Triton -> a prediction Label Studio stores and serves."""
    headers = {"Authorization": f"Token {rendered.secrets['labelStudioApiToken']}"}
    user, password = rendered.secrets["mlBackendUser"], rendered.secrets["mlBackendPassword"]
    pdf = minimal_pdf(SENTENCE)
    with (
        FileServer({"served.pdf": minimal_pdf(SENTENCE + " Served.")}) as files,
        start_adapter(
            tmp_path, triton.url, user=user, password=password, label_studio_url=server.url
        ) as adapter,  # fmt: skip
    ):
        project = create_project(server, headers, "documents")
        try:
            uploaded = requests.post(
                f"{server.url}/api/projects/{project}/import",
                files={"file": ("contract.pdf", pdf, "application/pdf")},
                headers=headers, timeout=60,
            )  # fmt: skip
            assert uploaded.status_code == 201, uploaded.text[:300]
            imported = requests.post(
                f"{server.url}/api/projects/{project}/import",
                json=[{"pdf": f"{files.url}/served.pdf"}, {"pdf": f"{files.url}/missing.pdf"}],
                headers=headers, timeout=60,
            )  # fmt: skip
            assert imported.status_code == 201, imported.text[:300]
            tasks = requests.get(
                f"{server.url}/api/tasks", params={"project": project}, headers=headers,
                timeout=30,
            ).json()["tasks"]  # fmt: skip
            by_url = {task["data"]["pdf"]: task["id"] for task in tasks}
            (upload_path,) = [url for url in by_url if url.startswith("/data/upload/")]

            ran = job.run(ML_BACKEND_URL=adapter.url)
            assert ran.returncode == 0, ran.stderr[-2000:]
            assert f"project {project} ('documents'): added ML backend {adapter.url}" in ran.stdout

            refused = requests.post(f"{adapter.url}/predict", json={"tasks": []}, timeout=10)
            assert refused.status_code == 401  # without credentials

            action = requests.post(
                f"{server.url}/api/dm/actions",
                params={"id": "retrieve_tasks_predictions", "project": project},
                json={"selectedItems": {"all": True, "excluded": []}},
                headers=headers, timeout=120,
            )  # fmt: skip
            assert action.status_code == 200, action.text[:300]

            def predictions(task: int) -> list[dict]:
                answer = requests.get(f"{server.url}/api/predictions/", params={"task": task},
                                      headers=headers, timeout=30)  # fmt: skip
                answer.raise_for_status()
                return answer.json()

            (stored,) = predictions(by_url[upload_path])
            assert stored["model_version"] == "docling_granite_python@1"
            (result,) = stored["result"]
            assert (result["from_name"], result["to_name"], result["type"]) == (
                "transcript", "document", "textarea",
            )  # fmt: skip
            assert SENTENCE in result["value"]["text"][0]
            (served,) = predictions(by_url[f"{files.url}/served.pdf"])
            assert SENTENCE + " Served." in served["result"][0]["value"]["text"][0]
            assert predictions(by_url[f"{files.url}/missing.pdf"]) == []
            assert "task {}: no prediction".format(by_url[f"{files.url}/missing.pdf"]) in (
                adapter.tail()
            )
            # the file server was asked for its own files only, and no token went there
            assert sorted(files.requests) == ["/missing.pdf", "/served.pdf"]
            assert files.authorizations == [None, None]
        finally:
            delete_projects(server, headers, [project])


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
