"""The lab's object store: its keys join an existing lab secrets file without the others
changing (tunnel IDs and credentials stay), and its bucket is made on moto's server."""

from __future__ import annotations

import boto3
import yaml
from moto.server import ThreadedMotoServer

from lab import fake_secrets, s3
from lab.topology import GATEWAY, S3_PORT, S3_URL
from tests.gpu.triton_smoke import free_ports

STORE_KEYS = (
    "backupS3Endpoint",
    "backupS3Bucket",
    "backupS3AccessKeyId",
    "backupS3SecretAccessKey",
)


def test_the_store_keys_are_added_to_an_existing_file_and_nothing_else_changes(
    tmp_path, monkeypatch
):
    path = tmp_path / "secrets.yaml"
    monkeypatch.setattr(fake_secrets, "SECRETS_FILE", path)
    older = {k: v for k, v in fake_secrets.generate().items() if k not in STORE_KEYS}
    path.write_text(yaml.safe_dump(older))
    values = fake_secrets.ensure()
    assert {k: values[k] for k in older} == older
    assert values["backupS3Endpoint"] == S3_URL == f"http://{GATEWAY}:{S3_PORT}"
    assert values["backupS3Bucket"] == s3.BUCKET
    assert len(values["backupS3SecretAccessKey"]) == 64
    assert path.stat().st_mode & 0o777 == 0o600
    assert fake_secrets.ensure() == values  # kept from then on


def test_the_bucket_is_made_once_on_motos_server():
    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3.create_bucket(endpoint, s3.BUCKET, "key", "secret")
        s3.create_bucket(endpoint, s3.BUCKET, "key", "secret")  # there already: kept
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="key", aws_secret_access_key="secret",
        )  # fmt: skip
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == [s3.BUCKET]
    finally:
        server.stop()
    assert s3.argv("10.77.0.1", 9900)[1:] == ["-m", "moto.server", "--host", "10.77.0.1",
                                               "--port", "9900"]  # fmt: skip
