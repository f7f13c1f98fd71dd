"""`make tunnels`: every Cloudflare Tunnel the settings name, made where Cloudflare lacks it.

The deploy routes names to tunnels and runs their connectors, but a tunnel must exist first:
the cluster's (ESC `cloudflareTunnelId`, whenever a k3s server is in the inventory) and one per
GPU host (its `tunnel_id_key`). For each, this finds the tunnel by the ID ESC holds, else by
its name (`oceanid-cluster`, `oceanid-<host>`), else creates it through the API (`POST
/accounts/{id}/cfd_tunnel` with `name` and `config_src`: cloudflare SDK 5.9
`resources/zero_trust/tunnels/cloudflared/cloudflared.py` `create`), and prints the `esc env
set` commands that store what ESC lacks. The ID is no secret and is printed; the connector
token (`GET …/cfd_tunnel/{id}/token`) is printed only with `--show <credential key>`, alone on
stdout, so it can go straight into `esc env set … --secret "$(make -s tunnels SHOW=…)"`
without passing through a log or the shell's history.

Exit status (oceanid/exitcodes.py): 0 every tunnel exists (made now or before), 1 the API
refused or failed, 3 bad input (inventory, settings, the API token or account missing).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from oceanid import exitcodes, model, preflight, tunnel_credentials
from oceanid import secrets as secrets_mod
from oceanid.settings import Settings, SettingsError, from_data, short_name

CLUSTER_ID_KEY, CLUSTER_CREDENTIAL_KEY = "cloudflareTunnelId", "cloudflareTunnelToken"


@dataclass(frozen=True)
class Wanted:
    """One tunnel the settings name: its name in Cloudflare and its two ESC keys."""

    name: str
    id_key: str
    credential_key: str


def wanted(views: Sequence[model.HostView], settings: Settings) -> list[Wanted]:
    """The cluster's tunnel (with a k3s server) and one per GPU host, in inventory order."""
    out = []
    if any(model.K3S_SERVERS in view.groups for view in views):
        out.append(Wanted("oceanid-cluster", CLUSTER_ID_KEY, CLUSTER_CREDENTIAL_KEY))
    for view in views:
        name = short_name(view.name)
        gpu = settings.host(name).gpu
        if gpu is not None:
            out.append(Wanted(f"oceanid-{name}", gpu.tunnel_id_key, gpu.tunnel_credential_key))
    return out


def _api(client: Any, method: str, path: str, body: Any = None) -> Any:
    """One call through the SDK's own transport (auth, retries, typed errors), as
    oceanid/cloudflare_dns.py's tunnel calls go: plain JSON, without the Zero Trust tree."""
    if method == "GET":
        envelope = client.get(path, cast_to=object)
    else:
        envelope = client.post(path, body=body, cast_to=object)
    return envelope.get("result") if isinstance(envelope, dict) else None


def _live(client: Any, account: str, tunnel_id: str) -> dict | None:
    """The tunnel with that ID, or None where it does not exist or was deleted."""
    import cloudflare

    try:
        tunnel = _api(client, "GET", f"/accounts/{account}/cfd_tunnel/{tunnel_id}") or {}
    except cloudflare.NotFoundError:
        return None
    return None if tunnel.get("deleted_at") else tunnel


def ensure(client: Any, account: str, want: Wanted, known_id: str | None, config_src: str):
    """(tunnel, how): the tunnel ESC names, else the live one of that name, else a new one."""
    if known_id and (tunnel := _live(client, account, known_id)) is not None:
        return tunnel, "exists"
    found = _api(
        client,
        "GET",
        f"/accounts/{account}/cfd_tunnel?name={want.name}&is_deleted=false",
    )
    if found:
        return found[0], "found by its name"
    body = {"name": want.name, "config_src": config_src}
    return _api(client, "POST", f"/accounts/{account}/cfd_tunnel", body), "created"


def credential_matches(value: str | None, key: str, tunnel_id: str) -> bool:
    if value is None:
        return False
    try:
        return tunnel_credentials.parse(value, key=key).tunnel_id == tunnel_id.lower()
    except tunnel_credentials.CredentialError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = exitcodes.inventory_parser(
        prog="python -m oceanid.tunnels",
        description="Create each tunnel the settings name that Cloudflare lacks; print how to "
        "store its ID and credential in ESC.",
    )
    parser.add_argument(
        "--show",
        metavar="KEY",
        help="print only that credential key's connector token on stdout (SHOW=KEY)",
    )
    args = parser.parse_args(argv)

    def say(line: str) -> None:  # with --show, stdout carries the token alone
        print(line, file=sys.stderr if args.show else sys.stdout, flush=True)

    try:
        views = preflight.views_from_inventory(preflight.load_inventory(args.inventory))
        data = dict(views[0].data) if views else {}
        data["base_domain"] = data.get("base_domain") or preflight.BASE_DOMAIN_PENDING
        settings = from_data(data)
    except SettingsError as error:
        for line in error.problems:
            print(f"tunnels: {line}", file=sys.stderr)
        return exitcodes.USAGE
    except (SystemExit, IndexError) as error:
        print(f"tunnels: {args.inventory}: {error or 'no hosts'}", file=sys.stderr)
        return exitcodes.USAGE
    tunnels = wanted(views, settings)
    keys = [key for t in tunnels for key in (t.id_key, t.credential_key)]
    if args.show and args.show not in [t.credential_key for t in tunnels]:
        print(
            f"tunnels: --show {args.show}: not a tunnel credential key of {args.inventory} "
            f"({', '.join(t.credential_key for t in tunnels)})",
            file=sys.stderr,
        )
        return exitcodes.USAGE
    try:
        found = secrets_mod.load(
            sources=settings.secret_sources,
            esc_environment=settings.esc_environment,
            keys=[*secrets_mod.KNOWN_KEYS, *keys],
            secrets_file=settings.secrets_file,
        )
    except secrets_mod.SecretsError as error:
        print(f"tunnels: {error}", file=sys.stderr)
        return exitcodes.USAGE
    missing = [k for k in ("cloudflareApiToken", "cloudflareAccountId") if k not in found]
    if missing:
        print(
            f"tunnels: {', '.join(missing)}: missing; the API token (Account Cloudflare Tunnel "
            "Edit) and the account are needed to read and create tunnels (docs/secrets.md)",
            file=sys.stderr,
        )
        return exitcodes.USAGE

    import cloudflare

    from oceanid.cloudflare_dns import make_client

    base_url = str(settings.cloudflare_api_base_url or "") or None
    client = make_client(found["cloudflareApiToken"], base_url)
    account = found["cloudflareAccountId"]
    config_src = "cloudflare" if settings.manage_dns else "local"
    env = settings.esc_environment
    store = f"esc env set {env} pulumiConfig.{secrets_mod.ESC_PREFIX}"
    for want in tunnels:
        try:
            tunnel, how = ensure(client, account, want, found.get(want.id_key), config_src)
            tunnel_id = str(tunnel["id"])
            if args.show == want.credential_key:
                path = f"/accounts/{account}/cfd_tunnel/{tunnel_id}/token"
                print(_api(client, "GET", path), flush=True)
                continue
        except cloudflare.APIError as error:
            print(f"tunnels: {want.name}: the API refused: {error}", file=sys.stderr)
            return exitcodes.FAILED
        say(f"tunnel {want.name} ({want.id_key}): {how}, {tunnel_id}")
        if (found.get(want.id_key) or "").lower() != tunnel_id:
            say(f"  store its ID:  {store}{want.id_key} {tunnel_id}")
        if credential_matches(found.get(want.credential_key), want.credential_key, tunnel_id):
            say(f"  its credential in {want.credential_key} is this tunnel's")
        else:
            say(
                f"  store its credential:  {store}{want.credential_key} --secret "
                f'"$(make -s tunnels INVENTORY={args.inventory} SHOW={want.credential_key})"'
            )
    return exitcodes.OK


if __name__ == "__main__":
    raise SystemExit(main())
