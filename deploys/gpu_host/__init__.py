"""The GPU host role: its own tunnel connector and the GPU service behind `gpu.<base>`.

Everything the role manages is declared in one Manifest and read in one fact; the
operations then change only what differs. This file only composes: each service
declares its part of the manifest (`add_to`) and, once the role's packages, folders
and files are in place, runs its own steps (`deploy`) in its own module. A host marked
`require_gpu` without a usable NVIDIA GPU fails before anything on it changes.
"""

from __future__ import annotations

from deploys.gpu_host import cloudflared_node, docker, http_service, triton
from oceanid.preflight import HostPlan
from operations import gpu, managed
from operations.managed import Manifest


def check(plan: HostPlan) -> None:
    """Run first on a GPU host: stop before anything changes if its GPU is missing."""
    if plan.gpu is not None and plan.gpu.require_gpu:
        gpu.require(name="A usable NVIDIA GPU", gpus=plan.gpu.gpus)


def deploy(plan: HostPlan) -> Manifest:
    service = plan.gpu.service
    manifest = Manifest(name=f"gpu host {plan.name}")
    tunnel_inputs = cloudflared_node.add_to(manifest, plan)
    uses_docker = service.kind == "http" or service.runtime == "container"
    if uses_docker:
        docker.add_to(manifest)
    if service.kind == "triton":
        triton_inputs, by_model = triton.add_to(manifest, plan)
    else:
        http_inputs = http_service.add_to(manifest, plan)

    distro_packages = [p for p in manifest.packages if p not in docker.CONTAINER_PACKAGES]
    managed.packages(name="GPU host packages", manifest=manifest, names=distro_packages)
    managed.directories(name="GPU host directories", manifest=manifest)
    managed.files(name="GPU host files", manifest=manifest)
    managed.sweep(name="GPU host files no longer wanted", manifest=manifest)

    if uses_docker:
        docker.deploy(manifest, plan)
    if service.kind == "triton":
        triton.deploy(manifest, plan, triton_inputs, by_model)
    else:
        http_service.deploy(manifest, http_inputs)
    cloudflared_node.deploy(manifest, tunnel_inputs, plan)
    return manifest
