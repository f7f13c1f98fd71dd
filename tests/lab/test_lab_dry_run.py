"""The dry run tells the whole truth (issue 8, item 1): every file an operation would change
is named, a secret by name only, and a file the deploy no longer wants is named for removal;
then the real converge does exactly that.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml

from lab.converge import pyinfra
from lab.topology import SECRETS_FILE
from oceanid import tunnel_credentials
from tests.lab import lab_secret_lines, ssh

pytestmark = pytest.mark.lab

CONFIG = "/etc/cloudflared/config.yaml"
UNIT = "/etc/systemd/system/cloudflared-node.service"
MODEL_CONFIG = "/opt/triton/models/docling_granite_python/config.pbtxt"


def digests(name: str, paths: list[str]) -> str:
    return ssh(name, "sudo sha256sum " + " ".join(paths)).stdout


def dry_run(*args: str, env: dict[str, str] | None = None):
    """`--dry --diff` without -y: pyinfra's change detection is what a dry run shows."""
    return pyinfra("deploys/site.py", *args, "--dry", "--diff", json_output=False, yes=False,
                   env=env)  # fmt: skip


def test_dry_run_names_every_changed_file_of_one_manifest(converged):
    """Three files of calypso's one GPU-host manifest edited by hand: all three are in the
    dry run (not only the first), it changes nothing, and the converge puts them back."""
    paths = [CONFIG, UNIT, MODEL_CONFIG]
    for path in paths:
        ssh("calypso", f"echo '# edited by hand' | sudo tee -a {path} >/dev/null")
    edited = digests("calypso", paths)
    try:
        run = dry_run("--limit", "calypso")
        assert run.returncode == 0, run.output[-4000:]
        for path in paths:
            assert path in run.output, f"--dry --diff does not name {path}"
        assert run.output.count("# edited by hand") >= 3, "a diff of an edited file is missing"
        assert digests("calypso", paths) == edited, "--dry changed a file"
    finally:
        fixed = pyinfra("deploys/site.py", "--limit", "calypso")
    assert fixed.returncode == 0, fixed.output[-4000:]
    assert digests("calypso", paths) != edited
    assert "# edited by hand" not in ssh("calypso", f"sudo cat {' '.join(paths)}").stdout


def secrets_with_token(key: str) -> Path:
    """The lab's secrets with `key`'s credentials.json turned into a connector token."""
    values = yaml.safe_load(SECRETS_FILE.read_text())
    values[key] = tunnel_credentials.parse(values[key], key=key).token()
    fd, name = tempfile.mkstemp(prefix="oceanid-secrets-", suffix=".yaml")
    with os.fdopen(fd, "w") as out:  # mkstemp: 0600, as the secrets loader insists
        yaml.safe_dump(values, out)
    return Path(name)


def test_credential_switch_shows_every_file_and_removes_the_old_shape(converged):
    """calypso2's credential moves from credentials.json to a connector token: the dry run
    names the config, the new token file (content not shown), the unit and the old JSON's
    removal; the converge does exactly that and leaves no stale secret on disk; switching
    back does the reverse, and then nothing changes."""
    key = "cloudflareNode2TunnelToken"
    values = yaml.safe_load(SECRETS_FILE.read_text())
    tunnel_id = tunnel_credentials.parse(values[key], key=key).tunnel_id
    json_file, token_file = f"/etc/cloudflared/{tunnel_id}.json", "/etc/cloudflared/token"
    assert ssh("calypso2", f"sudo test -f {json_file}").returncode == 0
    switched = secrets_with_token(key)
    env = {"SECRETS_FILE": str(switched)}
    try:
        preview = dry_run("--limit", "calypso2", env=env)
        assert preview.returncode == 0, preview.output[-4000:]
        for path in (CONFIG, token_file, UNIT, json_file):
            assert path in preview.output, f"the dry run does not name {path}"
        token = yaml.safe_load(switched.read_text())[key]
        assert token not in preview.output
        for secret_key, line in lab_secret_lines():
            assert line not in preview.output, f"{secret_key} is in the dry run"
        assert ssh("calypso2", f"sudo test -e {token_file}").returncode == 1, "--dry wrote"

        run = pyinfra("deploys/site.py", "--limit", "calypso2", env=env)
        assert run.returncode == 0, run.output[-4000:]
        assert ssh("calypso2", f"sudo test -e {json_file}").returncode == 1, "stale JSON kept"
        mode = ssh("calypso2", f"sudo stat -c '%a %U' {token_file}").stdout.strip()
        assert mode == "600 root"
        assert ssh("calypso2", "systemctl is-active cloudflared-node").stdout.strip() == "active"
    finally:
        switched.unlink()
        back = pyinfra("deploys/site.py", "--limit", "calypso2")
    assert back.returncode == 0, back.output[-4000:]
    assert ssh("calypso2", f"sudo test -e {token_file}").returncode == 1, "stale token kept"
    assert ssh("calypso2", f"sudo test -f {json_file}").returncode == 0
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed
