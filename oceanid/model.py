"""The site model: what the deploy files, Cloudflare, smoke and status know of a validated site.

`oceanid.preflight` builds it (settings, secrets and tunnel credentials checked for the whole
inventory); every other layer only reads it, so it lives here, apart from the checks, and
importing it never pulls the preflight's checks in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oceanid import secrets as secrets_mod
from oceanid import tunnel_credentials
from oceanid.settings import GpuHost, Settings

K3S_SERVERS, K3S_AGENTS, GPU_HOSTS = "k3s_servers", "k3s_agents", "gpu_hosts"


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
    # the ML-backend adapter's basic auth (a `triton` GPU host: deploys/gpu_host/ml_backend)
    ml_backend_auth: tuple[str, str] | None = field(default=None, repr=False)


def k3s_servers(plans: Iterable[HostPlan]) -> list[HostPlan]:
    """The k3s servers among `plans`, in inventory order: the first starts the cluster
    (`cluster-init`), the others join it."""
    return [plan for plan in plans if K3S_SERVERS in plan.roles]


@dataclass
class Site:
    """The validated site: one plan per host, and the secrets they draw on."""

    hosts: dict[str, HostPlan]
    secrets: secrets_mod.Secrets
    cluster_tunnel_id: str | None = None
    cluster_credential: tunnel_credentials.TunnelCredential | None = None
    required: dict[str, list[str]] = field(default_factory=dict)

    @property
    def first_server(self) -> HostPlan | None:
        """The k3s server that starts the cluster, which the other nodes join and copy their
        tokens from, and which carries the cluster apps: the inventory's first (None: none)."""
        return next(iter(k3s_servers(self.hosts.values())), None)

    def is_first_server(self, plan: HostPlan) -> bool:
        """Whether `plan` is the host of `first_server`."""
        first = self.first_server
        return first is not None and first.name == plan.name

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


#: The object store of the backups (design.md §7): all four, or none (backups off).
BACKUP_KEYS = (
    "backupS3Endpoint",
    "backupS3Bucket",
    "backupS3AccessKeyId",
    "backupS3SecretAccessKey",
)


def backups_on(settings: Settings, secrets: secrets_mod.Secrets) -> bool:
    """Whether the backup app runs: as `cluster_apps.backup.enabled` says, or, left None,
    where Label Studio runs and the object store is configured (every BACKUP_KEYS set)."""
    backup = settings.cluster_apps.backup
    if backup.enabled is not None:
        return backup.enabled
    return settings.cluster_apps.label_studio.enabled and all(k in secrets for k in BACKUP_KEYS)
