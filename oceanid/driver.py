"""The NVIDIA driver a GPU host runs, against the one the pinned Triton image needs.

NVIDIA states each Triton container release's minimum driver in its release notes ("Driver
Requirements": 25.08, built on CUDA 13.0, needs release 575 or later); `triton_min_driver`
in group_data holds it next to `triton_image`. A container built for a newer CUDA than the
host's driver fails only when Triton starts ("CUDA driver version is insufficient"), after the
image was pulled; the comparison makes that a refusal before anything changes, naming the
driver to install.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def release(version: str) -> tuple[int, ...]:
    """`580.159.04` -> (580, 159, 4); a part that is not a number ends the tuple."""
    parts: list[int] = []
    for part in version.strip().split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def older(version: str, minimum: str) -> bool:
    """Whether driver `version` is older than `minimum` (`575` means any 575.x)."""
    have, need = release(version), release(minimum)
    return not have or have[: len(need)] < need


def problem(
    host: str, devices: Iterable[Mapping[str, object]], minimum: str, image: str
) -> str | None:
    """One line naming the host, its driver, the image and what to install; None when every
    GPU's driver is new enough (or nvidia-smi gave no version: the GPU check says so)."""
    versions = sorted({str(d["driver_version"]) for d in devices if d.get("driver_version")})
    stale = [v for v in versions if older(v, minimum)]
    if not stale:
        return None
    return (
        f"{host}: NVIDIA driver {', '.join(stale)} is older than the {minimum} that "
        f"triton_image {image} needs (NVIDIA's release notes of that Triton release, Driver "
        f"Requirements); install driver release {minimum} or later (Debian: the "
        f"nvidia-driver package of NVIDIA's CUDA repository; Ubuntu: `ubuntu-drivers install "
        f"nvidia:{release(minimum)[0]}` or newer) and reboot, or pin an older triton_image "
        "with its own triton_min_driver"
    )
