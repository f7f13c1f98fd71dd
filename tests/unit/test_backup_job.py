"""backup_job.py, the script the backup CronJob and the restore Job run, against moto's real
S3 server (PyPI moto[server]) on loopback, through boto3: what it uploads, what it keeps,
what it refuses. The script runs as a program, as in the pod; only its environment (the
Secret's values, the mounts' paths) is given here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from deploys.cluster_apps import backup
from tests.gpu.triton_smoke import free_ports

BUCKET = "oceanid-backups"
PREFIX = backup.PREFIX


def _module():
    spec = importlib.util.spec_from_file_location("backup_job", backup.SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(endpoint):
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="test-key", aws_secret_access_key="test-secret",
    )  # fmt: skip
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def env(endpoint, tmp_path) -> dict[str, str]:
    media = tmp_path / "data"
    (media / "media" / "upload" / "1").mkdir(parents=True)
    (media / "media" / "upload" / "1" / "image.png").write_bytes(os.urandom(4096))
    (media / "media" / "upload" / "1" / "tasks.json").write_text('[{"text": "hello"}]')
    (media / "export").mkdir()
    dump = tmp_path / "work" / "database.dump"
    dump.parent.mkdir()
    dump.write_bytes(b"PGDMP" + os.urandom(2048))
    return {
        "PATH": os.environ["PATH"],
        "S3_ENDPOINT": endpoint,
        "S3_BUCKET": BUCKET,
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "BACKUP_PREFIX": PREFIX,
        "DUMP_FILE": str(dump),
        "MEDIA_DIR": str(media),
        "WORK_DIR": str(tmp_path / "work"),
        "RESTORE_DIR": str(tmp_path / "restore"),
        "KEEP_DAILY": "7",
        "KEEP_WEEKLY": "4",
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(backup.SCRIPT), *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def names(s3) -> list[str]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return sorted({k[len(PREFIX) :].split("/")[0] for k in keys})


def test_a_backup_uploads_each_object_with_its_sha256_and_restores_byte_for_byte(s3, env):
    before = tree(Path(env["MEDIA_DIR"]))
    made = run(env, "backup")
    assert made.returncode == 0, made.stderr
    (name,) = names(s3)
    for leaf, path in (("database.dump", Path(env["DUMP_FILE"])), ("media.tar.gz", None)):
        head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}{name}/{leaf}")
        body = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{name}/{leaf}")["Body"].read()
        assert head["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
        if path is not None:
            assert body == path.read_bytes()
        assert f"sha256 {head['Metadata']['sha256']}" in made.stdout
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{name}/manifest.json")["Body"].read()
    )
    assert manifest["files"] == 2

    listed = run(env, "list")
    assert listed.returncode == 0 and listed.stdout.startswith(name)
    assert run(env, "verify", name).returncode == 0

    media = Path(env["MEDIA_DIR"])
    (media / "media" / "upload" / "1" / "image.png").unlink()
    (media / "stray.txt").write_text("made after the backup")
    restored = run(env, "restore", name)
    assert restored.returncode == 0, restored.stderr
    assert tree(media) == before
    assert (Path(env["RESTORE_DIR"]) / "database.dump").read_bytes() == Path(
        env["DUMP_FILE"]
    ).read_bytes()


def test_a_corrupted_object_is_refused_and_nothing_is_touched(s3, env):
    assert run(env, "backup").returncode == 0
    (name,) = names(s3)
    key = f"{PREFIX}{name}/media.tar.gz"
    stated = s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]
    body = bytearray(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF  # one flipped byte, the metadata kept
    s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(body), Metadata=stated)
    media = Path(env["MEDIA_DIR"])
    (media / "stray.txt").write_text("the state the restore must leave alone")
    before = tree(media)
    for mode in ("verify", "restore"):
        refused = run(env, mode, name)
        assert refused.returncode == 1
        assert "does not match" in refused.stderr and "refusing" in refused.stderr
    assert tree(media) == before


def test_a_failed_dump_fails_the_job_and_uploads_nothing(s3, env):
    Path(env["DUMP_FILE"]).write_bytes(b"")
    failed = run(env, "backup")
    assert failed.returncode == 1 and "no database dump" in failed.stderr
    assert names(s3) == []


def test_an_unknown_backup_is_named_and_refused(s3, env):
    refused = run(env, "restore", "20200101T000000Z")
    assert refused.returncode == 1 and "no such finished backup" in refused.stderr


def test_retention_keeps_the_newest_of_7_days_and_4_weeks(s3, env):
    now = dt.datetime.now(dt.UTC).replace(hour=1, minute=0, second=0, microsecond=0)
    old = [
        (now - dt.timedelta(days=d, hours=h)).strftime("%Y%m%dT%H%M%SZ")
        for d in range(1, 60)
        for h in (0, 6)
    ]
    for name in old:
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{name}/database.dump", Body=b"x")
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{name}/manifest.json", Body=b"{}")
    unfinished = (now - dt.timedelta(days=70)).strftime("%Y%m%dT%H%M%SZ")
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{unfinished}/database.dump", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}not-a-backup/notes.txt", Body=b"kept")
    made = run(env, "backup")
    assert made.returncode == 0, made.stderr
    kept = [n for n in names(s3) if n != "not-a-backup"]
    job = _module()
    dated = sorted(kept, key=job.when, reverse=True)
    assert dated[0] > max(old)  # the one just made
    days = {job.when(n).date() for n in kept}
    weeks = {job.when(n).isocalendar()[:2] for n in kept}
    assert len(days) <= 7 + 4 and len(weeks) <= 4 + 2
    # the newest of each of the last 7 days that have one
    for day in sorted({job.when(n).date() for n in old + dated[:1]}, reverse=True)[:7]:
        newest = max(n for n in old + dated[:1] if job.when(n).date() == day)
        assert newest in kept
    assert unfinished not in kept
    assert "not-a-backup" in names(s3)
    assert len(kept) == len(job.to_keep(kept, 7, 4) | {dated[0]})


def test_to_keep_counts_days_and_iso_weeks():
    job = _module()
    start = dt.datetime(2026, 1, 31, 3, tzinfo=dt.UTC)
    names = [(start - dt.timedelta(days=d)).strftime(job.STAMP) for d in range(40)]
    keep = job.to_keep(names, 7, 4)
    assert set(names[:7]) <= keep
    weeks = {job.when(n).isocalendar()[:2] for n in keep}
    assert len(weeks) == 4
    # Sat 31 Jan back to Sun 25 Jan span ISO weeks 5 and 4; weeks 3 and 2 add their newest
    assert len(keep) == 7 + 2
    assert job.to_keep(names, 1, 0) == {names[0]}
