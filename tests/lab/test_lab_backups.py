"""Backups in the lab (issue 22, item 3): moto's S3 server on this machine's side of the
bridge holds the bucket the lab's secrets name; tethys gets the backup app's manifests and
k3s's etcd-snapshot drop-in (0600, root, the store's keys in it and nowhere else), and
`make backups` reads the store through the lab's inventory.

The lab's k3s is the stand-in, which runs no pods: the CronJob's pod itself is rehearsed by
the restore drill (tests/contract/test_backup_drill.py) with the real programs.
"""

from __future__ import annotations

import subprocess
import sys

import boto3
import pytest
import yaml

from deploys import cluster_apps
from deploys.cluster_apps import backup
from deploys.k3s import config as k3s_config
from deploys.k3s import node
from lab.topology import REPO, S3_URL, SECRETS_FILE
from tests.lab import ssh

pytestmark = pytest.mark.lab

SERVER = "tethys"


def secrets() -> dict[str, str]:
    return yaml.safe_load(SECRETS_FILE.read_text())


def test_the_lab_store_holds_the_bucket_its_secrets_name():
    values = secrets()
    assert values["backupS3Endpoint"] == S3_URL
    s3 = boto3.client(
        "s3", endpoint_url=S3_URL, region_name="us-east-1",
        aws_access_key_id=values["backupS3AccessKeyId"],
        aws_secret_access_key=values["backupS3SecretAccessKey"],
    )  # fmt: skip
    assert values["backupS3Bucket"] in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_tethys_has_the_etcd_snapshot_drop_in_0600_with_the_stores_keys():
    listed = ssh(SERVER, f"sudo stat -c '%a %U:%G' {k3s_config.ETCD_S3_FILE}")
    assert listed.stdout.split() == ["600", "root:root"], listed.stderr
    document = yaml.safe_load(ssh(SERVER, f"sudo cat {k3s_config.ETCD_S3_FILE}").stdout)
    values = secrets()
    assert document["etcd-s3"] is True and document["etcd-s3-insecure"] is True
    assert document["etcd-s3-endpoint"] == S3_URL.removeprefix("http://")
    assert document["etcd-s3-bucket"] == values["backupS3Bucket"]
    assert document["etcd-s3-secret-key"] == values["backupS3SecretAccessKey"]
    config = ssh(SERVER, f"sudo cat {k3s_config.CONFIG}").stdout
    assert values["backupS3SecretAccessKey"] not in config
    units = ssh(SERVER, f"sudo cat {node.unit_file('server')}; ps -eo args").stdout
    assert values["backupS3SecretAccessKey"] not in units  # never on a command line


def test_tethys_has_the_backup_apps_manifests():
    found = ssh(
        SERVER,
        f"sudo stat -c '%n %a' {cluster_apps.path(backup.APP)} "
        f"{cluster_apps.path(backup.APP, secret=True)}",
    )
    assert found.stdout.split() == [
        cluster_apps.path(backup.APP), "644", cluster_apps.path(backup.APP, secret=True), "600",
    ], found.stderr  # fmt: skip


def test_make_backups_reads_the_lab_store():
    listed = subprocess.run(
        [sys.executable, "-m", "deploys.cluster_apps.backup_commands",
         "--inventory", "inventories/lab.py", "list"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert secrets()["backupS3SecretAccessKey"] not in listed.stdout + listed.stderr
