"""Public names: each host makes sure its own name points at its own tunnel.

The k3s server owns Label Studio's name (`label.<base>`, on the cluster tunnel), each GPU host
its `<public_name>.<base>` (its node tunnel) and, on the `triton` kind, the ML-backend adapter's
name beside it (`ml.<base>` for `gpu`, `mlN` for `gpuN`), on the same tunnel, and, with
`access: service_token`, the GPU name's Cloudflare Access application and policy. Every name
comes from oceanid/names.py, as the connectors' rules and smoke's checks do. The Cloudflare
API is called from the machine running pyinfra; the operation reads the zone while it is
prepared, so `--dry` lists what would change, and it writes nothing when there is a conflict
anywhere in its plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploys.cluster_apps import cluster_connector
from oceanid import names
from oceanid.ingress import node_ingress
from oceanid.model import K3S_SERVERS, HostPlan, Site

if TYPE_CHECKING:
    from oceanid.cloudflare_dns import CloudflareAccess, DesiredRecord

# The Cloudflare SDK (about 0.2 s of CPU to import) is imported where it is used, not when
# deploys/site.py loads: by then each host's SSH read is under way, and the import overlaps it.


def records(plan: HostPlan, site: Site) -> tuple[list[DesiredRecord], dict]:
    """This host's records, and the ingress of its tunnels (applied where Cloudflare manages
    a tunnel's configuration; a locally-managed tunnel keeps its config file's)."""
    from oceanid.cloudflare_dns import DesiredRecord, tunnel_target

    tunnels = {"cluster": site.cluster_tunnel_id, "node": plan.node_tunnel_id}
    wanted = [
        DesiredRecord(public.fqdn, tunnel_target(tunnels[public.tunnel]))
        for public in names.plan_names(plan)  # Label Studio's; the GPU name, the adapter's
        if tunnels[public.tunnel]
    ]
    ingress: dict = {}
    cluster = K3S_SERVERS in plan.roles and site.cluster_tunnel_id
    if cluster and plan.settings.cluster_apps.cluster_connector:
        # the deploy's connector's own rules: where Cloudflare holds a configuration for the
        # cluster tunnel (a stale one from an earlier stack, say), cloudflared runs that one
        ingress[site.cluster_tunnel_id] = cluster_connector.ingress(plan.settings)
    if plan.gpu is not None and plan.node_tunnel_id:
        # the same rules as the connector's own config.yaml (deploys/gpu_host): where the tunnel
        # is remotely managed, cloudflared runs these instead of the file's
        name = names.gpu_name(plan.settings, plan.gpu, plan.name)
        ingress[plan.node_tunnel_id] = node_ingress(name, plan.gpu.service)
    return wanted, ingress


def tunnel_keys(plan: HostPlan, site: Site) -> dict[str, str]:
    """Which ESC key each of this host's tunnel IDs came from, for the error when one is gone."""
    keys = {}
    if K3S_SERVERS in plan.roles and site.cluster_tunnel_id:
        keys[site.cluster_tunnel_id] = "cloudflareTunnelId"
    if plan.gpu is not None and plan.node_tunnel_id:
        keys[plan.node_tunnel_id] = plan.gpu.tunnel_id_key
    return keys


def site_names(plan: HostPlan) -> set[str]:
    """Every public name the site's settings give: Label Studio's, each GPU host's name and
    its adapter's."""
    return {public.fqdn for public in names.public_names(plan.settings)}


def deploy(plan: HostPlan, site: Site) -> None:
    settings = plan.settings
    if not settings.manage_dns:
        return
    wanted, ingress = records(plan, site)
    if not wanted:
        return
    from oceanid.cloudflare_dns import CloudflareAccess
    from operations import cloudflare

    access = CloudflareAccess.of(settings, site.secrets)
    routes = {
        "access": access,
        "records": wanted,
        "ingress": ingress,
        "takeover": list(settings.cloudflare_takeover_records),
        "tunnel_keys": tunnel_keys(plan, site),
    }
    # Read now, while the deploy file loads: the hosts' API reads overlap their SSH facts
    # instead of queueing up behind every other operation; the operation plans from this read.
    cloudflare.read_routes(**routes)
    cloudflare.routes(
        name="Cloudflare DNS records and tunnel routes",
        others=sorted(site_names(plan) - {record.name for record in wanted}),
        **routes,
    )
    guard_gpu_name(plan, site, access)


def guard_gpu_name(plan: HostPlan, site: Site, access: CloudflareAccess) -> None:
    """`access: service_token`: only the ESC service token passes Cloudflare's edge to this
    host's GPU name (oceanid/cloudflare_access.py). Read now, like the routes."""
    if plan.gpu is None or plan.gpu.access != "service_token":
        return
    from oceanid.cloudflare_access import ID_KEY, ServiceTokenRef
    from operations import cloudflare

    guarded = {
        "access": access,
        "domain": names.gpu_name(plan.settings, plan.gpu, plan.name),
        "token": ServiceTokenRef(site.secrets[ID_KEY]),
        "app_name": f"oceanid {plan.name}",
    }
    cloudflare.read_access(**guarded)
    cloudflare.access_application(name=f"Cloudflare Access for {guarded['domain']}", **guarded)
