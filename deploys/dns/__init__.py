"""Public names: each host makes sure its own name points at its own tunnel.

The k3s server owns `label.<base>` (the cluster tunnel), each GPU host its
`<public_name>.<base>` (its node tunnel) and, on the `triton` kind, the ML-backend adapter's
name beside it (`ml.<base>` for `gpu`, `mlN` for `gpuN`: oceanid/ingress.py `public_names`), on
the same tunnel, and, with `access: service_token`, the GPU name's Cloudflare Access
application and policy. The Cloudflare API is called from the machine
running pyinfra; the operation reads the zone while it is prepared, so `--dry` lists
what would change, and it writes nothing when there is a conflict anywhere in its plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploys.cluster_apps import cluster_connector
from oceanid.ingress import node_ingress, public_names
from oceanid.model import K3S_SERVERS, HostPlan, Site

if TYPE_CHECKING:
    from oceanid.cloudflare_dns import CloudflareAccess, DesiredRecord

# The Cloudflare SDK (about 0.2 s of CPU to import) is imported where it is used, not when
# deploys/site.py loads: by then each host's SSH read is under way, and the import overlaps it.


def records(plan: HostPlan, site: Site) -> tuple[list[DesiredRecord], dict]:
    """This host's records, and the ingress of its tunnels (applied where Cloudflare manages
    a tunnel's configuration; a locally-managed tunnel keeps its config file's)."""
    from oceanid.cloudflare_dns import DesiredRecord, tunnel_target

    base = plan.settings.base_domain
    wanted: list[DesiredRecord] = []
    ingress: dict = {}
    if K3S_SERVERS in plan.roles and site.cluster_tunnel_id:
        wanted.append(DesiredRecord(f"label.{base}", tunnel_target(site.cluster_tunnel_id)))
        if plan.settings.cluster_apps.cluster_connector:
            # the deploy's connector's own rules: where Cloudflare holds a configuration for the
            # cluster tunnel (a stale one from an earlier stack, say), cloudflared runs that one
            ingress[site.cluster_tunnel_id] = cluster_connector.ingress(plan.settings)
    if plan.gpu is not None and plan.node_tunnel_id:
        name = f"{plan.gpu.public_name}.{base}"
        for public in public_names(name, plan.gpu.service):  # the GPU name, the adapter's
            wanted.append(DesiredRecord(public, tunnel_target(plan.node_tunnel_id)))
        # the same rules as the connector's own config.yaml (deploys/gpu_host): where the tunnel
        # is remotely managed, cloudflared runs these instead of the file's
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
    """Every public name the site's settings give: label, each GPU host's name and its
    adapter's."""
    base = plan.settings.base_domain
    names = {f"label.{base}"}
    for h in plan.settings.hosts.values():
        if h.gpu:
            names |= set(public_names(f"{h.gpu.public_name}.{base}", h.gpu.service))
    return names


def deploy(plan: HostPlan, site: Site) -> None:
    settings = plan.settings
    if not settings.manage_dns:
        return
    wanted, ingress = records(plan, site)
    if not wanted:
        return
    from oceanid.cloudflare_dns import CloudflareAccess
    from operations import cloudflare

    access = CloudflareAccess(
        api_token=site.secrets["cloudflareApiToken"],
        account_id=site.secrets["cloudflareAccountId"],
        zone_id=site.secrets["cloudflareZoneId"],
        base_url=settings.cloudflare_api_base_url,
    )
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
        "domain": f"{plan.gpu.public_name}.{plan.settings.base_domain}",
        "token": ServiceTokenRef(site.secrets[ID_KEY]),
        "app_name": f"oceanid {plan.name}",
    }
    cloudflare.read_access(**guarded)
    cloudflare.access_application(name=f"Cloudflare Access for {guarded['domain']}", **guarded)
