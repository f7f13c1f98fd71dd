"""Any other HTTP model server in a container (the operations guide's Docling-Granite
HTTP server case): image, port and environment from host data.

The environment goes to an 0600 env file that Docker reads, so values such as an access
token never appear in the unit or in `docker run`'s arguments.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from deploys.gpu_host.triton import docker_gpus
from oceanid.preflight import HostPlan
from operations import services
from operations.managed import ManagedDirectory, ManagedFile, Manifest

HERE = Path(__file__).parent
UNIT = "gpu-http.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
ENV_FILE = "/etc/oceanid/gpu-http.env"


def add_to(manifest: Manifest, plan: HostPlan) -> list[str]:
    service = plan.gpu.service
    unit = Template((HERE / "gpu-http.service").read_text()).substitute(
        image=service.image, gpus=docker_gpus(plan.gpu.gpus), port=service.port, env_file=ENV_FILE
    )
    env = "".join(f"{key}={value}\n" for key, value in sorted(service.environment.items()))
    manifest.packages.append(service.docker_package)
    manifest.directories.append(ManagedDirectory("/etc/oceanid", "0755"))
    manifest.files += [
        ManagedFile(ENV_FILE, env.encode(), mode="0600", secret=True),
        ManagedFile(UNIT_FILE, unit.encode()),
    ]
    manifest.units.append(UNIT)
    return [ENV_FILE]


def deploy(manifest: Manifest, inputs: list[str]) -> None:
    """The service's unit, restarted when its env file (or the unit) changed."""
    services.unit(
        name="GPU HTTP service",
        manifest=manifest,
        unit_name=UNIT,
        unit_file=UNIT_FILE,
        inputs=inputs,
    )
