"""Backups: the app as the deploy renders it (on where the object store is configured), the
settings and secrets preflight requires, k3s's etcd-snapshot drop-in (read back by the k3s
stand-in as k3s reads it), the wait script's shell, and the backup an image change takes
first (operations/k3s.py `backed_up_first`, as deploys/k3s/apps.py sets it up, on a fake
host)."""

from __future__ import annotations

import logging
import subprocess

import pytest
import yaml

from deploys import cluster_apps
from deploys.cluster_apps import backup, backup_commands, label_studio
from deploys.k3s import apps as k3s_apps
from deploys.k3s import config as k3s_config
from deploys.k3s import node
from facts.managed import ManagedState
from operations import _desired
from operations import k3s as k3s_ops
from operations.managed import DesiredState
from tests.unit.test_cluster_apps import docs, files_of, find, site_for
from tests.unit.test_k3s_config import _standin
from tests.unit.test_operations import assert_refused, managed_state, run_op, shell_syntax_errors

STORE_KEYS = (
    "backupS3Endpoint",
    "backupS3Bucket",
    "backupS3AccessKeyId",
    "backupS3SecretAccessKey",
)


def without_store(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in STORE_KEYS}


def backup_pod(files) -> dict:
    cron = find(files, "CronJob", backup.NAME)
    return cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_on_where_the_store_is_configured_and_off_where_not(data, lab_secrets, tmp_path):
    on = files_of(data, lab_secrets, tmp_path)
    assert cluster_apps.path(backup.APP) in on
    assert cluster_apps.path(backup.APP, secret=True) in on
    off = files_of(data, without_store(lab_secrets), tmp_path)
    assert cluster_apps.path(backup.APP) not in off
    data["cluster_apps"]["backup"]["enabled"] = False
    assert cluster_apps.path(backup.APP) not in files_of(data, lab_secrets, tmp_path)


def test_the_cronjob_dumps_with_pg_dump_and_uploads_the_label_studio_volume(
    data, lab_secrets, tmp_path
):
    files = files_of(data, lab_secrets, tmp_path)
    cron = find(files, "CronJob", backup.NAME)
    assert cron["spec"]["schedule"] == data["cluster_apps"]["backup"]["schedule"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = backup_pod(files)
    (dump,) = pod["initContainers"]
    assert dump["image"] == "docker.io/library/postgres:15.18-bookworm"
    assert dump["command"][:2] == ["pg_dump", "--format=custom"]  # pg_dump -Fc
    (upload,) = pod["containers"]
    assert upload["image"] == data["cluster_apps"]["label_studio"]["image"]
    assert upload["command"] == ["python3", f"{backup.SCRIPT_DIR}/backup_job.py", "backup"]
    # the same claim Label Studio's Deployment mounts, read-only, at the same path
    ls_pod = find(files, "Deployment", label_studio.NAME)["spec"]["template"]["spec"]
    claim = {v["name"]: v for v in ls_pod["volumes"]}["data"]["persistentVolumeClaim"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == claim
    mounts = {m["name"]: m for m in upload["volumeMounts"]}
    assert mounts["data"]["mountPath"] == label_studio.DATA_DIR and mounts["data"]["readOnly"]
    config_map = find(files, "ConfigMap", backup.NAME)
    assert config_map["data"]["backup_job.py"] == backup.SCRIPT.read_text()
    env = {e["name"]: e for e in upload["env"]}
    assert env["KEEP_DAILY"]["value"] == "7" and env["KEEP_WEEKLY"]["value"] == "4"


def test_the_store_keys_and_the_database_password_are_only_in_the_0600_secret_file(
    data, lab_secrets, tmp_path
):
    files = files_of(data, lab_secrets, tmp_path)
    plain, secret = (
        files[cluster_apps.path(backup.APP)],
        files[cluster_apps.path(backup.APP, secret=True)],
    )
    assert (plain.mode, secret.mode, secret.secret) == ("0644", "0600", True)
    values = find({secret.path: secret}, "Secret", backup.SECRET)["stringData"]
    assert values["AWS_SECRET_ACCESS_KEY"] == lab_secrets["backupS3SecretAccessKey"]
    assert values["S3_ENDPOINT"] == lab_secrets["backupS3Endpoint"]
    db_password = label_studio.database_env(lab_secrets["labelStudioDbUrl"])["POSTGRE_PASSWORD"]
    assert values["PGPASSWORD"] == db_password
    for value in (
        lab_secrets["backupS3SecretAccessKey"],
        lab_secrets["backupS3AccessKeyId"],
        db_password,
    ):
        assert value.encode() not in plain.content
    assert all(d["kind"] != "Secret" for d in docs(plain))


def test_a_half_configured_store_is_refused_by_name(data, lab_secrets, tmp_path):
    from oceanid.preflight import PreflightError

    values = dict(lab_secrets)
    del values["backupS3SecretAccessKey"]
    with pytest.raises(PreflightError) as found:
        site_for(data, values, tmp_path)
    assert "backupS3SecretAccessKey: missing while backupS3Endpoint" in str(found.value)


def test_enabled_requires_the_store(data, lab_secrets, tmp_path):
    from oceanid.preflight import PreflightError

    data["cluster_apps"]["backup"]["enabled"] = True
    with pytest.raises(PreflightError) as found:
        site_for(data, without_store(lab_secrets), tmp_path)
    assert "backupS3Bucket: missing (needed for backups" in str(found.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "backupS3Endpoint",
            "r2.example.com",
            r"backupS3Endpoint: must be the store's http\(s\) URL",
        ),
        ("backupS3Bucket", "Backups_Here", "backupS3Bucket: must be a bucket name"),
    ],
)
def test_a_store_the_job_cannot_use_is_refused(data, lab_secrets, tmp_path, key, value, message):
    from oceanid.preflight import PreflightError

    with pytest.raises(PreflightError, match=message):
        site_for(data, {**lab_secrets, key: value}, tmp_path)


def test_the_postgres_image_is_pinned(data, lab_secrets, tmp_path):
    from oceanid.preflight import PreflightError

    data["cluster_apps"]["backup"]["postgres_image"] = "postgres"
    with pytest.raises(PreflightError, match="cluster_apps.backup.postgres_image"):
        site_for(data, lab_secrets, tmp_path)


def _server_plan(data, values, tmp_path):
    site, _ = site_for(data, values, tmp_path)
    return site.hosts["tethys"], site


def test_servers_get_the_etcd_snapshot_drop_in_with_k3s_names_0600(data, lab_secrets, tmp_path):
    plan, site = _server_plan(data, lab_secrets, tmp_path)
    text = node.etcd_snapshots_text(plan, site)
    document = yaml.safe_load(text)
    assert document == {
        "etcd-snapshot-schedule-cron": "0 */12 * * *",
        "etcd-snapshot-retention": 14,
        "etcd-s3": True,
        "etcd-s3-endpoint": "10.77.0.1:9900",  # k3s takes host:port; http needs insecure
        "etcd-s3-bucket": lab_secrets["backupS3Bucket"],
        "etcd-s3-region": "auto",
        "etcd-s3-folder": "k3s-etcd",
        "etcd-s3-access-key": lab_secrets["backupS3AccessKeyId"],
        "etcd-s3-secret-key": lab_secrets["backupS3SecretAccessKey"],
        "etcd-s3-insecure": True,
    }
    role = DesiredState(name="k3s server tethys")
    inputs = node.add_to(role, plan, site, "server")
    drop_in = role.file(k3s_config.ETCD_S3_FILE)
    assert (drop_in.mode, drop_in.secret) == ("0600", True)
    assert k3s_config.ETCD_S3_FILE in inputs  # k3s reads it at start
    assert k3s_config.ETCD_S3_FILE not in role.file(k3s_config.CONFIG).content.decode()
    assert (
        lab_secrets["backupS3SecretAccessKey"] not in role.file(k3s_config.CONFIG).content.decode()
    )
    https = k3s_config.etcd_snapshots(
        endpoint="https://acct.r2.cloudflarestorage.com", bucket="b", access_key="a",
        secret_key="s", schedule="0 3 * * *", retention=5,
    )  # fmt: skip
    assert https["etcd-s3-endpoint"] == "acct.r2.cloudflarestorage.com"
    assert "etcd-s3-insecure" not in https
    plan, site = _server_plan(data, without_store(lab_secrets), tmp_path)
    assert node.etcd_snapshots_text(plan, site) is None


@pytest.mark.parametrize("role", ["server", "agent"])
def test_the_k3s_standin_reads_the_drop_in_on_servers_and_refuses_it_on_agents(
    data, lab_secrets, tmp_path, role
):
    plan, site = _server_plan(data, lab_secrets, tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(k3s_config.dump({"node-name": "tethys"}))
    (tmp_path / "config.yaml.d").mkdir()
    (tmp_path / "config.yaml.d" / "50-etcd-s3.yaml").write_text(
        node.etcd_snapshots_text(plan, site)
    )
    standin = _standin()
    if role == "server":
        options = standin.Options("server", ["--config", str(config)])  # type: ignore[attr-defined]
        assert options.get("etcd-s3-bucket") == lab_secrets["backupS3Bucket"]
        assert options.get("etcd-s3") is True
    else:
        with pytest.raises(standin.Failure):  # type: ignore[attr-defined]
            standin.Options("agent", ["--config", str(config)])  # type: ignore[attr-defined]


def test_the_wait_scripts_are_shell_and_never_carry_a_secret(data, lab_secrets, tmp_path):
    site, settings = site_for(data, lab_secrets, tmp_path)
    scripts = [
        backup.run_job_script("j", create=["create", "job", "j", "--from=cronjob/x"]),
        backup_commands.restore_script(settings, "20260101T000000Z"),
    ]
    for script in scripts:
        checked = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
        assert checked.returncode == 0, checked.stderr
        for key in STORE_KEYS[2:]:
            assert lab_secrets[key] not in script
    restore = scripts[1]
    assert (
        restore.index("--replicas=0") < restore.index("apply -f -") < restore.index("--replicas=1")
    )
    assert "backup_job.py', restore, '20260101T000000Z'" not in restore  # YAML, not repr
    job = yaml.safe_load(
        restore.split("<<'OCEANID_JOB' || exit 1\n", 1)[1].split("\nOCEANID_JOB", 1)[0]
    )
    (fetch,) = job["spec"]["template"]["spec"]["initContainers"]
    assert fetch["command"][-2:] == ["restore", "20260101T000000Z"]
    (pg,) = job["spec"]["template"]["spec"]["containers"]
    assert pg["command"][0] == "pg_restore" and "--single-transaction" in pg["command"]


def _before_upgrade(data, values, tmp_path, running: str | None):
    _desired.STATE_CACHE.clear()  # each call is a pyinfra run of its own
    site, settings = site_for(data, values, tmp_path)
    role = DesiredState(name="k3s server tethys")
    k3s_apps.add_to(role, site, settings)
    state = {
        **managed_state(),
        "probes": {k3s_apps.LABEL_STUDIO_IMAGE: [running] if running else []},
    }
    backup_args = k3s_apps.image_backup(site, settings)
    return run_op(
        k3s_ops.backed_up_first, role, backup_args, facts={ManagedState: state}, name="tethys"
    )


def test_an_image_change_backs_up_first(data, lab_secrets, tmp_path):
    run = _before_upgrade(data, lab_secrets, tmp_path, "heartexlabs/label-studio:1.22.0")
    assert run.noop is None
    assert any(f"--from=cronjob/{backup.NAME}" in s for s in run.strings)
    assert shell_syntax_errors(run.commands) == []


def test_no_backup_without_an_image_change_or_when_the_image_is_named(data, lab_secrets, tmp_path):
    image = data["cluster_apps"]["label_studio"]["image"]
    assert "no upgrade" in _before_upgrade(data, lab_secrets, tmp_path, image).noop
    assert "not running" in _before_upgrade(data, lab_secrets, tmp_path, None).noop
    data["cluster_apps"]["backup"]["skip_before_upgrade"] = image
    skipped = _before_upgrade(data, lab_secrets, tmp_path, "heartexlabs/label-studio:1.22.0")
    assert "skip_before_upgrade names it" in skipped.noop and skipped.strings == []


def test_an_image_change_without_backups_is_refused_unless_named(
    data, lab_secrets, tmp_path, caplog
):
    caplog.set_level(logging.ERROR)
    run = _before_upgrade(
        data, without_store(lab_secrets), tmp_path, "heartexlabs/label-studio:1.22.0"
    )
    message = assert_refused(run, caplog, "backups are off")
    assert "skip_before_upgrade" in message
