"""The k3s agent role (`k3s_agents`): joins the cluster through the control-plane endpoint,
once the server answers there.

On a GPU host that must have a GPU, k3s's containerd gets the NVIDIA runtime: k3s registers it
(as `nvidia`) when it finds `nvidia-container-runtime` at start, which the GPU host role
installs first (deploys/site.py runs it before k3s); the server deploys the `nvidia`
RuntimeClass. A GPU host without that requirement (the lab) skips both, saying so.
"""

from __future__ import annotations

from pyinfra import host

from deploys.k3s import cluster, node, units
from oceanid.preflight import HostPlan, Site
from operations import k3s as k3s_ops
from operations import services
from operations.managed import Manifest


def manifest(plan: HostPlan, site: Site) -> tuple[Manifest, list[str]]:
    role = Manifest(name=f"k3s agent {plan.name}")
    return role, node.add_to(role, plan, site, "agent")


def deploy(plan: HostPlan, site: Site) -> Manifest:
    role, inputs = manifest(plan, site)
    if plan.gpu is not None and not plan.gpu.require_gpu:
        host.log("k3s: no GPU required here (require_gpu: false): NVIDIA runtime skipped")
    node.install(role, [f.path for f in role.files])
    node.join_token(plan, site)
    unit = units.UNIT_NAMES["agent"]
    todo = services.actions(role, unit, node.unit_file("agent"), inputs)
    if {"start", "restart"} & set(todo):
        k3s_ops.wait_for_server(
            name="k3s API answers before this node joins",
            endpoint=cluster.endpoint(site, plan),
        )
    node.start(role, "agent", inputs, None)
    return role
