"""Docker for a GPU service that runs in a container, with NVIDIA's runtime where a GPU is.

An existing Docker (Docker CE, Debian's docker.io, any package providing dockerd) is used as
it is: the service's `docker_package` is installed only where no dockerd is, since docker.io
conflicts with docker-ce and installing it would remove the workstation's Docker.

On a host that must have a GPU, NVIDIA's container toolkit comes from NVIDIA's own apt
repository, added only once its signing key matched the pinned fingerprint, and its runtime
is merged into daemon.json (every other key kept). Docker registers runtimes and `--gpus`
only when it starts, so it restarts exactly when the toolkit is installed or daemon.json
changes in this run, the first run included. A host without `require_gpu` (the lab: no
GPU, no route to NVIDIA's repository) gets none of that, and the run says so.
"""

from __future__ import annotations

from pyinfra import host

from oceanid.model import HostPlan
from operations import apt_repo, managed, services
from operations import docker as docker_ops
from operations.managed import DesiredState

NVIDIA_KEY_URL = "https://nvidia.github.io/libnvidia-container/gpgkey"
NVIDIA_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
NVIDIA_SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
NVIDIA_REPO = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /"
DOCKER_DAEMON = "/etc/docker/daemon.json"
CONTAINER_PACKAGES = ["nvidia-container-toolkit"]  # from NVIDIA's repository, after the key
RUNTIMES = {"nvidia": {"path": "nvidia-container-runtime", "args": []}}
UNIT = "docker.service"


def add_to(desired: DesiredState, plan: HostPlan) -> None:
    """Declare what the role reads about Docker: whether dockerd is installed, and, where a
    GPU is required, daemon.json, the toolkit, NVIDIA's keyring and sources list (written
    by the repository step only after the key is verified)."""
    docker_ops.probe_engine(desired)
    if plan.gpu.require_gpu:
        desired.read += [NVIDIA_KEYRING, NVIDIA_SOURCES, DOCKER_DAEMON]
        desired.packages += CONTAINER_PACKAGES
    desired.units.append(UNIT)


def restart_needed(desired: DesiredState, plan: HostPlan) -> bool:
    """Whether Docker must restart in this run: the toolkit is installed now (it was not
    when the state was read) or daemon.json changes. Docker started by its own package
    install, before either, would otherwise never register the NVIDIA runtime."""
    if not plan.gpu.require_gpu or desired.unreadable():
        return False
    installed = desired.state()["packages"]
    toolkit_new = any(not installed.get(name) for name in CONTAINER_PACKAGES)
    return toolkit_new or docker_ops.daemon_json_changes(desired, DOCKER_DAEMON, RUNTIMES)


def deploy(desired: DesiredState, plan: HostPlan) -> None:
    """Docker found or installed; NVIDIA's repository, toolkit and runtime where a GPU is
    required; then Docker running, restarted if the toolkit or daemon.json changed."""
    found = docker_ops.engine(desired)
    if found is None:
        managed.packages(
            name="Docker engine package", desired=desired, names=[plan.gpu.service.docker_package]
        )
    else:
        host.log(f"Docker: dockerd found at {found}; used as it is")
    if plan.gpu.require_gpu:
        apt_repo.signed_repository(
            name="NVIDIA container toolkit repository",
            desired=desired,
            key_url=NVIDIA_KEY_URL,
            fingerprint=plan.settings.nvidia_container_key_fingerprint,
            keyring=NVIDIA_KEYRING,
            sources_list=NVIDIA_SOURCES,
            repository=NVIDIA_REPO,
        )
        managed.packages(name="NVIDIA container toolkit", desired=desired, names=CONTAINER_PACKAGES)
        docker_ops.daemon_json(
            name="Docker's NVIDIA runtime", desired=desired, path=DOCKER_DAEMON, runtimes=RUNTIMES
        )
    else:
        host.log("Docker: no GPU required here (require_gpu: false): NVIDIA runtime skipped")
    services.unit(
        name="Docker",
        desired=desired,
        unit_name=UNIT,
        unit_file=None,
        inputs=[],
        restart=restart_needed(desired, plan),
    )
