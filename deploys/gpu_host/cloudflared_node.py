"""calypso's own tunnel: the pinned cloudflared, its config, its credential, its unit.

The credential keeps the shape it arrived in: a connector token goes to a token file
passed with `--token-file`, a credentials.json to `credentials-file:`. Either way it is a
0600 root file, never in the unit or on the command line.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

import yaml

from deploys.cluster_apps.node_tunnel import NAMESPACE as NODE_TUNNEL_NAMESPACE
from oceanid import names
from oceanid.ingress import node_ingress
from oceanid.model import HostPlan, Site
from operations import cloudflared, services
from operations.managed import DesiredState, ManagedBinary, ManagedDirectory, ManagedFile

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
            "ingress": node_ingress(names.gpu_name(settings, gpu, plan.name), gpu.service),
        }
    )
    return document


def unit(plan: HostPlan) -> str:
    token_args = f" --token-file {TOKEN}" if plan.node_credential.kind == "token" else ""
    return Template((HERE / "cloudflared-node.service").read_text()).substitute(
        public_host=names.gpu_name(plan.settings, plan.gpu, plan.name),
        binary=BINARY,
        config=CONFIG,
        token_args=token_args,
    )


def add_to(desired: DesiredState, plan: HostPlan) -> list[str]:
    """Declare the connector's files; return the paths whose change restarts it."""
    artifact = plan.settings.cloudflared
    header = "# Managed by oceanid-deploys (deploys/gpu_host); local edits are overwritten.\n"
    desired.directories.append(ManagedDirectory(CONFIG_DIR, "0755"))
    desired.binaries.append(
        ManagedBinary(BINARY, artifact.url, artifact.version, dict(artifact.sha256))
    )
    desired.files += [
        ManagedFile(CONFIG, (header + yaml.safe_dump(config(plan), sort_keys=False)).encode()),
        ManagedFile(
            credential_path(plan),
            plan.node_credential.file_content().encode(),
            mode="0600",
            secret=True,
        ),
        ManagedFile(UNIT_FILE, unit(plan).encode()),
    ]
    desired.units.append(UNIT)
    return [BINARY, CONFIG, credential_path(plan)]


def in_cluster(plan: HostPlan) -> bool:
    """Whether the cluster runs this host's tunnel (`node_tunnel_mode: daemonset`, with k3s
    provisioned): then the host connector must not run, or two connectors serve one tunnel."""
    return plan.settings.node_tunnel_in_cluster()


def deploy(desired: DesiredState, inputs: list[str], plan: HostPlan) -> None:
    """The pinned cloudflared and the connector's unit, restarted when its binary, config or
    credential changed; a new cloudflared that does not come up is rolled back. With the
    tunnel in the cluster, the unit is left to `hand_over`, queued after the cluster's part
    (its files stay, so switching back starts it again at once)."""
    if in_cluster(plan):
        return
    services.binary_service(
        desired,
        name="cloudflared-node",
        unit_name=UNIT,
        unit_file=UNIT_FILE,
        inputs=inputs,
    )


def hand_over(desired: DesiredState, plan: HostPlan, site: Site) -> None:
    """With the tunnel in the cluster, stop the host connector once the cluster's serves it.

    Queue it after the cluster's part of the run (deploys/site.py: after k3s), so that the
    DaemonSet exists before the wait. The reverse switch needs no wait: `deploy` starts the
    host connector first, and the DaemonSet is removed by the server's part afterwards."""
    if not in_cluster(plan):
        return
    from oceanid.cloudflare_dns import CloudflareAccess

    access = CloudflareAccess.of(plan.settings, site.secrets)
    cloudflared.stopped(
        name="cloudflared-node stopped (tunnel served by the cluster)",
        desired=desired,
        unit_name=UNIT,
        access=access,
        tunnel_id=plan.node_tunnel_id,
        metrics_address=plan.settings.cloudflared_metrics_address,
        check=(
            f"the cluster's connector pod on {plan.name} (kubectl -n {NODE_TUNNEL_NAMESPACE} "
            "get pods -o wide; kubectl logs of that pod) and that k3s applied its manifest"
        ),
    )
