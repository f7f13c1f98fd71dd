"""Any other HTTP model server in a container (the operations guide's Docling-Granite
HTTP server case): image, port and environment from host data.

The environment goes to an 0600 env file that Docker reads, so values such as an access
token never appear in the unit or in `docker run`'s arguments. The image is made present
by the deploy (pulled, or loaded from `image_archive`) before the unit starts, so a start
never needs a registry; a changed image changes the unit, which restarts it once.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from deploys.gpu_host.triton import gpu_options, unit_options
from oceanid.model import HostPlan
from operations import docker as docker_ops
from operations import services
from operations.managed import DesiredState, ManagedDirectory, ManagedFile

HERE = Path(__file__).parent
UNIT = "gpu-http.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
ENV_FILE = "/etc/oceanid/gpu-http.env"


def add_to(desired: DesiredState, plan: HostPlan) -> list[str]:
    service = plan.gpu.service
    unit = Template((HERE / "gpu-http.service").read_text()).substitute(
        image=service.image, options=unit_options(gpu_options(plan)), port=service.port,
        env_file=ENV_FILE,
    )  # fmt: skip
    env = "".join(f"{key}={value}\n" for key, value in sorted(service.environment.items()))
    docker_ops.probe_image(desired, service.image)
    desired.directories.append(ManagedDirectory("/etc/oceanid", "0755"))
    desired.files += [
        ManagedFile(ENV_FILE, env.encode(), mode="0600", secret=True),
        ManagedFile(UNIT_FILE, unit.encode()),
    ]
    desired.units.append(UNIT)
    return [ENV_FILE]


def deploy(desired: DesiredState, plan: HostPlan, inputs: list[str]) -> None:
    """The image on disk, then the service's unit, restarted when its env file (or the
    unit) changed."""
    service = plan.gpu.service
    archive = service.image_archive
    docker_ops.image(
        name="GPU HTTP service's image",
        desired=desired,
        image=service.image,
        archive_url=archive.url if archive else None,
        archive_sha256=archive.sha256 if archive else None,
        setting=f"hosts.{plan.name}.gpu.service.image",
        archive_setting=f"hosts.{plan.name}.gpu.service.image_archive",
    )
    services.unit(
        name="GPU HTTP service",
        desired=desired,
        unit_name=UNIT,
        unit_file=UNIT_FILE,
        inputs=inputs,
    )
