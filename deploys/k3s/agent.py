"""The k3s agent role (`k3s_agents`): joins the cluster through the control-plane endpoint,
once the server answers there.

On a GPU host that must have a GPU, k3s's containerd gets the NVIDIA runtime: k3s registers it
(as `nvidia`) when it finds `nvidia-container-runtime` at start, which the GPU host role
installs first (deploys/site.py runs it before k3s); the server deploys the `nvidia`
RuntimeClass. A GPU host without that requirement (the lab) skips both, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host

from deploys.k3s import node, units
from oceanid.preflight import HostPlan, Site
from operations import services
from operations.managed import Manifest


@dataclass
class Joining:
    """An agent's Manifest and what restarts it, between its files and its start."""

    manifest: Manifest
    inputs: list[str]


def manifest(plan: HostPlan, site: Site) -> tuple[Manifest, list[str]]:
    role = Manifest(name=f"k3s agent {plan.name}")
    return role, node.add_to(role, plan, site, "agent")


def prepare(
    plan: HostPlan, site: Site, declared: tuple[Manifest, list[str]] | None = None
) -> Joining:
    """The agent's files and kernel settings: nothing here needs the server. `declared` is
    its `manifest`, when the site declared it first."""
    role, inputs = declared or manifest(plan, site)
    if plan.gpu is not None and not plan.gpu.require_gpu:
        host.log("k3s: no GPU required here (require_gpu: false): NVIDIA runtime skipped")
    node.install(role, [f.path for f in role.files])
    return Joining(role, inputs)


def will_start(joining: Joining) -> bool:
    """Whether k3s-agent (re)starts in this run, so it must find the server answering."""
    unit = units.UNIT_NAMES["agent"]
    todo = services.actions(joining.manifest, unit, node.unit_file("agent"), joining.inputs)
    return bool({"start", "restart"} & set(todo))


def start(plan: HostPlan, site: Site, joining: Joining) -> None:
    """Once the server answers: the token (when k3s generated it), the binary, the unit."""
    node.join_token(joining.manifest, plan, site)
    node.start(joining.manifest, "agent", joining.inputs, None)
