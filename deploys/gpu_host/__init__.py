"""The GPU host role: its own tunnel connector and the GPU service behind `gpu.<base>`.

Everything the role manages is declared in one Manifest and read in one fact; the
operations then change only what differs. A host marked `require_gpu` without a usable
NVIDIA GPU fails before anything on it changes.
"""

from __future__ import annotations

import json

from deploys.gpu_host import cloudflared_node, http_service, triton
from oceanid.preflight import HostPlan
from operations import apt_repo, gpu, managed, services
from operations import triton as triton_ops
from operations.managed import ManagedFile, Manifest

NVIDIA_KEY_URL = "https://nvidia.github.io/libnvidia-container/gpgkey"
NVIDIA_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
NVIDIA_SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
NVIDIA_REPO = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /"
DOCKER_DAEMON = "/etc/docker/daemon.json"
CONTAINER_PACKAGES = ["nvidia-container-toolkit"]  # from NVIDIA's repository, after the key


def _container_prerequisites(manifest: Manifest) -> None:
    manifest.files += [
        ManagedFile(
            NVIDIA_SOURCES,
            f"deb [signed-by={NVIDIA_KEYRING}] {NVIDIA_REPO}\n".encode(),
        ),
        ManagedFile(
            DOCKER_DAEMON,
            (
                json.dumps(
                    {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}},
                    indent=2,
                )
                + "\n"
            ).encode(),
        ),
    ]
    manifest.read.append(NVIDIA_KEYRING)
    manifest.packages += CONTAINER_PACKAGES
    manifest.units.append("docker.service")


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
        _container_prerequisites(manifest)
    if service.kind == "triton":
        triton_inputs, by_model = triton.add_to(manifest, plan)
    else:
        http_inputs = http_service.add_to(manifest, plan)

    distro_packages = [p for p in manifest.packages if p not in CONTAINER_PACKAGES]
    managed.packages(name="GPU host packages", manifest=manifest, names=distro_packages)
    managed.directories(name="GPU host directories", manifest=manifest)
    managed.binaries(name="cloudflared (pinned, SHA-256 verified)", manifest=manifest)
    managed.files(name="GPU host files", manifest=manifest)
    managed.sweep(name="GPU host files no longer wanted", manifest=manifest)
    if uses_docker:
        apt_repo.signed_repository(
            name="NVIDIA container toolkit repository",
            manifest=manifest,
            key_url=NVIDIA_KEY_URL,
            fingerprint=plan.settings.nvidia_container_key_fingerprint,
            keyring=NVIDIA_KEYRING,
            sources_list=NVIDIA_SOURCES,
        )
        managed.packages(
            name="NVIDIA container toolkit", manifest=manifest, names=CONTAINER_PACKAGES
        )
        services.unit(
            name="Docker",
            manifest=manifest,
            unit_name="docker.service",
            unit_file=None,
            inputs=[DOCKER_DAEMON],
        )

    if service.kind == "triton":
        host_runtime = service.runtime == "host"
        managed.account(
            name="Triton's service account", manifest=manifest, user="triton", system=True
        )
        triton_ops.environment(
            name="Triton's Python environment",
            manifest=manifest,
            venv=triton.VENV,
            stamp_path=triton.STAMP,
            stamp=triton.stamp(plan),
            wheel_requirements=triton.WHEEL_REQUIREMENTS if host_runtime else None,
            model_requirements=triton.MODEL_REQUIREMENTS,
            finish=triton.backend_copy_command() if host_runtime else triton.site_link_command(),
        )
        stray = triton_ops.strays(manifest, triton.MODELS, set(by_model))
        triton_ops.prune(
            name="Stray model files", manifest=manifest, root=triton.MODELS, models=sorted(by_model)
        )
        rebuilt = triton.environment_stale(manifest, plan)
        todo = services.actions(manifest, triton.UNIT, triton.UNIT_FILE, triton_inputs, rebuilt)
        services.unit(
            name="tritonserver",
            manifest=manifest,
            unit_name=triton.UNIT,
            unit_file=triton.UNIT_FILE,
            inputs=triton_inputs,
            restart=rebuilt,
        )
        changed = sorted(
            name
            for name, paths in by_model.items()
            if manifest.will_change(paths) or any(r.split("/", 1)[0] == name for r in stray)
        )
        triton_ops.load(name="Load changed models", models=[] if todo else changed)
    else:
        services.unit(
            name="GPU HTTP service",
            manifest=manifest,
            unit_name=http_service.UNIT,
            unit_file=http_service.UNIT_FILE,
            inputs=http_inputs,
        )

    services.unit(
        name="cloudflared-node",
        manifest=manifest,
        unit_name=cloudflared_node.UNIT,
        unit_file=cloudflared_node.UNIT_FILE,
        inputs=tunnel_inputs,
    )
    return manifest
