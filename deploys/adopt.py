"""`make adopt-plan`: what the first deploy would adopt, replace or refuse, and what to remove
from the Pulumi stack's state so that the two never fight over one thing (docs/cutover.md).

Read-only. It asks the Cloudflare API what the deploy's own planning asks (the same
`oceanid.cloudflare_dns` plan, from the same records and ingress `deploys/dns` declares):

- DNS records: ADOPT (already as wanted: left unchanged), CREATE, REPLACE (a record the deploy
  made, or one listed in `cloudflare_takeover_records`), REFUSE (someone else's: the deploy
  stops, naming it, until it is listed there or moved);
- tunnels and their routes: ADOPT (the tunnel exists; a remotely managed one's ingress already
  as wanted), REPLACE (its ingress is put as the deploy's), LOCAL (the connector's config.yaml,
  written by the deploy, routes it), REFUSE (missing or deleted: `make tunnels`);
- k3s on the nodes: from the settings (what the full deploy writes and replaces); with
  `--hosts`, each node's installed k3s read over SSH as `make status` reads it.

With `--pulumi-export FILE` (the output of `pulumi stack export`), each resource of the stack
that manages one of these things is named with its `pulumi state delete '<urn>'` line, grouped
by type: removed from the state, Pulumi forgets it and leaves it as it is, and the deploy owns
it from then on.

Exit status (oceanid/exitcodes.py): 0 nothing would be refused, 1 something would (the deploy
would stop there), 3 bad input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from deploys import dns
from oceanid import exitcodes, preflight
from oceanid.model import K3S_AGENTS, K3S_SERVERS, Site

#: Pulumi type tokens (pulumi-cloudflare v5 and v6, pulumi-command) of what the deploy owns.
DNS_TYPES = ("cloudflare:index/record:Record", "cloudflare:index/dnsRecord:DnsRecord")
TUNNEL_CONFIG_TYPES = (
    "cloudflare:index/tunnelConfig:TunnelConfig",
    "cloudflare:index/zeroTrustTunnelCloudflaredConfig:ZeroTrustTunnelCloudflaredConfig",
)
TUNNEL_TYPES = (
    "cloudflare:index/tunnel:Tunnel",
    "cloudflare:index/zeroTrustTunnelCloudflared:ZeroTrustTunnelCloudflared",
)
COMMAND_TYPES = ("command:remote:Command",)


def cloudflare_lines(site: Site) -> tuple[list[str], bool, set[str], set[str]]:
    """(lines, refused, the public names, the tunnel IDs) from one read of the API."""
    from oceanid import cloudflare_dns as cf

    first = next(iter(site.hosts.values())).settings
    if not first.manage_dns:
        return (
            ["DNS and tunnels: manage_dns is off; the deploy touches neither"],
            False,
            set(),
            set(),
        )
    records, ingress, keys = [], {}, {}
    for plan in site.hosts.values():
        wanted, tunnels = dns.records(plan, site)
        records += wanted
        ingress.update(tunnels)
        keys.update(dns.tunnel_keys(plan, site))
    access = cf.CloudflareAccess.of(first, site.secrets)
    client = access.client()
    lines, refused = [], False
    zone = cf.plan(client, access.zone_id, records, first.cloudflare_takeover_records)
    verbs = {"adopt": "ADOPT", "create": "CREATE", "update": "REPLACE"}
    for action in zone.actions:
        lines.append(f"{verbs[action.kind]} DNS {action.describe()}")
    for conflict in zone.conflicts:
        refused = True
        lines.append(f"REFUSE DNS {conflict.message()}")
    for orphan in zone.orphans:
        lines.append(
            f"LEAVE DNS {orphan.name} {orphan.describe()}: made by the deploy, no longer wanted"
        )
    for tunnel_id, key in keys.items():
        try:
            if tunnel_id in ingress:
                plan = cf.plan_tunnel_config(
                    client, access.account_id, tunnel_id, ingress[tunnel_id], key
                )
                verb = {"noop": "ADOPT", "update": "REPLACE", "local": "LOCAL"}[plan.kind]
                lines.append(f"{verb} {plan.describe()}")
            else:
                tunnel = cf.get_tunnel(client, access.account_id, tunnel_id, key)
                lines.append(
                    f"ADOPT tunnel {tunnel.get('name') or tunnel_id} ({tunnel_id}, ESC {key})"
                )
        except cf.CloudflareError as error:
            refused = True
            lines.append(f"REFUSE {error} (`make tunnels` creates a missing one)")
    names = {record.name for record in records}
    return lines, refused, names, set(keys)


def k3s_lines(site: Site, installed: dict[str, str | None] | None) -> list[str]:
    """What the full deploy does about k3s on each node; `installed`: versions read (--hosts)."""
    lines = []
    for name, plan in site.hosts.items():
        if not {K3S_SERVERS, K3S_AGENTS} & plan.roles:
            continue
        settings = plan.settings
        pinned = settings.k3s.version
        if not settings.enable_node_provisioning:
            lines.append(
                f"KEEP k3s on {name}: provisioning is off (make deploy-simple); k3s is read, "
                "never changed; the cluster apps go to a running server"
            )
            continue
        have = (installed or {}).get(name, "unknown")
        unit = "k3s.service" if K3S_SERVERS in plan.roles else "k3s-agent.service"
        if have is None:
            lines.append(f"INSTALL k3s {pinned} on {name} ({unit}, config.yaml, token files)")
        elif have == "unknown":
            lines.append(
                f"REPLACE k3s on {name}: the pinned {pinned} binary, {unit}, "
                "/etc/rancher/k3s/config.yaml and the token files become the deploy's (one "
                "restart); a version more than one minor away, or a SQLite datastore on the "
                "first server, is refused; `--hosts` reads what is installed"
            )
        elif have.split("+")[0] == pinned.split("+")[0]:
            lines.append(
                f"ADOPT k3s {have} on {name}: the binary stays; {unit}, config.yaml and the "
                "token files become the deploy's (one restart where they differ)"
            )
        else:
            lines.append(
                f"REPLACE k3s {have} on {name} with {pinned} (one minor at a time; the old "
                "binary kept beside it and put back if the new one is not healthy)"
            )
    return lines


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def pulumi_lines(export: dict, names: set[str], tunnel_ids: set[str], base: str) -> list[str]:
    """`pulumi state delete` lines for the stack's resources the deploy now owns."""
    groups: dict[str, list[str]] = {}
    for resource in (export.get("deployment") or {}).get("resources") or []:
        kind, urn = resource.get("type", ""), resource.get("urn", "")
        fields = {**(resource.get("inputs") or {}), **(resource.get("outputs") or {})}
        text = set(_strings(fields))
        if kind in DNS_TYPES:
            name = str(fields.get("name", "")).rstrip(".").lower()
            full = name if name.endswith(base) else f"{name}.{base}"
            if full in names:
                groups.setdefault(f"DNS records ({kind})", []).append(urn)
        elif kind in TUNNEL_CONFIG_TYPES and text & tunnel_ids:
            groups.setdefault(f"tunnel routes ({kind})", []).append(urn)
        elif kind in TUNNEL_TYPES and text & tunnel_ids:
            groups.setdefault(
                f"tunnels ({kind}; the tunnel itself stays: the deploy never deletes one)", []
            ).append(urn)
        elif kind in COMMAND_TYPES and any("k3s" in s for s in text):
            groups.setdefault(f"k3s installs on the nodes ({kind})", []).append(urn)
    lines = []
    for group, urns in groups.items():
        lines.append(f"# {group}")
        lines += [f"pulumi state delete --yes '{urn}'" for urn in urns]
    return lines or ["# the export holds nothing the deploy manages"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = exitcodes.inventory_parser(
        prog="python -m deploys.adopt",
        description="What the first deploy would adopt, replace or refuse; what to remove from "
        "the Pulumi stack's state. Reads only.",
    )
    parser.add_argument(
        "--pulumi-export", type=Path, metavar="FILE", help="`pulumi stack export` output"
    )
    parser.add_argument("--hosts", action="store_true", help="read each node's k3s over SSH")
    args = parser.parse_args(argv)
    try:
        site = preflight.check(
            preflight.views_from_inventory(preflight.load_inventory(args.inventory))
        )
        export = json.loads(args.pulumi_export.read_text()) if args.pulumi_export else None
    except preflight.PreflightError as error:
        for line in error.problems:
            print(f"adopt-plan: {line}", file=sys.stderr)
        return exitcodes.USAGE
    except (OSError, ValueError, SystemExit) as error:
        print(f"adopt-plan: {error}", file=sys.stderr)
        return exitcodes.USAGE
    from oceanid.cloudflare_dns import CloudflareError

    try:
        lines, refused, names, tunnel_ids = cloudflare_lines(site)
    except CloudflareError as error:
        print(f"adopt-plan: {error}", file=sys.stderr)
        return exitcodes.FAILED
    installed = None
    if args.hosts:
        from oceanid.status import collect

        report = collect(args.inventory)
        installed = {
            preflight.short_name(host): (found.get("k3s") or {}).get("version")
            for host, found in report.items()
            if "k3s" in found
        }
    for line in [*lines, *k3s_lines(site, installed)]:
        print(line)
    base = next(iter(site.hosts.values())).settings.base_domain
    print("")
    if export is None:
        print(
            "Pulumi: run `pulumi stack export > stack.json` in the old stack and "
            "`make adopt-plan PULUMI_EXPORT=stack.json` for the `pulumi state delete` lines"
        )
    else:
        print(
            "Pulumi: remove these from the stack's state (nothing in Cloudflare or on a host "
            "changes):"
        )
        for line in pulumi_lines(export, names, tunnel_ids, base):
            print(line)
    return exitcodes.FAILED if refused else exitcodes.OK


if __name__ == "__main__":
    raise SystemExit(main())
