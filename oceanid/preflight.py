"""Check settings and secrets for a whole inventory before any host is touched.

`make check` runs this without connecting anywhere; the deploy files run it once per
pyinfra process (cached) before they queue a single operation. It reports every
problem at once, and requires only the secrets that the enabled features need.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oceanid import secrets as secrets_mod
from oceanid import triton_repo, tunnel_credentials
from oceanid.settings import GpuHost, Settings, SettingsError, from_data, short_name

K3S_SERVERS, K3S_AGENTS, GPU_HOSTS = "k3s_servers", "k3s_agents", "gpu_hosts"
MODEL_SOURCE = Path(__file__).resolve().parent.parent / "triton-models"


@dataclass(frozen=True)
class HostView:
    """What preflight needs to know of one inventory host."""

    name: str
    groups: frozenset[str]
    data: Mapping[str, Any]


@dataclass
class HostPlan:
    """One host's validated inputs: its settings, roles and credentials."""

    name: str
    settings: Settings
    roles: frozenset[str]
    gpu: GpuHost | None = None
    node_tunnel_id: str | None = None
    node_credential: tunnel_credentials.TunnelCredential | None = None


@dataclass
class Site:
    """The validated site: one plan per host, and the secrets they draw on."""

    hosts: dict[str, HostPlan]
    secrets: secrets_mod.Secrets
    cluster_tunnel_id: str | None = None
    cluster_credential: tunnel_credentials.TunnelCredential | None = None
    required: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        roles = ", ".join(
            f"{name} ({'+'.join(sorted(plan.roles)) or 'no role'})"
            for name, plan in sorted(self.hosts.items())
        )
        origins = sorted({self.secrets.origin(k) or "?" for k in self.required})
        return (
            f"ok: {len(self.hosts)} hosts [{roles}]; {len(self.required)} secrets "
            f"present and well-formed (from {', '.join(origins) or 'no source needed'})"
        )


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
    if settings.manage_dns and plans:
        for key in ("cloudflareApiToken", "cloudflareZoneId", "cloudflareAccountId"):
            add(key, "DNS records (manage_dns)")
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
    return problems


def _credential(
    secrets: secrets_mod.Secrets, id_key: str, cred_key: str, problems: list[str]
) -> tuple[str | None, tunnel_credentials.TunnelCredential | None]:
    tunnel_id, value = secrets.get(id_key), secrets.get(cred_key)
    if tunnel_id is None or value is None:
        return tunnel_id, None
    if not tunnel_credentials.UUID_RE.match(tunnel_id.strip().lower()):
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


LABEL_STUDIO_KEYS = (
    "labelStudioDbUrl",
    "labelStudioAdminEmail",
    "labelStudioAdminPassword",
    "labelStudioApiToken",
)
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
        from deploys.cluster_apps.label_studio import database_env

        url = secrets.get("labelStudioDbUrl")
        if url is not None:
            try:
                database_env(url)
            except ValueError as exc:
                problems.append(str(exc))
        email = secrets.get("labelStudioAdminEmail")
        if email is not None and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email.strip()):
            problems.append("labelStudioAdminEmail: not an e-mail address (the admin's login)")
        password = secrets.get("labelStudioAdminPassword")
        if password is not None and len(password) < 8:
            problems.append("labelStudioAdminPassword: shorter than 8 characters")
        token = secrets.get("labelStudioApiToken")
        if token is not None and not LS_TOKEN_RE.match(token):
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
    for view in hosts:
        try:
            settings = from_data(view.data)
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

    problems += cluster_apps_problems(plans.values(), first, secrets)
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
    from pyinfra.api import Config, State
    from pyinfra.context import ctx_config, ctx_state
    from pyinfra_cli.inventory import make_inventory

    state = State()
    state.cwd = os.getcwd()
    ctx_state.set(state)
    ctx_config.set(Config())
    return make_inventory(path, cwd=state.cwd)


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
    print(f"check: {path}: {site.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
