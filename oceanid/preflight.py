"""Check settings and secrets for a whole inventory before any host is touched.

`make check` runs this without connecting anywhere; the deploy files run it once per
pyinfra process (cached) before they queue a single operation. It reports every
problem at once, and requires only the secrets that the enabled features need.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from oceanid import secrets as secrets_mod
from oceanid import triton_repo, tunnel_credentials
from oceanid.model import (
    BACKUP_KEYS,
    GPU_HOSTS,
    K3S_AGENTS,
    K3S_SERVERS,
    HostPlan,
    HostView,
    Site,
    backups_on,
    k3s_servers,
)
from oceanid.settings import Settings, SettingsError, from_data, short_name

MODEL_SOURCE = Path(__file__).resolve().parent.parent / "triton-models"


class PreflightError(RuntimeError):
    """Every problem found, one line each; safe to print (no secret values)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def roles_of(name: str, groups: Iterable[str], settings: Settings) -> frozenset[str]:
    roles = set(groups) & {K3S_SERVERS, K3S_AGENTS, GPU_HOSTS}
    if settings.host(short_name(name)).gpu is not None:
        roles.add(GPU_HOSTS)
    return frozenset(roles)


def required_secrets(plans: Iterable[HostPlan], settings: Settings) -> dict[str, list[str]]:
    """Secret key -> the features that need it, from roles and flags."""
    need: dict[str, list[str]] = {}

    def add(key: str, why: str) -> None:
        need.setdefault(key, []).append(why)

    plans = list(plans)
    for plan in plans:
        if plan.gpu is not None:
            why = f"{plan.name}'s node tunnel"
            add(plan.gpu.tunnel_id_key, why)
            add(plan.gpu.tunnel_credential_key, why)
            if settings.manage_dns:
                add(plan.gpu.tunnel_id_key, f"{plan.name}'s DNS record")
    if any(K3S_SERVERS in p.roles for p in plans):
        add("cloudflareTunnelId", "the cluster tunnel")
        add("cloudflareTunnelToken", "the cluster tunnel")
    if any(K3S_SERVERS in p.roles for p in plans) and settings.cluster_apps.label_studio.enabled:
        for key in LABEL_STUDIO_KEYS:
            add(key, "Label Studio (cluster_apps.label_studio)")
    if any(K3S_SERVERS in p.roles for p in plans) and settings.cluster_apps.ml_backend.enabled:
        for key in ("mlBackendUser", "mlBackendPassword"):  # the adapter's basic auth
            add(key, "the ML-backend connector (cluster_apps.ml_backend)")
    if any(K3S_SERVERS in p.roles for p in plans) and settings.cluster_apps.backup.enabled:
        for key in BACKUP_KEYS:
            add(key, "backups (cluster_apps.backup.enabled)")
    if settings.manage_dns and plans:
        for key in ("cloudflareApiToken", "cloudflareZoneId", "cloudflareAccountId"):
            add(key, "DNS records (manage_dns)")
    if settings.node_tunnel_in_cluster() and any(p.gpu is not None for p in plans):
        # the host connector stops only once the API shows the DaemonSet's (deploys/gpu_host)
        for key in ("cloudflareApiToken", "cloudflareAccountId"):
            add(key, "the node tunnels' hand-over to the cluster (node_tunnel_mode daemonset)")
    for plan in plans:
        if ml_backend_host(plan):
            for key in ML_BACKEND_KEYS:
                add(key, f"{plan.name}'s ML backend (hosts.{plan.name}.gpu.service.kind triton)")
    for plan in plans:
        if plan.gpu is not None and plan.gpu.access == "service_token":
            for key in ACCESS_KEYS:
                add(key, f"{plan.name}'s Cloudflare Access (hosts.{plan.name}.gpu.access)")
    # k3s_token is optional: without it the first server generates the cluster's token and
    # the other nodes are given that one (deploys/k3s).
    return need


def k3s_problems(plans: Iterable[HostPlan], settings: Settings) -> list[str]:
    """What makes the k3s roles impossible to provision: checked only when provisioning is on."""
    plans = list(plans)
    if not settings.enable_node_provisioning:
        return []
    problems = [
        f"{p.name}: in both k3s_servers and k3s_agents; a node is one or the other"
        for p in plans
        if {K3S_SERVERS, K3S_AGENTS} <= p.roles
    ]
    for p in plans:
        service = p.gpu.service if p.gpu and p.gpu.require_gpu else None
        if (
            K3S_AGENTS in p.roles
            and service
            and (service.kind, service.runtime)
            == (
                "triton",
                "host",
            )
        ):
            problems.append(
                f"hosts.{p.name}.gpu.service.runtime: a k3s agent that requires its GPU "
                "needs the NVIDIA container toolkit, which only runtime container installs "
                "(k3s gives its containerd the nvidia runtime when it finds it)"
            )
    if any(K3S_AGENTS in p.roles for p in plans) and not any(K3S_SERVERS in p.roles for p in plans):
        problems.append(
            "k3s_agents: agents need a server to join, and k3s_servers is empty in this inventory"
        )
    problems += _server_address_problems(plans)
    for p in plans:  # every node's firewall admits the others by address (deploys/k3s/firewall.py)
        k3s = p.settings.host(p.name).k3s
        if {K3S_SERVERS, K3S_AGENTS} & p.roles and not k3s.ip_addresses():
            problems.append(
                f"hosts.{p.name}.k3s: no IP address; the nodes' firewalls admit k3s's ports only "
                f"from the cluster's nodes, by address: set hosts.{p.name}.k3s.node_ip (or "
                "address) to the IP address the other nodes see its traffic come from"
            )
    return problems


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _server_address_problems(plans: list[HostPlan]) -> list[str]:
    """The first server must be reachable by the nodes that join it.

    Agents and later servers join through the first server's API (its HAProxy with
    enable_control_plane_lb): `server: https://<address>:<port>` in their config.yaml, with
    `hosts.<server>.k3s.address`, else the inventory name. A name such as `tethys` resolves
    only through the operator's SSH config, never on the nodes; so where any node joins, the
    address is required, unless the inventory name is itself an IP address.
    """
    servers = k3s_servers(plans)
    joining = [p.name for p in plans if K3S_AGENTS in p.roles] + [p.name for p in servers[1:]]
    if not servers or not joining:
        return []
    first = servers[0]
    if first.settings.host(first.name).k3s.address or _is_ip(first.name):
        return []
    return [
        f"hosts.{first.name}.k3s.address: not set, and {', '.join(joining)} join the cluster "
        f"through {first.name}'s API: its inventory name resolves only through your SSH "
        f"config, not on the nodes; set hosts.{first.name}.k3s.address to the IP address "
        "(or a DNS name) the other nodes reach it by"
    ]


def _credential(
    secrets: secrets_mod.Secrets, id_key: str, cred_key: str, problems: list[str]
) -> tuple[str | None, tunnel_credentials.TunnelCredential | None]:
    tunnel_id, value = secrets.get(id_key), secrets.get(cred_key)
    if tunnel_id is None or value is None:
        return tunnel_id, None
    if not tunnel_credentials.UUID_RE.fullmatch(tunnel_id.strip().lower()):
        problems.append(f"{id_key}: not a tunnel ID (expected a UUID)")
        return tunnel_id, None
    try:
        cred = tunnel_credentials.parse_for_tunnel(
            value, key=cred_key, tunnel_id=tunnel_id, id_key=id_key
        )
    except tunnel_credentials.CredentialError as exc:
        problems.append(str(exc))
        return tunnel_id, None
    return tunnel_id.strip().lower(), cred


#: The ML-backend adapter's HTTP basic auth (design.md §7), on each `triton` GPU host.
ML_BACKEND_KEYS = ("mlBackendUser", "mlBackendPassword")
ML_BACKEND_PASSWORD_MIN = 16


def ml_backend_host(plan: HostPlan) -> bool:
    """Whether the host runs the ML-backend adapter: a GPU host of the `triton` kind."""
    return plan.gpu is not None and plan.gpu.service.runs_ml_backend


def ml_backend_problems(plans: Iterable[HostPlan], secrets: secrets_mod.Secrets) -> list[str]:
    """Basic auth's user may hold no `:` (RFC 7617: the user-id ends at the first colon) and
    the password must be long enough to stand on a public name; no value is echoed."""
    if not any(ml_backend_host(p) for p in plans):
        return []
    problems = []
    user, password = (secrets.get(key) for key in ML_BACKEND_KEYS)
    if user is not None and (not user.strip() or ":" in user):
        problems.append(
            "mlBackendUser: must be a non-empty name without ':' (HTTP basic auth ends the "
            "user at the first colon); Label Studio sends it to the ML backend"
        )
    if password is not None and len(password) < ML_BACKEND_PASSWORD_MIN:
        problems.append(
            f"mlBackendPassword: shorter than {ML_BACKEND_PASSWORD_MIN} characters; it guards "
            "the ML backend's public name: store a longer random one (openssl rand -base64 24)"
        )
    return problems


#: The service token a GPU name behind Cloudflare Access admits (oceanid/cloudflare_access.py).
ACCESS_KEYS = ("cloudflareAccessClientId", "cloudflareAccessClientSecret")


def access_problems(
    plans: Iterable[HostPlan], settings: Settings, secrets: secrets_mod.Secrets
) -> list[str]:
    """Access on a GPU name needs the API (manage_dns) and a well-formed token; no value is
    echoed, the client secret least of all."""
    from oceanid.cloudflare_access import check_client_id, check_client_secret

    hosts = [p.name for p in plans if p.gpu is not None and p.gpu.access == "service_token"]
    if not hosts:
        return []
    problems = []
    if not settings.manage_dns:
        problems += [
            f"hosts.{name}.gpu.access: service_token needs manage_dns: the deploy reaches "
            "Cloudflare's API, for Access as for DNS, only with manage_dns on; turn it on or "
            "set access to off"
            for name in hosts
        ]
    for key, check in zip(ACCESS_KEYS, (check_client_id, check_client_secret), strict=True):
        value = secrets.get(key)
        problem = check(value) if value is not None else None
        if problem:
            problems.append(f"{key}: {problem}")
    return problems


def agent_token_problems(
    plans: Iterable[HostPlan], settings: Settings, secrets: secrets_mod.Secrets
) -> list[str]:
    """ESC k3sAgentToken (optional) is what agents hold: it may not be a server token, nor the
    server token's secret under another name (design.md §7); no value is echoed."""
    value = secrets.get("k3sAgentToken")
    nodes = [p for p in plans if {K3S_SERVERS, K3S_AGENTS} & p.roles]
    if value is None or not nodes or not settings.enable_node_provisioning:
        return []
    from facts.k3s import token_secret

    server = secrets.get("k3s_token")
    secret = token_secret(value)
    if "::server:" in value or (server is not None and secret == token_secret(server)):
        return [
            "k3sAgentToken: is the server token (k3s_token, or a K10…::server: token); agents "
            "must never hold it: store a secret of its own, or remove k3sAgentToken and the "
            "first server generates one"
        ]
    if len(secret) < 16 or any(char.isspace() for char in secret):
        return [
            "k3sAgentToken: must be at least 16 characters without spaces, alone or as a full "
            "agent token (K10<CA hash>::node:<secret>); k3s admits agents with it"
        ]
    return []


#: The guide's node-tunnel keys (design.md §3): what they meant in the stack we replace.
NODE_TUNNEL_HOSTNAME_KEY = "cloudflareNodeTunnelHostname"
NODE_TUNNEL_TARGET_KEY = "cloudflareNodeTunnelTarget"
NODE_TUNNEL_ID_KEY = "cloudflareNodeTunnelId"  # calypso's tunnel (GpuHost.tunnel_id_key's default)
TUNNEL_TARGET_SUFFIX = ".cfargotunnel.com"


BASE_DOMAIN_PENDING = "base-domain.invalid"  # stands in until ESC is read (RFC 2606 .invalid)


def _base_from_esc(
    plans: dict[str, HostPlan],
    unset: dict[str, Mapping[str, Any]],
    secrets: secrets_mod.Secrets,
    problems: list[str],
) -> None:
    """`base_domain` None in the settings: the default is ESC `cloudflareNodeTunnelHostname`,
    the base domain of the node tunnels' names in the stack we replace. The hosts' settings
    are validated again with it."""
    value = secrets.get(NODE_TUNNEL_HOSTNAME_KEY)
    if value is None:
        problems.append(
            f"base_domain: not set, and its default, ESC {NODE_TUNNEL_HOSTNAME_KEY}, is missing; "
            "set base_domain in group_data (boathou.se, say) or the key in ESC"
        )
        return
    for name, data in unset.items():
        try:
            settings = from_data({**data, "base_domain": _dns_name(value)})
        except SettingsError as exc:
            problems += [
                f"{NODE_TUNNEL_HOSTNAME_KEY} (the default of base_domain): {line}"
                for line in exc.problems
                if line.startswith("base_domain")
            ]
            return
        plans[name].settings = settings


def _dns_name(value: str) -> str:
    """A DNS name as compared: case and a final dot are not part of it."""
    return value.strip().rstrip(".").lower()


def node_tunnel_key_problems(
    plans: Iterable[HostPlan], settings: Settings, secrets: secrets_mod.Secrets
) -> list[str]:
    """The guide tells operators to verify two ESC keys; they must agree with the settings.

    `cloudflareNodeTunnelHostname` is the base domain of the node tunnels' public names
    (`boathou.se`: `gpu.boathou.se`, `ml.boathou.se`); the names come from `base_domain`, so
    a different value means the operator expects names the deploy does not make.
    `cloudflareNodeTunnelTarget` is the CNAME target of calypso's records, which the DNS
    deploy points at `<its tunnel id>.cfargotunnel.com`: any other target is refused rather
    than silently not used. Neither is a secret; both are named in the message.
    """
    problems = []
    hostname = secrets.get(NODE_TUNNEL_HOSTNAME_KEY)
    if hostname is not None and _dns_name(hostname) != settings.base_domain:
        problems.append(
            f"{NODE_TUNNEL_HOSTNAME_KEY}: {hostname.strip()!r} is not base_domain "
            f"{settings.base_domain!r}; it is the base domain of the node tunnels' public "
            "names, which the deploy builds from base_domain: make the two the same (or "
            f"remove {NODE_TUNNEL_HOSTNAME_KEY} from ESC)"
        )
    target = secrets.get(NODE_TUNNEL_TARGET_KEY)
    tunnel_id = secrets.get(NODE_TUNNEL_ID_KEY)
    users = [
        p.name
        for p in plans
        if p.gpu is not None
        and secrets_mod.canonical(p.gpu.tunnel_id_key) == secrets_mod.canonical(NODE_TUNNEL_ID_KEY)
    ]
    if target is None or tunnel_id is None or not users:
        return problems
    wanted = f"{tunnel_id.strip().lower()}{TUNNEL_TARGET_SUFFIX}"
    if _dns_name(target) != wanted:
        problems.append(
            f"{NODE_TUNNEL_TARGET_KEY}: {target.strip()!r} is not {wanted!r}, the tunnel "
            f"{NODE_TUNNEL_ID_KEY} names ({', '.join(users)}'s records are CNAMEs to it); "
            f"set {NODE_TUNNEL_TARGET_KEY} to {wanted!r} (or remove it from ESC)"
        )
    return problems


CLUSTER_TUNNEL_ID_KEY = "cloudflareTunnelId"


def _tunnel_id(value: str | None) -> str | None:
    """A tunnel ID as compared; None where there is none, or it is no UUID (`_credential`
    reports that one)."""
    tunnel_id = value.strip().lower() if value is not None else None
    return tunnel_id if tunnel_id and tunnel_credentials.UUID_RE.fullmatch(tunnel_id) else None


def shared_tunnel_problems(plans: Iterable[HostPlan], secrets: secrets_mod.Secrets) -> list[str]:
    """One tunnel ID behind two GPU hosts, or behind a GPU host and the cluster tunnel.

    Cloudflare sends a tunnel's traffic to whichever of its connectors it likes (design.md
    §1), so a second host on calypso's tunnel gets calypso's requests and calypso its, and a
    GPU host on the cluster tunnel gets Label Studio's; the DNS deploy would also put the
    node's ingress over the cluster's, since it keys each tunnel's rules by ID. check() already
    refuses one `tunnel_id_key` named by two hosts; this catches the same ID stored under two
    keys (a value copied in ESC). Nothing in the design lets a GPU host use the cluster
    tunnel, so ESC `cloudflareTunnelId` counts wherever the secrets hold it, with or without
    a k3s server in this inventory: its connector runs on the server all the same. A tunnel ID
    is no secret, so the line names it.
    """
    owners: dict[str, tuple[str | None, str]] = {}  # tunnel ID -> (GPU host or None, its key)
    cluster = _tunnel_id(secrets.get(CLUSTER_TUNNEL_ID_KEY))
    if cluster is not None:
        owners[cluster] = (None, CLUSTER_TUNNEL_ID_KEY)
    problems = []
    for plan in plans:
        if plan.gpu is None:
            continue
        key = plan.gpu.tunnel_id_key
        tunnel_id = _tunnel_id(secrets.get(key))
        if tunnel_id is None:
            continue
        if tunnel_id not in owners:
            owners[tunnel_id] = (plan.name, key)
            continue
        owner, owner_key = owners[tunnel_id]
        if owner is not None and owner_key == key:
            continue  # one key named by two hosts: check() reports it
        where = f"hosts.{plan.name}.gpu.tunnel_id_key"
        if owner is None:
            whose = f"the cluster tunnel ({owner_key}, Label Studio's)"
        else:
            whose = f"the one {owner}'s {owner_key} holds"
        fix = f"point {where} (and tunnel_credential_key) at keys of {plan.name}'s own"
        if secrets_mod.canonical(key) != secrets_mod.canonical(owner_key):
            fix += f", or remove the copied ID from {key}"  # its own key, another's value
        problems.append(
            f"{where}: {plan.name}'s {key} holds tunnel {tunnel_id}, {whose}; each GPU host "
            f"needs a tunnel of its own: {fix}; `make tunnels` creates the missing tunnel"
        )
    return problems


LABEL_STUDIO_KEYS = (
    "labelStudioDbUrl",
    "labelStudioAdminEmail",
    "labelStudioAdminPassword",
    "labelStudioApiToken",
)
#: An S3 bucket name (AWS's and R2's rules: 3-63 lower-case letters, digits, - and .).
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def backup_problems(settings: Settings, secrets: secrets_mod.Secrets) -> list[str]:
    """A half-configured object store, or an endpoint or bucket the job could not use."""
    present = [key for key in BACKUP_KEYS if key in secrets]
    if settings.cluster_apps.backup.enabled is None and 0 < len(present) < len(BACKUP_KEYS):
        missing = [key for key in BACKUP_KEYS if key not in secrets]
        return [
            f"{', '.join(missing)}: missing while {', '.join(present)} is set; the backups' "
            "object store needs all four (or none, and no backups)"
        ]
    if not backups_on(settings, secrets):
        return []
    problems = []
    endpoint = secrets.get("backupS3Endpoint")
    if endpoint is not None and not re.fullmatch(r"https?://[^\s/]+/?", endpoint):
        problems.append(
            "backupS3Endpoint: must be the store's http(s) URL without a path, such as "
            "https://<account>.r2.cloudflarestorage.com"
        )
    bucket = secrets.get("backupS3Bucket")
    if bucket is not None and not BUCKET_RE.fullmatch(bucket):
        problems.append(
            "backupS3Bucket: must be a bucket name of 3 to 63 lower-case letters, digits, - or ."
        )
    return problems


#: Label Studio keeps the admin's token as authtoken's Token.key, a varchar(40).
LS_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{6,40}$")


def cluster_apps_problems(
    plans: Iterable[HostPlan], settings: Settings, secrets: secrets_mod.Secrets
) -> list[str]:
    """What would make a cluster app start wrong: Label Studio on SQLite or with an admin it
    cannot create, a node tunnel DaemonSet with no node to run on. No value is echoed."""
    plans = list(plans)
    apps = settings.cluster_apps
    if not any(K3S_SERVERS in p.roles for p in plans):
        return []
    problems = []
    if apps.label_studio.enabled:
        url = secrets.get("labelStudioDbUrl")
        if url is not None:
            try:
                secrets_mod.database_url(url)
            except ValueError as exc:
                problems.append(str(exc))
        email = secrets.get("labelStudioAdminEmail")
        if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            problems.append("labelStudioAdminEmail: not an e-mail address (the admin's login)")
        password = secrets.get("labelStudioAdminPassword")
        if password is not None and len(password) < 8:
            problems.append("labelStudioAdminPassword: shorter than 8 characters")
        token = secrets.get("labelStudioApiToken")
        if token is not None and not LS_TOKEN_RE.fullmatch(token):
            problems.append(
                "labelStudioApiToken: must be a legacy API token of 6 to 40 letters, digits, "
                "- or _ (Label Studio stores the admin's token in a 40-character column)"
            )
    if apps.node_tunnel_mode == "daemonset":
        for plan in plans:
            if plan.gpu is not None and not {K3S_SERVERS, K3S_AGENTS} & plan.roles:
                problems.append(
                    f"cluster_apps.node_tunnel_mode: daemonset runs {plan.name}'s tunnel on its "
                    f"k3s node, but {plan.name} is in neither k3s_agents nor k3s_servers; add it "
                    "to k3s_agents or keep node_tunnel_mode host"
                )
    return problems


def models_problems(source: Path) -> list[str]:
    """Every model folder is checked before anything is uploaded."""
    models = sorted(
        child
        for child in source.iterdir()
        if child.is_dir() and not child.name.startswith((".", "__"))
    )
    if not models:
        return [f"triton-models: no model folder under {source}"]
    return [f"triton-models: {p}" for m in models for p in triton_repo.validate_model_dir(m)]


def check(hosts: Iterable[HostView], *, environ: Mapping[str, str] | None = None) -> Site:
    """Validate every host's settings, then the secrets they need; raise all problems."""
    problems: list[str] = []
    plans: dict[str, HostPlan] = {}
    first: Settings | None = None
    unset_base: dict[str, Mapping[str, Any]] = {}  # base_domain None: ESC's, once it is read
    for view in hosts:
        data = view.data
        if data.get("base_domain") is None:
            unset_base[short_name(view.name)] = data
            data = {**data, "base_domain": BASE_DOMAIN_PENDING}
        try:
            settings = from_data(data)
        except SettingsError as exc:
            for line in exc.problems:
                if line not in problems:
                    problems.append(line)
            continue
        first = first or settings
        name = short_name(view.name)
        plans[name] = HostPlan(
            name=name,
            settings=settings,
            roles=roles_of(view.name, view.groups, settings),
            gpu=settings.host(name).gpu,
        )
    if problems or first is None:
        raise PreflightError(problems or ["inventory: no hosts"])

    for plan in plans.values():
        if GPU_HOSTS in plan.roles and plan.gpu is None:
            problems.append(
                f"hosts.{plan.name}.gpu: {plan.name} is in gpu_hosts but has no gpu settings"
            )
    names = [p.gpu.public_name for p in plans.values() if p.gpu]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"hosts.*.gpu.public_name: {dup} is used by two GPU hosts")
    tunnel_keys = [p.gpu.tunnel_id_key for p in plans.values() if p.gpu]
    for dup in sorted({k for k in tunnel_keys if tunnel_keys.count(k) > 1}):
        problems.append(
            f"hosts.*.gpu.tunnel_id_key: {dup} is shared by two GPU hosts; each GPU host "
            "needs its own tunnel"
        )

    problems += k3s_problems(plans.values(), first)
    if any(p.gpu and p.gpu.service.kind == "triton" for p in plans.values()):
        problems += models_problems(MODEL_SOURCE)

    required = required_secrets(plans.values(), first)
    try:
        secrets = secrets_mod.load(
            sources=first.secret_sources,
            esc_environment=first.esc_environment,
            environ=environ,
            keys=[*secrets_mod.KNOWN_KEYS, *required],
            secrets_file=first.secrets_file,
        )
    except secrets_mod.SecretsError as exc:
        raise PreflightError([*problems, str(exc)]) from None
    missing = [key for key in required if key not in secrets]
    environ_now = os.environ if environ is None else environ
    file_read = environ_now.get("SECRETS_FILE") or first.secrets_file
    if missing and "file" in first.secret_sources and not file_read:
        problems.append(
            "SECRETS_FILE: not set, nor the secrets_file setting, so no secrets file was read"
        )
    for key in missing:
        env = secrets_mod.env_name(key)
        problems.append(
            f"{key}: missing (needed for {', '.join(dict.fromkeys(required[key]))}); "
            f"set it in ESC {first.esc_environment}, as {env}, or in {file_read or 'SECRETS_FILE'}"
        )

    credentials = [p.gpu.tunnel_credential_key for p in plans.values() if p.gpu is not None]
    problems += secrets.line_problems(
        [*secrets_mod.KNOWN_KEYS, *required],
        multiline=credentials,
    )
    problems += cluster_apps_problems(plans.values(), first, secrets)
    if any(K3S_SERVERS in p.roles for p in plans.values()):
        problems += backup_problems(first, secrets)
    problems += access_problems(plans.values(), first, secrets)
    problems += agent_token_problems(plans.values(), first, secrets)
    if unset_base:
        _base_from_esc(plans, unset_base, secrets, problems)
        first = next(iter(plans.values())).settings
    problems += node_tunnel_key_problems(plans.values(), first, secrets)
    problems += shared_tunnel_problems(plans.values(), secrets)
    problems += ml_backend_problems(plans.values(), secrets)
    site = Site(hosts=plans, secrets=secrets, required=required)
    if "cloudflareTunnelToken" in required:
        site.cluster_tunnel_id, site.cluster_credential = _credential(
            secrets, "cloudflareTunnelId", "cloudflareTunnelToken", problems
        )
    for plan in plans.values():
        if plan.gpu is not None:
            plan.node_tunnel_id, plan.node_credential = _credential(
                secrets, plan.gpu.tunnel_id_key, plan.gpu.tunnel_credential_key, problems
            )
        user, password = (secrets.get(key) for key in ML_BACKEND_KEYS)
        if ml_backend_host(plan) and user is not None and password is not None:
            plan.ml_backend_auth = (user, password)
    if problems:
        raise PreflightError(problems)
    return site


def views_from_inventory(inventory: Any) -> list[HostView]:
    """HostViews from a pyinfra Inventory (CLI-loaded or the running state's)."""
    return [
        HostView(name=host.name, groups=frozenset(host.groups), data=host.data.dict())
        for host in inventory
    ]


def load_inventory(path: str) -> Any:
    """Load an inventory file and its group data exactly as the pyinfra CLI does."""
    from oceanid.pyinfra_internals import cli_inventory

    return cli_inventory(path)


def main(argv: list[str] | None = None) -> int:
    """`make check`: validate settings and secrets for an inventory, touching no host."""
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "inventory.py"
    try:
        site = check(views_from_inventory(load_inventory(path)))
    except PreflightError as exc:
        for line in exc.problems:
            print(f"check: {line}", file=sys.stderr)
        print(f"check: {len(exc.problems)} problem(s) in {path}", file=sys.stderr)
        return 1
    for line in secrets_mod.override_lines(site.secrets, site.required):
        print(f"check: {line}")
    print(f"check: {path}: {site.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
