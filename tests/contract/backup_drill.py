"""The restore drill: Label Studio's data backed up, lost, and restored, by the real programs.

Label Studio 1.23.2 (PyPI, its own virtualenv) on a real PostgreSQL (Debian's), and moto's
S3 server on loopback as the object store. The backup and restore pods are not re-told
here: each container's command and environment are read from the rendered CronJob and
restore Job (deploys/cluster_apps/backup.py) and run as the kubelet would run them, with
only what the cluster provides redirected: the pod's mounts (scratch folder, the data
volume, the script's ConfigMap) become local folders, the database's Service the local
cluster, the object store's URL moto's. backup_job.py runs in Label Studio's own Python,
whose boto3 is the one the image carries; pg_dump and pg_restore are PostgreSQL's.

The drill: projects, tasks made from uploaded files, and annotations, through Label
Studio's API; a backup; the database dropped and the media deleted; the restore timed;
Label Studio started again on what was restored, and asked for everything it held, the
files byte for byte; then a corrupted object, which the restore must refuse.

    python -m tests.contract.backup_drill     # `make restore-drill`: prints the figures
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import requests
from moto.server import ThreadedMotoServer

from deploys.cluster_apps import backup
from deploys.cluster_apps import label_studio as ls_app
from oceanid.settings import from_data
from tests.contract import postgres
from tests.contract.test_label_studio import (
    READY_TIMEOUT_S,
    ROOT,
    Rendered,
    label_studio_venv,
    render,
    start_label_studio,
    wait_health,
)
from tests.gpu.triton_smoke import free_ports, stop_server

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="kind" toName="image"><Choice value="fish"/><Choice value="boat"/></Choices>
</View>"""
#: Each uploaded file's size: 12 files of 1 MiB, enough that the restore's time is the data's.
FILE_BYTES = 1024 * 1024
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


class DrillError(AssertionError):
    """The drill found a difference, or a step failed."""


@dataclass
class Snapshot:
    """What Label Studio shows: projects, tasks, annotations, and each file's SHA-256."""

    projects: dict[int, dict] = field(default_factory=dict)
    tasks: dict[int, dict] = field(default_factory=dict)
    annotations: dict[int, dict] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def counts(self) -> str:
        return (
            f"{len(self.projects)} projects, {len(self.tasks)} tasks, "
            f"{len(self.annotations)} annotations, {len(self.files)} files"
        )


@dataclass
class Result:
    backed_up: Snapshot
    restored: Snapshot
    backup_name: str
    backup_bytes: int
    restore_seconds: float
    restart_seconds: float
    corrupted_refused: str

    def lines(self) -> list[str]:
        return [
            f"backed up: {self.backed_up.counts()} as {self.backup_name} "
            f"({self.backup_bytes} bytes in the store)",
            f"restored: {self.restored.counts()}",
            f"restore took {self.restore_seconds:.1f}s for {self.backup_bytes} bytes; "
            f"Label Studio healthy again {self.restart_seconds:.1f}s later",
            f"corrupted backup refused: {self.corrupted_refused}",
        ]


def settings_of(rendered_folder: Path):
    """The settings the drill's objects were rendered from (group_data, file secrets)."""
    namespace: dict[str, Any] = {}
    exec(compile((ROOT / "group_data/all.py").read_text(), "group_data/all.py", "exec"), namespace)
    data = {k: v for k, v in namespace.items() if not k.startswith("__")}
    data["secret_sources"] = ["file"]
    data["secrets_file"] = str(rendered_folder / "secrets.yaml")
    return from_data(data)


class Pods:
    """Runs a rendered pod's containers here, as the kubelet would: command, environment
    from the rendered Secrets, and the pod's mounts as local folders."""

    def __init__(self, rendered: Rendered, mounts: dict[str, Path], overrides: dict[str, str],
                 programs: dict[str, str]) -> None:  # fmt: skip
        self.rendered, self.mounts, self.overrides, self.programs = (
            rendered, mounts, overrides, programs,
        )  # fmt: skip

    def local(self, value: str) -> str:
        for inside, outside in self.mounts.items():
            if value == inside or value.startswith(inside + "/"):
                return str(outside) + value[len(inside) :]
            value = value.replace(f"={inside}/", f"={outside}/")
        return value

    def run(self, container: dict) -> subprocess.CompletedProcess:
        env = self.rendered.environment(container, backup.NAMESPACE)
        env = {k: self.local(v) for k, v in env.items()} | self.overrides
        program, *args = container["command"]
        command = [self.programs[program], *(self.local(a) for a in args)]
        base = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
        return subprocess.run(
            command, env={**base, **env}, capture_output=True, text=True, timeout=900
        )

    def run_pod(self, pod: dict) -> list[subprocess.CompletedProcess]:
        """Init containers, then the containers; stops at the first that fails, as a pod
        whose init container fails never starts the others."""
        done = []
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            done.append(self.run(container))
            if done[-1].returncode != 0:
                break
        return done


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.headers = url, {"Authorization": f"Token {token}"}

    def call(self, method: str, path: str, **kwargs) -> Any:
        answer = requests.request(
            method, f"{self.url}{path}", headers=self.headers, timeout=120, **kwargs
        )
        if answer.status_code >= 400:
            raise DrillError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json() if answer.content else None

    def snapshot(self) -> Snapshot:
        shot = Snapshot()
        projects = self.call("GET", "/api/projects", params={"page_size": 1000})
        for project in projects["results"] if isinstance(projects, dict) else projects:
            shot.projects[project["id"]] = {
                k: project[k] for k in ("title", "label_config", "created_at")
            }
            found = self.call(
                "GET", "/api/tasks", params={"project": project["id"], "page_size": 1000}
            )
            for task in found["tasks"]:
                shot.tasks[task["id"]] = {"project": project["id"], "data": task["data"]}
                for annotation in self.call("GET", f"/api/tasks/{task['id']}/annotations"):
                    shot.annotations[annotation["id"]] = {
                        "task": task["id"],
                        "result": annotation["result"],
                        "created_at": annotation["created_at"],
                    }
                url = task["data"].get("image")
                if url:
                    body = requests.get(f"{self.url}{url}", headers=self.headers, timeout=60)
                    if body.status_code != 200:
                        raise DrillError(f"{url}: {body.status_code} from Label Studio")
                    shot.files[url] = hashlib.sha256(body.content).hexdigest()
        return shot


def make_data(api: Api, projects: int = 3, files: int = 4) -> None:
    """Projects whose tasks are uploaded files (Label Studio keeps them on its data volume),
    each task annotated."""
    for number in range(projects):
        project = api.call(
            "POST", "/api/projects",
            json={"title": f"drill {number}", "label_config": LABEL_CONFIG},
        )  # fmt: skip
        uploads = [
            (f"file{i}", (f"frame-{number}-{i}.png", PNG + os.urandom(FILE_BYTES + i), "image/png"))
            for i in range(files)
        ]
        api.call("POST", f"/api/projects/{project['id']}/import", files=uploads)
        found = api.call("GET", "/api/tasks", params={"project": project["id"], "page_size": 100})
        for i, task in enumerate(found["tasks"]):
            choice = "fish" if i % 2 else "boat"
            api.call(
                "POST", f"/api/tasks/{task['id']}/annotations",
                json={"result": [{"from_name": "kind", "to_name": "image", "type": "choices",
                                  "value": {"choices": [choice]}}]},
            )  # fmt: skip


def _check(done: list[subprocess.CompletedProcess], what: str) -> str:
    out = "".join(d.stdout for d in done)
    if not done or done[-1].returncode != 0:
        errors = "\n".join(d.stderr[-2000:] for d in done)
        raise DrillError(f"{what} failed:\n{errors}")
    return out


def drill(work: Path) -> Result:
    rendered = render(work)
    settings = settings_of(work)
    venv = label_studio_venv(rendered)
    secret = rendered.find("Secret", ls_app.SECRET)["stringData"]
    store = rendered.find("Secret", backup.SECRET)["stringData"]
    database = postgres.start_cluster()
    (port,) = free_ports(1)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    server = None
    try:
        database.create_database(
            secret["POSTGRE_NAME"], secret["POSTGRE_USER"], secret["POSTGRE_PASSWORD"]
        )
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=store["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=store["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip
        s3.create_bucket(Bucket=store["S3_BUCKET"])
        folder = work / "label-studio"
        folder.mkdir()
        data_dir = folder / "data"
        script_dir, scratch = work / "script", work / "scratch"
        script_dir.mkdir()
        config_map = rendered.find("ConfigMap", backup.NAME)["data"]
        for name, text in config_map.items():
            (script_dir / name).write_text(text)
        pods = Pods(
            rendered,
            mounts={backup.WORK_DIR: scratch, ls_app.DATA_DIR: data_dir,
                    backup.SCRIPT_DIR: script_dir},
            overrides={"PGHOST": "127.0.0.1", "PGPORT": str(database.port),
                       "S3_ENDPOINT": endpoint},
            programs={"python3": str(venv / "bin/python"),
                      "pg_dump": str(database.bindir / "pg_dump"),
                      "pg_restore": str(database.bindir / "pg_restore")},
        )  # fmt: skip

        def start() -> Any:
            started = start_label_studio(rendered, venv, database, folder, folder / "ls.log")
            if not wait_health(started, READY_TIMEOUT_S):
                raise DrillError(f"Label Studio not healthy:\n{started.tail()}")
            return started

        server = start()
        api = Api(server.url, secret["LABEL_STUDIO_USER_TOKEN"])
        make_data(api)
        before = api.snapshot()

        # the CronJob's pod: pg_dump, then the upload
        scratch.mkdir()
        cron = rendered.find("CronJob", backup.NAME)
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        out = _check(pods.run_pod(pod), "the backup pod")
        name = out.strip().splitlines()[-1].split()[1].rstrip(":")
        listed = s3.list_objects_v2(Bucket=store["S3_BUCKET"], Prefix=f"{backup.PREFIX}{name}/")
        size = sum(o["Size"] for o in listed["Contents"])

        # the disaster: Label Studio stopped, its database dropped, its media deleted
        stop_server(server.process, timeout=20)
        server = None
        database.sql(f'DROP DATABASE "{secret["POSTGRE_NAME"]}" WITH (FORCE)')
        database.sql(f'CREATE DATABASE "{secret["POSTGRE_NAME"]}" OWNER "{secret["POSTGRE_USER"]}"')
        shutil.rmtree(data_dir)
        data_dir.mkdir()
        shutil.rmtree(scratch)
        scratch.mkdir()

        # the restore Job's pod, Label Studio scaled to zero (stopped) meanwhile
        job = backup.restore_job(settings, name, "label-studio-restore-drill")
        started = time.monotonic()
        _check(pods.run_pod(job["spec"]["template"]["spec"]), "the restore pod")
        seconds = time.monotonic() - started

        started = time.monotonic()
        server = start()
        restart = time.monotonic() - started
        after = Api(server.url, secret["LABEL_STUDIO_USER_TOKEN"]).snapshot()
        if after != before:
            raise DrillError(f"restored {after.counts()}, backed up {before.counts()}")

        # a corrupted object: refused before anything is touched
        key = f"{backup.PREFIX}{name}/media.tar.gz"
        meta = s3.head_object(Bucket=store["S3_BUCKET"], Key=key)["Metadata"]
        body = bytearray(s3.get_object(Bucket=store["S3_BUCKET"], Key=key)["Body"].read())
        body[len(body) // 2] ^= 0xFF
        s3.put_object(Bucket=store["S3_BUCKET"], Key=key, Body=bytes(body), Metadata=meta)
        shutil.rmtree(scratch)
        scratch.mkdir()
        refused = pods.run_pod(job["spec"]["template"]["spec"])
        if refused[0].returncode != 1 or len(refused) != 1:
            raise DrillError("a corrupted backup was not refused by the restore's first step")
        reason = refused[0].stderr.strip().splitlines()[-1]
        if "refusing" not in reason:
            raise DrillError(f"unexpected refusal: {reason}")
        still = Api(server.url, secret["LABEL_STUDIO_USER_TOKEN"]).snapshot()
        if still != before:
            raise DrillError("the refused restore changed Label Studio's data")
        return Result(before, after, name, size, seconds, restart, reason)
    finally:
        if server is not None:
            stop_server(server.process, timeout=20)
        moto.stop()
        postgres.remove(database)


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs each request
    work = Path(tempfile.mkdtemp(prefix="oceanid-restore-drill-"))
    try:
        result = drill(work)
    except DrillError as exc:
        print(f"restore drill FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(result.lines()))
    print(json.dumps({"restore_seconds": round(result.restore_seconds, 1),
                      "restart_seconds": round(result.restart_seconds, 1),
                      "backup_bytes": result.backup_bytes}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
