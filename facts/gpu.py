"""
Facts about NVIDIA GPUs, read with ``nvidia-smi``.

Triton's own ``nv_gpu_*`` metrics read zero on some machines (see the design notes, section 5), so
GPU state comes from ``nvidia-smi``. A host without the tool, or with the tool but no loaded driver,
is a normal state for these facts (a VPS, or a GPU host before its driver is installed): both give
an empty list instead of failing the host. Any other ``nvidia-smi`` failure still fails the fact, so
a broken driver is not mistaken for "no GPU".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypedDict, cast

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError
from typing_extensions import override

# What nvidia-smi prints (exit 9 / exit 6) when it is installed but there is nothing to query.
# The command passes these through with exit status 0 and `process` turns them into [].
NO_GPU_MESSAGES = (
    "couldn't communicate with the NVIDIA driver",
    "No devices were found",
)


class GpuDevice(TypedDict):
    index: int | None
    uuid: str | None
    name: str | None
    driver_version: str | None
    memory_total_mib: int | None
    memory_used_mib: int | None
    memory_free_mib: int | None
    utilization_gpu_percent: int | None
    temperature_gpu_c: int | None
    power_draw_w: float | None
    pci_bus_id: str | None
    compute_cap: str | None


class GpuProcess(TypedDict):
    pid: int | None
    process_name: str | None
    used_memory_mib: int | None
    gpu_uuid: str | None


def _optional(value: str) -> str | None:
    """``[N/A]``, ``[Not Supported]``, ``[Unknown Error]``... all mean "no value" to us."""
    value = value.strip()
    if not value or value == "N/A" or (value.startswith("[") and value.endswith("]")):
        return None
    return value


def _as_int(value: str) -> int | None:
    text = _optional(value)
    return None if text is None else int(float(text))


def _as_float(value: str) -> float | None:
    text = _optional(value)
    return None if text is None else float(text)


# (nvidia-smi field, our key, converter). The order is the order of the CSV columns, and it is the
# same 12-column query as shared/fixtures/nvidia-smi/h200, so real output can be fed in verbatim.
GPU_COLUMNS: tuple[tuple[str, str, Callable[[str], object]], ...] = (
    ("index", "index", _as_int),
    ("uuid", "uuid", _optional),
    ("name", "name", _optional),
    ("driver_version", "driver_version", _optional),
    ("memory.total", "memory_total_mib", _as_int),
    ("memory.used", "memory_used_mib", _as_int),
    ("memory.free", "memory_free_mib", _as_int),
    ("utilization.gpu", "utilization_gpu_percent", _as_int),
    ("temperature.gpu", "temperature_gpu_c", _as_int),
    ("power.draw", "power_draw_w", _as_float),
    ("pci.bus_id", "pci_bus_id", _optional),
    ("compute_cap", "compute_cap", _optional),
)

APP_FIELDS = ("pid", "process_name", "used_memory", "gpu_uuid")


def _nvidia_smi_query(query: str) -> str:
    """
    Build a shell command that runs one CSV query and settles the "nothing to query" cases.

    Exit 0 with no output when nvidia-smi is absent; exit 0 with nvidia-smi's own message when it
    runs but finds no driver or no device; nvidia-smi's exit status (output on stderr) otherwise.
    """
    patterns = "|".join(f'*"{message}"*' for message in NO_GPU_MESSAGES)
    return (
        "command -v nvidia-smi >/dev/null 2>&1 || exit 0; "
        f"out=$(nvidia-smi {query} --format=csv,noheader,nounits 2>&1); rc=$?; "
        'if [ "$rc" -eq 0 ]; then printf \'%s\\n\' "$out"; exit 0; fi; '
        f'case "$out" in {patterns}) printf \'%s\\n\' "$out"; exit 0;; esac; '
        'printf \'%s\\n\' "$out" >&2; exit "$rc"'
    )


def _no_gpu(output: Sequence[str]) -> bool:
    return any(message in line for line in output for message in NO_GPU_MESSAGES)


def _split_row(line: str, expected: int) -> list[str]:
    cells = [cell.strip() for cell in line.split(",")]
    if len(cells) != expected:
        raise FactProcessError(
            f"nvidia-smi printed {len(cells)} columns where {expected} were asked for: {line!r}",
        )
    return cells


class GpuDevices(FactBase[list[GpuDevice]]):
    """
    Returns one dict per GPU that ``nvidia-smi`` sees; ``[]`` without nvidia-smi or its driver.

    Values nvidia-smi reports as ``[N/A]`` or ``[Not Supported]`` are ``None``.

    .. code:: python

        [
            {
                "index": 0,
                "uuid": "GPU-c213ea9a-9dbd-a865-6568-fe7ca9ccb831",
                "name": "NVIDIA H200",
                "driver_version": "580.159.04",
                "memory_total_mib": 143771,
                "memory_used_mib": 0,
                "memory_free_mib": 143156,
                "utilization_gpu_percent": 0,
                "temperature_gpu_c": 36,
                "power_draw_w": 123.85,
                "pci_bus_id": "00000000:00:06.0",
                "compute_cap": "9.0",
            },
        ]
    """

    default = list

    @override
    def command(self) -> str:
        fields = ",".join(field for field, _, _ in GPU_COLUMNS)
        return _nvidia_smi_query(f"--query-gpu={fields}")

    @override
    def process(self, output: list[str]) -> list[GpuDevice]:
        if _no_gpu(output):
            return []
        devices: list[GpuDevice] = []
        for line in output:
            if not line.strip():
                continue
            cells = _split_row(line, len(GPU_COLUMNS))
            device = {
                key: convert(cell)
                for (_, key, convert), cell in zip(GPU_COLUMNS, cells, strict=True)
            }
            devices.append(cast(GpuDevice, device))
        return devices


class GpuProcesses(FactBase[list[GpuProcess]]):
    """
    Returns the compute processes holding GPU memory; ``[]`` when none, or without a GPU.

    .. code:: python

        [
            {
                "pid": 421,
                "process_name": "python3",
                "used_memory_mib": 4334,
                "gpu_uuid": "GPU-c213ea9a-9dbd-a865-6568-fe7ca9ccb831",
            },
        ]
    """

    default = list

    @override
    def command(self) -> str:
        return _nvidia_smi_query(f"--query-compute-apps={','.join(APP_FIELDS)}")

    @override
    def process(self, output: list[str]) -> list[GpuProcess]:
        if _no_gpu(output):
            return []
        processes: list[GpuProcess] = []
        for line in output:
            if not line.strip():
                continue
            # nvidia-smi does not quote CSV cells, and a process name may hold a comma: the
            # first cell is the pid and the last two are memory and uuid, the rest is the name.
            head, _, tail = line.partition(",")
            middle, used_memory, gpu_uuid = _split_tail(tail, line)
            processes.append(
                GpuProcess(
                    pid=_as_int(head),
                    process_name=_optional(middle),
                    used_memory_mib=_as_int(used_memory),
                    gpu_uuid=_optional(gpu_uuid),
                ),
            )
        return processes


def _split_tail(tail: str, line: str) -> tuple[str, str, str]:
    parts = tail.rsplit(",", 2)
    if len(parts) != 3:
        raise FactProcessError(f"nvidia-smi compute-apps row has too few columns: {line!r}")
    return parts[0], parts[1], parts[2]
