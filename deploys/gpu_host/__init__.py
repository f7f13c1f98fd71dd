"""The GPU host role: its own tunnel connector, the GPU service behind `gpu.<base>` and, on the
`triton` kind, the ML backend Label Studio calls behind `ml.<base>` (deploys/gpu_host/ml_backend).

Everything the role manages is declared in one DesiredState (`declare`) and read in one fact,
with the host's other roles; the operations then change only what differs. This file only
composes: each service declares its part of the desired state (`add_to`) and, once the role's
packages, folders and files are in place, runs its own steps (`deploy`) in its own module. A
host marked `require_gpu` without a usable NVIDIA GPU fails before anything on it changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploys.gpu_host import cloudflared_node, docker, http_service, ml_backend, triton
from oceanid.model import HostPlan, Site
from operations import gpu, managed
from operations.managed import DesiredState


def check(plan: HostPlan) -> None:
    """Run first on a GPU host: stop before anything changes if its GPU is missing."""
    if plan.gpu is not None and plan.gpu.require_gpu:
        service = plan.gpu.service
        image = service.kind == "triton" and service.runtime == "container"
        gpu.require(
            name="A usable NVIDIA GPU",
            gpus=plan.gpu.gpus,
            # the pinned Triton image's CUDA needs this driver (group_data triton_min_driver)
            min_driver=plan.settings.triton_min_driver if image else None,
            image=plan.settings.triton_image if image else None,
        )


@dataclass(frozen=True)
class Role:
    """The role's DesiredState, declared whole before anything is read or run, and what each
    service's steps need from its declaration."""

    desired: DesiredState
    uses_docker: bool
    tunnel_inputs: list[str]  # what restarts the host connector
    http_inputs: list[str] | None = None  # an `http` host's service: what restarts it
    triton: triton.Declared | None = None  # a `triton` host's Triton
    ml_inputs: list[str] | None = None  # the ML backend's (a `triton` host), what restarts it


def declare(plan: HostPlan) -> Role:
    service = plan.gpu.service
    desired = DesiredState(name=f"gpu host {plan.name}")
    tunnel_inputs = cloudflared_node.add_to(desired, plan)
    uses_docker = service.kind == "http" or service.runtime == "container"
    if uses_docker:
        docker.add_to(desired, plan)
    if service.kind == "triton":
        declared = triton.add_to(desired, plan)
        ml_inputs = ml_backend.add_to(desired, plan) if service.runs_ml_backend else None
        return Role(desired, uses_docker, tunnel_inputs, triton=declared, ml_inputs=ml_inputs)
    return Role(desired, uses_docker, tunnel_inputs, http_inputs=http_service.add_to(desired, plan))


def deploy(plan: HostPlan, role: Role) -> None:
    """The role's steps, from this host's `declare` (read with the host's other roles)."""
    desired = role.desired
    distro_packages = [p for p in desired.packages if p not in docker.CONTAINER_PACKAGES]
    managed.packages(name="GPU host packages", desired=desired, names=distro_packages)
    if role.ml_inputs is not None:  # its credentials file is owned by its account
        ml_backend.prepare(desired)
    managed.directories(name="GPU host directories", desired=desired)
    managed.files(name="GPU host files", desired=desired)
    managed.sweep(name="GPU host files no longer wanted", desired=desired)
    if role.uses_docker:
        docker.deploy(desired, plan)
    if role.triton is not None:
        triton.deploy(desired, plan, role.triton)
        if role.ml_inputs is not None:
            ml_backend.deploy(desired, role.ml_inputs)
    elif role.http_inputs is not None:
        http_service.deploy(desired, plan, role.http_inputs)
    cloudflared_node.deploy(desired, role.tunnel_inputs, plan)


def hand_over(plan: HostPlan, role: Role, site: Site) -> None:
    """`node_tunnel_mode: daemonset`: stop the host connector once the cluster's serves the
    tunnel. Called after the cluster's part of the run, which creates the DaemonSet."""
    cloudflared_node.hand_over(role.desired, plan, site)
