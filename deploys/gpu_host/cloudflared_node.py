"""calypso's own tunnel: the pinned cloudflared, its config, its credential, its unit.

The credential keeps the shape it arrived in: a connector token goes to a token file
passed with `--token-file`, a credentials.json to `credentials-file:`. Either way it is a
0600 root file, never in the unit or on the command line.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

import yaml
from pyinfra import host, logger
from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.api.host import Host
from pyinfra.api.state import State

from deploys.cluster_apps.node_tunnel import NAMESPACE as NODE_TUNNEL_NAMESPACE
from facts.cloudflared import CloudflaredReady
from oceanid.ingress import node_ingress
from oceanid.model import HostPlan, Site
from operations import services
from operations.failure import refuse
from operations.managed import DesiredState, ManagedBinary, ManagedDirectory, ManagedFile

if TYPE_CHECKING:
    from oceanid.cloudflare_dns import CloudflareAccess

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


def add_to(manifest: DesiredState, plan: HostPlan) -> list[str]:
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


#: How long the host connector waits for another connector on its tunnel before it stops,
#: and how often the API is asked meanwhile.
HAND_OVER_TIMEOUT = 120.0
HAND_OVER_INTERVAL = 5.0


def _other_connector_up(
    state: State,
    host: Host,
    access: CloudflareAccess,
    tunnel_id: str,
    own_id: str | None,
    unit_name: str,
    timeout: float,
    interval: float,
    check: str,
) -> bool:
    """Callback, run on the operator's machine just before the stop: the API must show a
    connected connector other than this host's. False (the operation fails, the unit keeps
    running) when none appears within ``timeout``."""
    from oceanid.cloudflare_dns import CloudflareError, wait_for_other_connector

    try:
        other = wait_for_other_connector(
            access.client(),
            access.account_id,
            tunnel_id,
            own_id,
            timeout=timeout,
            interval=interval,
            say=host.log,
            check=check,
        )
    except CloudflareError as error:
        host.log_styled(f"{unit_name} keeps running: {error}", fg="red", log_func=logger.error)
        return False
    host.log(f"Cloudflare: connector {other} serves tunnel {tunnel_id}; stopping {unit_name}")
    return True


@operation()
def stopped(
    manifest: DesiredState,
    unit_name: str,
    access: CloudflareAccess,
    tunnel_id: str,
    metrics_address: str,
    timeout: float = HAND_OVER_TIMEOUT,
    interval: float = HAND_OVER_INTERVAL,
    check: str = "that the cluster's connector runs on this node",
):
    """
    Stop and disable the host connector once another connector serves its tunnel.

    + manifest: the GPU host's DesiredState (its units include `unit_name`)
    + unit_name: the connector's unit
    + access: ``CloudflareAccess`` (API token, account id): the tunnel's connectors are read
      from the machine running pyinfra
    + tunnel_id: the tunnel the unit serves
    + metrics_address: the unit's ``metrics:`` address, whose ``/ready`` gives its connector ID
    + timeout: seconds to wait for another connector before failing, the unit left running
    + interval: seconds between two reads of the tunnel's connections
    + check: what the failure tells the operator to check

    Make before break: a running unit stops only after the API lists a connected connector
    whose ID is not this unit's (cloudflared's ``/ready`` answers ``connectorId``; the API's
    ``/connections`` lists each connector by that ID). A unit enabled but not running is only
    disabled: it serves nothing.
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
    if active:
        ready = host.get_fact(CloudflaredReady, metrics_address=metrics_address)
        own_id = ready["connector_id"] if ready else None
        if ready and ready["status"] == 200 and not own_id:
            yield from refuse(
                f"{unit_name} is connected but its /ready at {metrics_address} names no "
                "connectorId, so its connector cannot be told from the cluster's; it keeps "
                "running: check that the host runs the pinned cloudflared"
            )
            return
        if not host.state.is_executing:
            host.log(
                f"would wait for another connector on tunnel {tunnel_id}, then stop {unit_name}"
            )
        yield FunctionCommand(
            _other_connector_up,
            (access, tunnel_id, own_id, unit_name, timeout, interval, check),
            {},
        )
    yield StringCommand("systemctl", "disable", "--now", unit_name)


def deploy(manifest: DesiredState, inputs: list[str], plan: HostPlan) -> None:
    """The pinned cloudflared and the connector's unit, restarted when its binary, config or
    credential changed; a new cloudflared that does not come up is rolled back. With the
    tunnel in the cluster, the unit is left to `hand_over`, queued after the cluster's part
    (its files stay, so switching back starts it again at once)."""
    if in_cluster(plan):
        return
    services.binary_service(
        manifest,
        name="cloudflared-node",
        unit_name=UNIT,
        unit_file=UNIT_FILE,
        inputs=inputs,
    )


def hand_over(manifest: DesiredState, plan: HostPlan, site: Site) -> None:
    """With the tunnel in the cluster, stop the host connector once the cluster's serves it.

    Queue it after the cluster's part of the run (deploys/site.py: after k3s), so that the
    DaemonSet exists before the wait. The reverse switch needs no wait: `deploy` starts the
    host connector first, and the DaemonSet is removed by the server's part afterwards."""
    if not in_cluster(plan):
        return
    from oceanid.cloudflare_dns import CloudflareAccess

    access = CloudflareAccess(
        api_token=site.secrets["cloudflareApiToken"],
        account_id=site.secrets["cloudflareAccountId"],
        zone_id=site.secrets.get("cloudflareZoneId") or "",
        base_url=plan.settings.cloudflare_api_base_url,
    )
    stopped(
        name="cloudflared-node stopped (tunnel served by the cluster)",
        manifest=manifest,
        unit_name=UNIT,
        access=access,
        tunnel_id=plan.node_tunnel_id,
        metrics_address=plan.settings.cloudflared_metrics_address,
        check=(
            f"the cluster's connector pod on {plan.name} (kubectl -n {NODE_TUNNEL_NAMESPACE} "
            "get pods -o wide; kubectl logs of that pod) and that k3s applied its manifest"
        ),
    )
