"""Docker with NVIDIA's container runtime, for a GPU service that runs in a container.

NVIDIA's container toolkit comes from NVIDIA's own apt repository, added only once its
signing key matched the pinned fingerprint; Docker's daemon.json names the `nvidia`
runtime, and Docker restarts when that file changes.
"""

from __future__ import annotations

import json

from oceanid.preflight import HostPlan
from operations import apt_repo, managed, services
from operations.managed import ManagedFile, Manifest

NVIDIA_KEY_URL = "https://nvidia.github.io/libnvidia-container/gpgkey"
NVIDIA_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
NVIDIA_SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
NVIDIA_REPO = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /"
DOCKER_DAEMON = "/etc/docker/daemon.json"
CONTAINER_PACKAGES = ["nvidia-container-toolkit"]  # from NVIDIA's repository, after the key


def add_to(manifest: Manifest) -> None:
    """Declare Docker's daemon.json, the packages and the unit; the keyring and the sources
    list are read each run, and written by the repository step only after the key is
    verified."""
    manifest.files += [
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
    manifest.read += [NVIDIA_KEYRING, NVIDIA_SOURCES]
    manifest.packages += CONTAINER_PACKAGES
    manifest.units.append("docker.service")


def deploy(manifest: Manifest, plan: HostPlan) -> None:
    """NVIDIA's repository and toolkit, then Docker restarted if its daemon.json changed."""
    apt_repo.signed_repository(
        name="NVIDIA container toolkit repository",
        manifest=manifest,
        key_url=NVIDIA_KEY_URL,
        fingerprint=plan.settings.nvidia_container_key_fingerprint,
        keyring=NVIDIA_KEYRING,
        sources_list=NVIDIA_SOURCES,
        repository=NVIDIA_REPO,
    )
    managed.packages(name="NVIDIA container toolkit", manifest=manifest, names=CONTAINER_PACKAGES)
    services.unit(
        name="Docker",
        manifest=manifest,
        unit_name="docker.service",
        unit_file=None,
        inputs=[DOCKER_DAEMON],
    )
