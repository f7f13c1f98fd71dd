"""calypso's own tunnel: the pinned cloudflared, its config, its credential, its unit.

The credential keeps the shape it arrived in: a connector token goes to a token file
passed with `--token-file`, a credentials.json to `credentials-file:`. Either way it is a
0600 root file, never in the unit or on the command line.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

import yaml
from pyinfra import host
from pyinfra.api import StringCommand, operation

from oceanid.ingress import node_ingress
from oceanid.preflight import HostPlan
from operations import services
from operations.failure import refuse
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
    """The connector's config.yaml: the public name's rules (oceanid/ingress.py: Triton's
    inference plane only, or every path of an `http` server), then a 404."""
    settings, gpu = plan.settings, plan.gpu
    document: dict = {"tunnel": plan.node_tunnel_id}
    if plan.node_credential.kind == "credentials-file":
        document["credentials-file"] = credential_path(plan)
    document.update(
        {
            "protocol": settings.tunnel_protocol,
            "no-autoupdate": True,
            "metrics": settings.cloudflared_metrics_address,
            "ingress": node_ingress(f"{gpu.public_name}.{settings.base_domain}", gpu.service),
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


def in_cluster(plan: HostPlan) -> bool:
    """Whether the cluster runs this host's tunnel (`node_tunnel_mode: daemonset`, with k3s
    provisioned): then the host connector must not run, or two connectors serve one tunnel."""
    return plan.settings.node_tunnel_in_cluster()


@operation()
def stopped(manifest: Manifest, unit_name: str):
    """
    Stop and disable the host connector while the cluster's DaemonSet serves the tunnel.

    + manifest: the GPU host's Manifest (its units include `unit_name`)
    + unit_name: the connector's unit
    """
    if manifest.unreadable():
        yield from refuse(manifest.unreadable_message())
        return
    now = manifest.state()["units"].get(unit_name) or {}
    enabled = now.get("enabled") in ("enabled", "enabled-runtime")
    active = now.get("active") in ("active", "activating", "reloading")
    if not enabled and not active:
        host.noop(f"{unit_name} is stopped and disabled (the cluster's DaemonSet serves it)")
        return
    yield StringCommand("systemctl", "disable", "--now", unit_name)


def deploy(manifest: Manifest, inputs: list[str], plan: HostPlan) -> None:
    """The pinned cloudflared and the connector's unit, restarted when its binary, config or
    credential changed; a new cloudflared that does not come up is rolled back. With the
    tunnel in the cluster, the unit is stopped and disabled instead (its files stay, so
    switching back starts it again at once)."""
    if in_cluster(plan):
        stopped(
            name="cloudflared-node stopped (tunnel served by the cluster)",
            manifest=manifest,
            unit_name=UNIT,
        )
        return
    services.binary_service(
        manifest,
        name="cloudflared-node",
        unit_name=UNIT,
        unit_file=UNIT_FILE,
        inputs=inputs,
    )
