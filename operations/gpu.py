"""Refuse to deploy a GPU service on a host that must have a GPU and has none.

The stack we replace let Triton fall back to the CPU when its GPU probe failed, and
production served slowly for days. A host marked `require_gpu` now stops here, before
anything on it changes.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation

from facts.gpu import GpuDevices
from oceanid import driver
from operations.failure import refuse


@operation(is_idempotent=True)
def require(gpus: list[int] | None = None, min_driver: str | None = None, image: str | None = None):
    """
    Fail unless nvidia-smi sees a usable NVIDIA GPU (each of `gpus`, when given) whose driver
    is at least `min_driver`, the release the Triton image needs.

    + gpus: GPU indexes the host's services are pinned to
    + min_driver: the NVIDIA driver release `image` needs (None: not compared)
    + image: the container image that needs it, named in the refusal
    """
    name = host.name.rsplit("/", 1)[-1]  # "@ssh/calypso" is calypso to its settings
    devices = host.get_fact(GpuDevices)
    present = {device["index"] for device in devices}
    missing = sorted(set(gpus or []) - present)
    if not devices:
        yield from refuse(
            f"{name}: no usable NVIDIA GPU (nvidia-smi is missing or sees no device). "
            "This host is marked require_gpu, so nothing was deployed instead of falling back "
            f"to the CPU. Install the NVIDIA driver, or set hosts.{name}.gpu.require_gpu: false."
        )
    elif missing:
        yield from refuse(
            f"{name}: GPU index(es) {missing} are configured in hosts.{name}.gpu.gpus but "
            f"nvidia-smi lists only {sorted(present)}"
        )
    elif min_driver and (stale := driver.problem(name, devices, min_driver, image or "?")):
        yield from refuse(stale)
    else:
        names = ", ".join(f"{d['index']}: {d['name']}" for d in devices)
        drivers = ", ".join(sorted({str(d["driver_version"]) for d in devices}))
        host.noop(f"GPU present ({names}; driver {drivers})")
        yield from ()  # an operation is a generator; pyinfra iterates what it returns
