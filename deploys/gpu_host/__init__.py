"""The GPU host role: its own tunnel connector, the GPU service behind `gpu.<base>` and, on the
`triton` kind, the ML backend Label Studio calls behind `ml.<base>` (deploys/gpu_host/ml_backend).

Everything the role manages is declared in one DesiredState (`declare`) and read in one fact,
with the host's other roles; the operations then change only what differs. This file only
composes: each service declares its part of the manifest (`add_to`) and, once the role's
packages, folders and files are in place, runs its own steps (`deploy`) in its own module. A
host marked `require_gpu` without a usable NVIDIA GPU fails before anything on it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Role:
    """The role's DesiredState, declared whole before anything is read or run, and what each
    service's steps need from its declaration."""

    manifest: DesiredState
    uses_docker: bool
    tunnel_inputs: list[str]
    service_inputs: list[str]
    by_model: dict[str, list[str]] = field(default_factory=dict)
    ml_inputs: list[str] | None = None  # the ML backend's (a `triton` host), what restarts it


def declare(plan: HostPlan) -> Role:
    service = plan.gpu.service
    manifest = DesiredState(name=f"gpu host {plan.name}")
    tunnel_inputs = cloudflared_node.add_to(manifest, plan)
    uses_docker = service.kind == "http" or service.runtime == "container"
    if uses_docker:
        docker.add_to(manifest, plan)
    if service.kind == "triton":
        service_inputs, by_model = triton.add_to(manifest, plan)
        ml_inputs = ml_backend.add_to(manifest, plan)
        return Role(manifest, uses_docker, tunnel_inputs, service_inputs, by_model, ml_inputs)
    return Role(manifest, uses_docker, tunnel_inputs, http_service.add_to(manifest, plan))


def deploy(plan: HostPlan, role: Role | None = None) -> DesiredState:
    """The role's steps, from `role` (this host's `declare`, when the site declared it first)."""
    role = role or declare(plan)
    manifest = role.manifest
    distro_packages = [p for p in manifest.packages if p not in docker.CONTAINER_PACKAGES]
    managed.packages(name="GPU host packages", manifest=manifest, names=distro_packages)
    if role.ml_inputs is not None:  # its credentials file is owned by its account
        ml_backend.prepare(manifest)
    managed.directories(name="GPU host directories", manifest=manifest)
    managed.files(name="GPU host files", manifest=manifest)
    managed.sweep(name="GPU host files no longer wanted", manifest=manifest)
    if role.uses_docker:
        docker.deploy(manifest, plan)
    if plan.gpu.service.kind == "triton":
        triton.deploy(manifest, plan, role.service_inputs, role.by_model)
        if role.ml_inputs is not None:
            ml_backend.deploy(manifest, role.ml_inputs)
    else:
        http_service.deploy(manifest, plan, role.service_inputs)
    cloudflared_node.deploy(manifest, role.tunnel_inputs, plan)
    return manifest


def hand_over(plan: HostPlan, role: Role, site: Site) -> None:
    """`node_tunnel_mode: daemonset`: stop the host connector once the cluster's serves the
    tunnel. Called after the cluster's part of the run, which creates the DaemonSet."""
    cloudflared_node.hand_over(role.manifest, plan, site)
