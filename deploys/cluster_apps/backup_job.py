"""Label Studio's backups in S3-compatible object storage: make, list, verify, restore.

Shipped in a ConfigMap and run by the backup CronJob and the restore Job in the Label
Studio image, whose Python carries boto3 (label-studio requires it for its own S3
storages, at the version its release pins): no image of our own to build and keep, and
the image is already on the node. The database side is PostgreSQL's own client, run in
the pinned PostgreSQL image beside this script (deploys/cluster_apps/backup.py): the
CronJob's init container writes `pg_dump -Fc` to the pod's scratch folder, which this
script uploads; the restore Job's init container is this script (`restore`), which
leaves the verified dump there for `pg_restore`. The on-demand commands
(deploys/cluster_apps/backup_commands.py) and the contract test's drill run this same
file.

A backup is a folder `<prefix><UTC time>/` of three objects: `database.dump`,
`media.tar.gz` (Label Studio's data folder) and, written last, `manifest.json` with
each object's size and SHA-256. Each object also carries its SHA-256 as user metadata
(`x-amz-meta-sha256`). A folder without its manifest is a backup that did not finish:
never listed as one, never restored, removed by the retention of a later run.

    python3 backup_job.py backup           # DUMP_FILE, MEDIA_DIR: upload, then prune
    python3 backup_job.py list             # newest first
    python3 backup_job.py verify NAME      # download and check every checksum
    python3 backup_job.py restore NAME     # verify, replace MEDIA_DIR, leave the dump
                                           # at RESTORE_DIR/database.dump for pg_restore

Environment: S3_ENDPOINT, S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (from a
Secret), S3_REGION (default `auto`, Cloudflare R2's), BACKUP_PREFIX (default
`label-studio/`), KEEP_DAILY (7), KEEP_WEEKLY (4), WORK_DIR (scratch, default a temp
folder). Any failure exits non-zero, so the Job fails and `make status` shows it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import boto3

DUMP = "database.dump"
MEDIA = "media.tar.gz"
MANIFEST = "manifest.json"
OBJECTS = (DUMP, MEDIA)
STAMP = "%Y%m%dT%H%M%SZ"
CHUNK = 1024 * 1024


class BackupError(Exception):
    """What went wrong, in words; the script prints it and exits 1."""


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        region_name=os.environ.get("S3_REGION", "auto"),
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    )


def bucket() -> str:
    return os.environ["S3_BUCKET"]


def prefix() -> str:
    return os.environ.get("BACKUP_PREFIX", "label-studio/")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def archive_media(media: Path, target: Path) -> int:
    """Label Studio's data folder as a gzip'd tar, paths relative to it; the file count."""
    count = 0
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(media.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(media)), recursive=False)
            count += path.is_file()
    return count


def upload(s3, key: str, path: Path) -> dict:
    """Upload `path` as `key` with its SHA-256 in the object's metadata; read it back."""
    digest = sha256_of(path)
    s3.upload_file(str(path), bucket(), key, ExtraArgs={"Metadata": {"sha256": digest}})
    head = s3.head_object(Bucket=bucket(), Key=key)
    if head["ContentLength"] != path.stat().st_size or head["Metadata"].get("sha256") != digest:
        raise BackupError(f"{key}: the store does not hold what was uploaded")
    return {"size": path.stat().st_size, "sha256": digest}


def backups(s3) -> dict[str, set[str]]:
    """Backup name -> the object names its folder holds, finished or not."""
    found: dict[str, set[str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket(), Prefix=prefix()):
        for item in page.get("Contents", []):
            name, _, leaf = item["Key"][len(prefix()) :].partition("/")
            found.setdefault(name, set()).add(leaf)
    return found


def when(name: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(name, STAMP).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def to_keep(names: list[str], daily: int, weekly: int) -> set[str]:
    """The newest backup of each of the last `daily` days and `weekly` ISO weeks that have
    one; names that are not a backup's time are never counted, nor deleted."""
    dated = sorted((t, n) for n in names if (t := when(n)) is not None)
    keep, days, weeks = set(), [], []
    for moment, name in reversed(dated):
        day, week = moment.date(), moment.isocalendar()[:2]
        if day not in days and len(days) < daily:
            days.append(day)
            keep.add(name)
        if week not in weeks and len(weeks) < weekly:
            weeks.append(week)
            keep.add(name)
    return keep


def prune(s3, made: str) -> list[str]:
    """Delete the backups outside retention, and unfinished ones older than `made`."""
    found = backups(s3)
    finished = [n for n, leaves in found.items() if MANIFEST in leaves]
    keep = to_keep(
        finished, int(os.environ.get("KEEP_DAILY", 7)), int(os.environ.get("KEEP_WEEKLY", 4))
    )
    keep.add(made)
    gone = []
    for name, leaves in sorted(found.items()):
        if when(name) is None or name in keep or (MANIFEST not in leaves and name >= made):
            continue
        # the manifest first: a backup half-deleted is an unfinished one, never a bad one
        for leaf in sorted(leaves, key=lambda leaf: leaf != MANIFEST):
            s3.delete_object(Bucket=bucket(), Key=f"{prefix()}{name}/{leaf}")
        gone.append(name)
    return gone


def make_backup(s3, work: Path) -> str:
    dump = Path(os.environ["DUMP_FILE"])
    media = Path(os.environ["MEDIA_DIR"])
    if not dump.is_file() or dump.stat().st_size == 0:
        raise BackupError(f"{dump}: no database dump (did pg_dump fail?)")
    if not media.is_dir():
        raise BackupError(f"{media}: Label Studio's data folder is not mounted")
    name = dt.datetime.now(dt.UTC).strftime(STAMP)
    archive = work / MEDIA
    files = archive_media(media, archive)
    manifest = {"name": name, "files": files, "objects": {}}
    for leaf, path in ((DUMP, dump), (MEDIA, archive)):
        manifest["objects"][leaf] = upload(s3, f"{prefix()}{name}/{leaf}", path)
    body = work / MANIFEST
    body.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    upload(s3, f"{prefix()}{name}/{MANIFEST}", body)
    for leaf, meta in manifest["objects"].items():
        print(f"{prefix()}{name}/{leaf}  {meta['size']} bytes  sha256 {meta['sha256']}")
    for gone in prune(s3, name):
        print(f"retention: deleted {prefix()}{gone}/")
    print(f"backup {name}: done ({files} media files)")
    return name


def read_manifest(s3, name: str) -> dict:
    try:
        body = s3.get_object(Bucket=bucket(), Key=f"{prefix()}{name}/{MANIFEST}")["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise BackupError(
            f"{name}: no such finished backup in {bucket()}/{prefix()} (`make backups` lists them)"
        ) from None
    return json.loads(body)


def list_backups(s3) -> list[dict]:
    found = backups(s3)
    rows = []
    for name in sorted((n for n, leaves in found.items() if MANIFEST in leaves), reverse=True):
        manifest = read_manifest(s3, name)
        size = sum(meta["size"] for meta in manifest["objects"].values())
        rows.append({"name": name, "size": size, **manifest})
    return rows


def fetch(s3, name: str, into: Path) -> dict:
    """Download a backup's objects into `into`, each checked against the SHA-256 in its
    metadata and in the manifest; raise BackupError naming the first that differs."""
    manifest = read_manifest(s3, name)
    into.mkdir(parents=True, exist_ok=True)
    for leaf in OBJECTS:
        key = f"{prefix()}{name}/{leaf}"
        expected = manifest["objects"][leaf]["sha256"]
        target = into / leaf
        s3.download_file(bucket(), key, str(target))
        stated = s3.head_object(Bucket=bucket(), Key=key)["Metadata"].get("sha256")
        actual = sha256_of(target)
        if actual != expected or stated != expected:
            target.unlink()
            raise BackupError(
                f"{key}: SHA-256 {actual} does not match the backup's {expected} "
                f"(metadata {stated}); refusing to restore a damaged backup"
            )
    return manifest


def replace_media(archive: Path, media: Path) -> int:
    """Empty Label Studio's data folder and unpack the backup's into it; the file count."""
    for child in media.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    count = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            # `data`: no absolute paths, no `..`, no links out, no device files
            tar.extract(member, media, filter="data")
            count += member.isfile()
    return count


def main(argv: list[str]) -> int:
    mode, *rest = argv or ["backup"]
    s3 = client()
    work = Path(os.environ.get("WORK_DIR") or tempfile.mkdtemp(prefix="oceanid-backup-"))
    try:
        if mode == "backup":
            make_backup(s3, work)
        elif mode == "list":
            for row in list_backups(s3):
                print(f"{row['name']}  {row['size']} bytes  {row['files']} media files")
        elif mode == "verify" and len(rest) == 1:
            scratch = Path(tempfile.mkdtemp(prefix="verify-", dir=work))
            try:
                manifest = fetch(s3, rest[0], scratch)
            finally:
                shutil.rmtree(scratch)
            print(f"backup {rest[0]}: every checksum matches ({manifest['files']} media files)")
        elif mode == "restore" and len(rest) == 1:
            restore_dir = Path(os.environ.get("RESTORE_DIR", work))
            manifest = fetch(s3, rest[0], restore_dir)
            files = replace_media(restore_dir / MEDIA, Path(os.environ["MEDIA_DIR"]))
            (restore_dir / MEDIA).unlink()
            print(f"backup {rest[0]}: checksums match; {files} media files restored; "
                  f"database dump at {restore_dir / DUMP} "
                  f"({manifest['objects'][DUMP]['size']} bytes)")  # fmt: skip
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
