"""The site's public names from one function, which DNS, ingress, smoke, Access and adopt read.

Each name is a setting joined to `base_domain` (design.md §1, §7): Label Studio's
(`cluster_apps.label_studio.public_name`, `label` by default) on the cluster tunnel; each GPU
host's (`hosts.<name>.gpu.public_name`: `gpu`, `gpuN`) on that host's own node tunnel and, on
the `triton` kind, the ML-backend adapter's beside it (`ml_label`: `gpu` -> `ml`, `gpuN` ->
`mlN`) on the same tunnel. Built here only, so a changed setting moves the DNS record, the
connector's rule and the smoke check together; a name written out anywhere else could point
DNS at one name while the tunnel routes another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from oceanid.model import K3S_SERVERS

if TYPE_CHECKING:
    from oceanid.model import HostPlan, Site
    from oceanid.settings import GpuHost, Settings

Kind = Literal["label", "gpu", "ml"]
_GPU_LABEL = re.compile(r"gpu([0-9]*)")


@dataclass(frozen=True)
class PublicName:
    """One public name: what it serves, its full name, and the GPU host whose node tunnel
    carries it (None: the cluster tunnel's, Label Studio)."""

    kind: Kind
    fqdn: str
    host: str | None = None

    @property
    def tunnel(self) -> Literal["cluster", "node"]:
        return "cluster" if self.host is None else "node"


def ml_label(gpu_label: str) -> str:
    """The adapter's DNS label beside a GPU host's: `gpu` -> `ml`, `gpuN` -> `mlN`
    (design.md §7); any other label `x` -> `ml-x`, which cannot collide with those."""
    match = _GPU_LABEL.fullmatch(gpu_label)
    return f"ml{match[1]}" if match else f"ml-{gpu_label}"


def ml_hostname(gpu_fqdn: str) -> str:
    """`gpu.<base>` -> `ml.<base>`: the adapter's full name beside a GPU host's."""
    label, dot, base = gpu_fqdn.partition(".")
    return f"{ml_label(label)}{dot}{base}"


def public_names(
    settings: Settings,
    gpu_hosts: Mapping[str, GpuHost | None] | None = None,
    *,
    cluster: bool = True,
) -> list[PublicName]:
    """Every public name, in order: Label Studio's (with `cluster`), then for each GPU host by
    inventory name its GPU name and, on the `triton` kind, its adapter's.

    + gpu_hosts: inventory name -> that host's GPU settings; None: every `hosts:` entry of
      `settings` that has a `gpu`
    + cluster: whether the cluster tunnel's name is among them (the site has a k3s server)
    """
    base = settings.base_domain
    found: list[PublicName] = []
    if cluster:
        found.append(
            PublicName("label", f"{settings.cluster_apps.label_studio.public_name}.{base}")
        )
    if gpu_hosts is None:
        gpu_hosts = {name: entry.gpu for name, entry in settings.hosts.items()}
    for host, gpu in sorted(gpu_hosts.items()):
        if gpu is None:
            continue
        gpu_name = f"{gpu.public_name}.{base}"
        found.append(PublicName("gpu", gpu_name, host))
        if gpu.service.runs_ml_backend:
            found.append(PublicName("ml", ml_hostname(gpu_name), host))
    return found


def label_name(settings: Settings) -> str:
    """Label Studio's public name, on the cluster tunnel."""
    (label,) = public_names(settings, {})
    return label.fqdn


def host_names(settings: Settings, host: str, gpu: GpuHost) -> list[PublicName]:
    """One GPU host's names (its GPU name first), all on its node tunnel."""
    return public_names(settings, {host: gpu}, cluster=False)


def gpu_name(settings: Settings, gpu: GpuHost, host: str = "") -> str:
    """A GPU host's own public name (Triton, or its `http` server)."""
    return host_names(settings, host, gpu)[0].fqdn


def plan_names(plan: HostPlan) -> list[PublicName]:
    """The names one host of the site owns: Label Studio's on a k3s server, its own on a GPU
    host (each host's run of the DNS step makes sure of its own)."""
    return public_names(plan.settings, {plan.name: plan.gpu}, cluster=K3S_SERVERS in plan.roles)


def site_names(site: Site) -> list[PublicName]:
    """Every name the validated site serves: Label Studio's where the inventory has a k3s
    server, then each GPU host's (what smoke and status check)."""
    plans = site.hosts.values()
    settings = next(iter(plans)).settings  # group data: every host's copy holds the same
    return public_names(
        settings,
        {plan.name: plan.gpu for plan in plans},
        cluster=any(K3S_SERVERS in plan.roles for plan in plans),
    )
