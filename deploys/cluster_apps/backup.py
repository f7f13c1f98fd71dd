"""Label Studio's backups: a nightly CronJob to S3-compatible storage, and the restore Job.

Annotations are the one thing the site makes that cannot be made again. The CronJob's
pod dumps Label Studio's database with `pg_dump -Fc` (init container, the pinned
PostgreSQL image of the server's major version: pg_dump refuses a newer server) into the
pod's scratch folder, then backup_job.py (this folder, shipped in a ConfigMap, run in the
Label Studio image, whose Python has boto3 at the version Label Studio pins) archives the
data volume, uploads both with their SHA-256 in each object's metadata, writes the
backup's manifest last, and deletes what retention no longer keeps. Any failure exits
non-zero: the Job fails, and `make status` lists failed Jobs.

The data volume is Label Studio's own PersistentVolumeClaim, mounted read-only. It is
`local-path`, ReadWriteOnce: one node may mount it, any number of pods there. The
provisioner gives the volume a node affinity to the node that holds its folder, and the
scheduler places every pod that mounts the claim on that node, so the job runs beside
Label Studio without a nodeSelector of its own (one would be wrong after a re-provision).

The restore Job (`restore_job`, made on demand by `make restore`) is the same pod in
reverse: backup_job.py `restore NAME` checks every checksum before it touches anything,
replaces the data volume's content and leaves the dump for `pg_restore`, which replaces
the database in one transaction. Label Studio is scaled to zero around it
(backup_commands.py).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from deploys.cluster_apps import label_studio, objects
from oceanid.secrets import Secrets
from oceanid.settings import Settings
from operations import progress

APP = "backup"
NAMESPACE = label_studio.NAMESPACE
NAME = "label-studio-backup"
SECRET = "label-studio-backup"
SCRIPT = Path(__file__).with_name("backup_job.py")
SCRIPT_DIR = "/opt/oceanid"
WORK_DIR = "/work"
DUMP_FILE = f"{WORK_DIR}/database.dump"
PREFIX = "label-studio/"
#: libpq's own variables: pg_dump and pg_restore read the connection from them, so no
#: password is ever on a command line.
PG_ENV = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD")
S3_ENV = ("S3_ENDPOINT", "S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
PG_DUMP = ["pg_dump", "--format=custom", "--no-owner", f"--file={DUMP_FILE}"]
#: `--dbname=postgresql://`: a URI with nothing in it, so libpq takes every part from PG*;
#: `--clean --if-exists` drops what the dump recreates, in one transaction that a failure
#: rolls back whole.
PG_RESTORE = [
    "pg_restore",
    "--clean",
    "--if-exists",
    "--no-owner",
    "--exit-on-error",
    "--single-transaction",
    "--dbname=postgresql://",
    DUMP_FILE,
]


def secret_values(secrets: Secrets) -> dict[str, str]:
    db = label_studio.database_env(secrets["labelStudioDbUrl"])
    return {
        "PGHOST": db["POSTGRE_HOST"],
        "PGPORT": db["POSTGRE_PORT"],
        "PGDATABASE": db["POSTGRE_NAME"],
        "PGUSER": db["POSTGRE_USER"],
        "PGPASSWORD": db["POSTGRE_PASSWORD"],
        "S3_ENDPOINT": secrets["backupS3Endpoint"],
        "S3_BUCKET": secrets["backupS3Bucket"],
        "AWS_ACCESS_KEY_ID": secrets["backupS3AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": secrets["backupS3SecretAccessKey"],
    }


def _volumes() -> list[dict[str, Any]]:
    return [
        {"name": "script", "configMap": {"name": NAME}},
        {"name": "work", "emptyDir": {}},
        {"name": "data", "persistentVolumeClaim": {"claimName": label_studio.NAME}},
    ]


def _postgres(settings: Settings, name: str, command: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": settings.cluster_apps.backup.postgres_image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [objects.secret_env(n, SECRET) for n in PG_ENV],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [{"name": "work", "mountPath": WORK_DIR}],
    }


def _script(settings: Settings, name: str, args: list[str], *, data_read_only: bool) -> dict:
    backup = settings.cluster_apps.backup
    plain = {
        "BACKUP_PREFIX": PREFIX,
        "KEEP_DAILY": str(backup.keep_daily),
        "KEEP_WEEKLY": str(backup.keep_weekly),
        "WORK_DIR": WORK_DIR,
        "RESTORE_DIR": WORK_DIR,
        "DUMP_FILE": DUMP_FILE,
        "MEDIA_DIR": label_studio.DATA_DIR,
    }
    return {
        "name": name,
        "image": settings.cluster_apps.label_studio.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", f"{SCRIPT_DIR}/{SCRIPT.name}", *args],
        "env": [
            *({"name": k, "value": v} for k, v in plain.items()),
            *(objects.secret_env(n, SECRET) for n in S3_ENV),
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [
            {"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True},
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "data", "mountPath": label_studio.DATA_DIR, "readOnly": data_read_only},
        ],
    }


def _pod(init: dict[str, Any], main: dict[str, Any]) -> dict[str, Any]:
    """Both containers as Label Studio's user, whose files the data volume holds."""
    return objects.hardened(
        {"restartPolicy": "Never", "initContainers": [init], "containers": [main],
         "volumes": _volumes()},
        user=label_studio.UID,
        group=label_studio.UID,
        fs_group=label_studio.UID,
    )  # fmt: skip


def backup_pod(settings: Settings) -> dict[str, Any]:
    return _pod(
        _postgres(settings, "pg-dump", PG_DUMP),
        _script(settings, "upload", ["backup"], data_read_only=True),
    )


def restore_job(settings: Settings, backup: str, job: str) -> dict[str, Any]:
    """The Job that restores backup `backup` (its folder name) into Label Studio, which
    must be scaled to zero first; never retried (a restore half done is for a person)."""
    pod = _pod(
        _script(settings, "fetch", ["restore", backup], data_read_only=False),
        _postgres(settings, "pg-restore", PG_RESTORE),
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": objects.metadata(APP, job, NAMESPACE),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": objects.labels(APP, job)}, "spec": pod},
        },
    }


def build(settings: Settings, secrets: Secrets) -> objects.AppObjects:
    """(objects, secret objects); the namespace is Label Studio's."""
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": objects.metadata(APP, NAME, NAMESPACE),
        "spec": {
            "schedule": settings.cluster_apps.backup.schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": objects.labels(APP, NAME)},
                "spec": {
                    "backoffLimit": 1,
                    "activeDeadlineSeconds": 3600,
                    "template": {
                        "metadata": {"labels": objects.labels(APP, NAME)},
                        "spec": backup_pod(settings),
                    },
                },
            },
        },
    }
    script = objects.config_map(APP, NAME, NAMESPACE, {SCRIPT.name: SCRIPT.read_text()})
    return objects.AppObjects(
        objects=[script, cron],
        secrets=[objects.secret(APP, SECRET, NAMESPACE, secret_values(secrets))],
    )


def run_job_script(
    job: str,
    create: list[str] | None = None,
    manifest: str | None = None,
    timeout: int = 3600,
    summary: bool = False,
) -> str:
    """
    Shell, run as root on the first server: create Job `job` in Label Studio's namespace,
    wait until it completes or fails, print its pods' logs, exit 0 only when it completed.

    + job: the Job's name
    + create: kubectl's arguments after `-n apps`, such as
      ["create", "job", job, "--from=cronjob/label-studio-backup"]
    + manifest: else the Job as YAML, applied from a here-document (it names Secrets,
      never holds their values)
    + timeout: seconds before the wait gives up (the Job's own deadline is an hour)
    + summary: of a Job that completed, print only the log's last line (the backup's
      ``done`` line; a deploy shows this output as it comes), all of it for one that did not

    Waits on the Job's conditions (`Complete`, `Failed`), not on `kubectl wait`, which
    watches one condition and would sit out its timeout on a Job that failed. The wait says
    what it waits for every progress.EVERY seconds (on stdout).
    """
    kubectl = f"k3s kubectl -n {NAMESPACE}"
    conditions = '{range .status.conditions[?(@.status=="True")]}{.type} {end}'
    if create:
        make = f"{kubectl} {shlex.join(create)} >/dev/null || exit 1"
    elif manifest is not None and "\nOCEANID_JOB\n" not in f"\n{manifest}\n":
        make = f"{kubectl} apply -f - >/dev/null <<'OCEANID_JOB' || exit 1\n{manifest}\nOCEANID_JOB"
    else:
        raise ValueError("run_job_script: give `create` or a `manifest`")
    # the wait's own exit: 0 completed, 1 failed or not finished in time, 2 the Job unreadable
    wait = "\n".join(
        [
            f"end=$(( $(date +%s) + {timeout} ))",
            "while :; do",
            f"  state=$({kubectl} get job {shlex.quote(job)} -o jsonpath={shlex.quote(conditions)})"
            " || exit 2",
            '  case "$state" in *Complete*) exit 0;; *Failed*) exit 1;; esac',
            '  if [ "$(date +%s)" -ge "$end" ]; then',
            f"    echo 'job {job}: not finished in {timeout}s' >&2; exit 1",
            "  fi",
            "  sleep 3",
            "done",
        ]
    )
    logs = f"{kubectl} logs job/{shlex.quote(job)} --all-containers=true 2>&1"
    if summary:
        logs = f'if [ "$ok" = 0 ]; then {logs} | tail -n 1; else {logs} || true; fi'
    else:
        logs = f"{logs} || true"
    return "\n".join(
        [
            "set -u",
            make,
            progress.watch_script(f"Job {NAMESPACE}/{job} to finish", timeout, wait),
            "ok=$?",
            '[ "$ok" -le 1 ] || exit 1',
            logs,
            'exit "$ok"',
        ]
    )
