"""calypso's own tunnel: the pinned cloudflared, its config, its credential, its unit.

The credential keeps the shape it arrived in: a connector token goes to a token file
passed with `--token-file`, a credentials.json to `credentials-file:`. Either way it is a
0600 root file, never in the unit or on the command line.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

import yaml

from oceanid.preflight import HostPlan
from operations import services
from operations.managed import ManagedBinary, ManagedDirectory, ManagedFile, Manifest

HERE = Path(__file__).parent
BINARY = "/usr/local/bin/cloudflared"
CONFIG_DIR = "/etc/cloudflared"
CONFIG = f"{CONFIG_DIR}/config.yaml"
TOKEN = f"{CONFIG_DIR}/token"
UNIT = "cloudflared-node.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"


def credential_path(plan: HostPlan) -> str:
    cred = plan.node_credential
    return TOKEN if cred.kind == "token" else f"{CONFIG_DIR}/{cred.tunnel_id}.json"


def config(plan: HostPlan) -> dict:
    """The connector's config.yaml: local ingress to the GPU service, then a 404."""
    settings, gpu = plan.settings, plan.gpu
    document: dict = {"tunnel": plan.node_tunnel_id}
    if plan.node_credential.kind == "credentials-file":
        document["credentials-file"] = credential_path(plan)
    document.update(
        {
            "protocol": settings.tunnel_protocol,
            "no-autoupdate": True,
            "metrics": settings.cloudflared_metrics_address,
            "ingress": [
                {
                    "hostname": f"{gpu.public_name}.{settings.base_domain}",
                    "service": f"http://localhost:{gpu.service.port}",
                },
                {"service": "http_status:404"},
            ],
        }
    )
    return document


def unit(plan: HostPlan) -> str:
    token_args = f" --token-file {TOKEN}" if plan.node_credential.kind == "token" else ""
    return Template((HERE / "cloudflared-node.service").read_text()).substitute(
        public_host=f"{plan.gpu.public_name}.{plan.settings.base_domain}",
        binary=BINARY,
        config=CONFIG,
        token_args=token_args,
    )


def add_to(manifest: Manifest, plan: HostPlan) -> list[str]:
    """Declare the connector's files; return the paths whose change restarts it."""
    artifact = plan.settings.cloudflared
    header = "# Managed by oceanid-deploys (deploys/gpu_host); local edits are overwritten.\n"
    manifest.directories.append(ManagedDirectory(CONFIG_DIR, "0755"))
    manifest.binaries.append(
        ManagedBinary(BINARY, artifact.url, artifact.version, dict(artifact.sha256))
    )
    manifest.files += [
        ManagedFile(CONFIG, (header + yaml.safe_dump(config(plan), sort_keys=False)).encode()),
        ManagedFile(
            credential_path(plan),
            plan.node_credential.file_content().encode(),
            mode="0600",
            secret=True,
        ),
        ManagedFile(UNIT_FILE, unit(plan).encode()),
    ]
    manifest.units.append(UNIT)
    return [BINARY, CONFIG, credential_path(plan)]


def deploy(manifest: Manifest, inputs: list[str]) -> None:
    """The pinned cloudflared and the connector's unit, restarted when its binary, config or
    credential changed; a new cloudflared that does not come up is rolled back."""
    services.binary_service(
        manifest,
        name="cloudflared-node",
        unit_name=UNIT,
        unit_file=UNIT_FILE,
        inputs=inputs,
    )
