"""secrets.example.yaml (issue 23): every ESC key the deploy knows, each with a placeholder of
the shape `make check` accepts, and each explained in docs/secrets.md. The file goes through
the real loader and preflight with every feature on, so a new key or a tightened check that
the example does not follow fails here."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from oceanid import secrets
from oceanid.model import HostView
from oceanid.preflight import PreflightError, check
from tests.unit.conftest import with_node_ips

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "secrets.example.yaml"
GROUPS = {"tethys": {"k3s_servers"}, "styx": {"k3s_agents"}, "calypso": {"k3s_agents", "gpu_hosts"}}


def every_feature_on(data: dict) -> dict:
    data.update(
        secret_sources=["file"],
        base_domain="example.com",  # the example's cloudflareNodeTunnelHostname
        enable_node_provisioning=True,
    )
    data["hosts"]["calypso"]["gpu"]["access"] = "service_token"
    data["cluster_apps"] = {**data.get("cluster_apps", {}), "backup": {"enabled": True}}
    return with_node_ips(data, GROUPS)


def run(data: dict, path: Path):
    hosts = [HostView(n, frozenset(g), data) for n, g in GROUPS.items()]
    return check(hosts, environ={"SECRETS_FILE": str(path)})


@pytest.fixture
def example(tmp_path) -> Path:
    copy = tmp_path / "secrets.yaml"
    shutil.copy(EXAMPLE, copy)
    copy.chmod(0o600)  # the loader refuses a file others can read
    return copy


def test_the_example_holds_every_known_key_and_no_other():
    keys = set(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    assert keys == set(secrets.KNOWN_KEYS)


def test_the_example_passes_the_loader_and_every_shape_check(data, example):
    loaded = secrets.read_file(example)
    assert len(loaded) == len(secrets.KNOWN_KEYS)
    site = run(every_feature_on(data), example)
    assert set(site.required) <= set(yaml.safe_load(example.read_text()))
    assert {"labelStudioDbUrl", "cloudflareAccessClientId", "backupS3Bucket"} <= set(site.required)


def test_a_placeholder_of_the_wrong_shape_is_caught(data, example):
    """The test above can fail: the same run with one placeholder spoiled is refused."""
    values = yaml.safe_load(example.read_text())
    values["labelStudioDbUrl"] = "sqlite:///label-studio.db"
    example.write_text(yaml.safe_dump(values))
    with pytest.raises(PreflightError) as raised:
        run(every_feature_on(data), example)
    assert any(line.startswith("labelStudioDbUrl:") for line in raised.value.problems)


def test_docs_explain_every_key():
    text = (REPO / "docs" / "secrets.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([A-Za-z0-9_]+)` \|", text, re.M))
    assert set(secrets.KNOWN_KEYS) <= rows, set(secrets.KNOWN_KEYS) - rows


def test_make_check_asks_only_for_what_the_enabled_features_need(data, example):
    """With Label Studio (and so the ML-backend connector and backups) off and no Access, the
    same inventory passes without their keys; on, each missing key is named with its feature."""
    values = yaml.safe_load(example.read_text())
    optional = {
        "labelStudioDbUrl", "labelStudioAdminEmail", "labelStudioAdminPassword",
        "labelStudioApiToken", "cloudflareAccessClientId", "cloudflareAccessClientSecret",
        "backupS3Endpoint", "backupS3Bucket", "backupS3AccessKeyId", "backupS3SecretAccessKey",
        "hfAccessToken", "k3s_token", "k3sAgentToken",
        "cloudflareNodeTunnelHostname", "cloudflareNodeTunnelTarget",
    }  # fmt: skip
    example.write_text(yaml.safe_dump({k: v for k, v in values.items() if k not in optional}))
    data = every_feature_on(data)
    data["hosts"]["calypso"]["gpu"]["access"] = "off"
    data["cluster_apps"]["label_studio"] = {
        **data["cluster_apps"]["label_studio"],
        "enabled": False,
    }
    data["cluster_apps"]["ml_backend"] = {**data["cluster_apps"]["ml_backend"], "enabled": False}
    data["cluster_apps"]["backup"] = {"enabled": False}
    site = run(data, example)
    assert not optional & set(site.required)
    data["cluster_apps"]["label_studio"]["enabled"] = True
    with pytest.raises(PreflightError) as raised:
        run(data, example)
    missing = sorted(line.split(":")[0] for line in raised.value.problems)
    assert missing == sorted(k for k in optional if k.startswith("labelStudio"))
    assert "(needed for Label Studio (cluster_apps.label_studio))" in raised.value.problems[0]
