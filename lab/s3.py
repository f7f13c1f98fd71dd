"""The lab's object store: moto's S3 server (PyPI `moto[server]`), the backups' R2 stand-in.

It listens on this machine's side of the lab bridge, where the lab hosts reach it as they
would reach Cloudflare R2, and the lab's secrets file names it (`backupS3*`,
lab/fake_secrets.py), so the backup CronJob's Secret and k3s's etcd-snapshot drop-in are
rendered as on a real site. moto keeps its objects in memory: a lab restarted starts with
an empty bucket, which `create_bucket` makes again. The contract test's drill runs the
same server on loopback.
"""

from __future__ import annotations

import sys

import boto3

#: The lab's bucket, as the secrets file names it.
BUCKET = "oceanid-backups"


def argv(address: str, port: int) -> list[str]:
    """moto's S3-compatible server on `address:port` (it serves every AWS API; S3 is used)."""
    return [sys.executable, "-m", "moto.server", "--host", address, "--port", str(port)]


def create_bucket(endpoint: str, bucket: str, key_id: str, secret: str) -> None:
    """The bucket the backups go to, made where it is missing (a bucket is made once, by
    the operator, on a real site: R2's dashboard)."""
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
