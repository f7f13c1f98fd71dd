"""Triton on a GPU host, and the model repository it serves from /opt/triton/models.

Two runtimes, chosen by host data: `container` (production: the pinned image under
Docker with the GPU passed through) and `host` (the tritonserver that the nvidia-pytriton
wheel carries, in a venv under /opt/triton, run by systemd; the lab runs this on the
CPU). Both use explicit model control: every model loads at start, and a changed model
is loaded again through the repository API after its upload, so a model change never
restarts Triton.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path
from string import Template

from oceanid import triton_repo
from oceanid.preflight import HostPlan
from oceanid.triton_runtime import STUB, TritonDistribution, server_command
from operations.managed import ManagedDirectory, ManagedFile, Manifest

HERE = Path(__file__).parent
REPO = HERE.parent.parent
MODEL_SOURCE = REPO / "triton-models"
ROOT = "/opt/triton"
MODELS = f"{ROOT}/models"
VENV = f"{ROOT}/venv"
DIST = f"{ROOT}/dist"  # symlink to the venv's site-packages: version-free paths for the unit
BACKENDS = f"{ROOT}/backends"
STAMP = f"{VENV}/.oceanid-stamp"
WHEEL_REQUIREMENTS = f"{ROOT}/wheel-requirements.txt"
MODEL_REQUIREMENTS = f"{ROOT}/model-requirements.txt"
UNIT = "tritonserver.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
HOST_PACKAGES = ["python3-venv", "libpython3-dev"]


def model_files(plan: HostPlan) -> dict[str, bytes]:
    """The repository as this host serves it: instance_group and parameters filled in."""
    gpu = plan.gpu
    on_gpu = gpu.require_gpu  # a GPU host never falls back to the CPU
    parameters = {}
    if gpu.granite_model_dir:
        parameters["docling_granite_python"] = {"granite_model_dir": gpu.granite_model_dir}
    return triton_repo.render_repository(
        MODEL_SOURCE,
        instance_kind="KIND_GPU" if on_gpu else "KIND_CPU",
        gpus=list(gpu.gpus) if on_gpu and gpu.gpus is not None else None,
        parameters_by_model=parameters,
    )


def requirements() -> list[str]:
    """Every model's declared Python requirements, merged in a stable order."""
    merged: dict[str, None] = {}
    for reqs in triton_repo.model_requirements(MODEL_SOURCE).values():
        merged.update(dict.fromkeys(reqs))
    return list(merged)


def wheel_requirement(plan: HostPlan) -> str:
    """The Triton wheel, pinned by version and by the SHA-256 of each architecture's wheel."""
    pin = plan.settings.triton_wheel
    hashes = " ".join(f"--hash=sha256:{sha}" for _, sha in sorted(pin.sha256.items()))
    return f"nvidia-pytriton=={pin.version} {hashes}\n"


def host_unit() -> str:
    distribution = TritonDistribution(Path(DIST))
    command = server_command(
        distribution, backends=Path(BACKENDS), model_repository=Path(MODELS)
    )  # explicit model control, every endpoint on 127.0.0.1:8000-8002, as the contract test runs
    return Template((HERE / "tritonserver-host.service").read_text()).substitute(
        ld_library_path=str(distribution.libs),
        path=f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        command=" ".join(shlex.quote(part) for part in command),
    )


def docker_gpus(gpus: list[int] | None) -> str:
    """`docker run --gpus` as a unit file must spell it.

    docker reads the value as CSV, so a device list needs its double quotes, and systemd
    strips one level of quoting: single quotes keep them.
    """
    return "all" if gpus is None else "'\"device=" + ",".join(map(str, gpus)) + "\"'"


def container_unit(plan: HostPlan) -> str:
    return Template((HERE / "tritonserver-container.service").read_text()).substitute(
        image=plan.settings.triton_image,
        gpus=docker_gpus(plan.gpu.gpus),
        shm_size="1g",
        models=MODELS,
        model_env=VENV,
        model_site=f"{DIST}",
    )


def environment_stale(manifest: Manifest, plan: HostPlan) -> bool:
    """The venv will be rebuilt (new pins, or it was removed): Triton must restart on it."""
    return manifest.state()["contents"].get(STAMP) != stamp(plan)


def stamp(plan: HostPlan) -> bytes:
    """What the venv was built from; a different stamp rebuilds it."""
    digest = hashlib.sha256()
    for part in (wheel_requirement(plan), "\n".join(requirements())):
        digest.update(part.encode())
    return f"{plan.settings.triton_wheel.version} {digest.hexdigest()}\n".encode()


def add_to(manifest: Manifest, plan: HostPlan) -> tuple[list[str], dict[str, list[str]]]:
    """Declare Triton's files; return (paths that restart it, model name -> its paths).

    Triton restarts when its Python environment's pins change (the requirements files the
    environment is built from), never for a model: models are loaded through the API.
    """
    runtime = plan.gpu.service.runtime
    manifest.users.append("triton")
    manifest.directories += [
        ManagedDirectory(ROOT, "0755"),
        ManagedDirectory(MODELS, "0755"),
    ]
    files = model_files(plan)
    by_model: dict[str, list[str]] = {}
    for relpath in sorted(files):
        model = relpath.split("/", 1)[0]
        path = f"{MODELS}/{relpath}"
        parent = path.rsplit("/", 1)[0]
        if parent != MODELS and all(d.path != parent for d in manifest.directories):
            manifest.directories.append(ManagedDirectory(parent, "0755"))
        manifest.files.append(ManagedFile(path, files[relpath]))
        by_model.setdefault(model, []).append(path)
    manifest.trees.append(MODELS)
    manifest.files += [
        ManagedFile(WHEEL_REQUIREMENTS, wheel_requirement(plan).encode()),
        ManagedFile(MODEL_REQUIREMENTS, ("\n".join(requirements()) + "\n").encode()),
    ]
    manifest.read.append(STAMP)
    if runtime == "host":
        manifest.packages += HOST_PACKAGES
        unit_text = host_unit()
        restart_on = [WHEEL_REQUIREMENTS, MODEL_REQUIREMENTS]
    else:
        manifest.packages += [plan.gpu.service.docker_package, "python3-venv"]
        unit_text = container_unit(plan)
        restart_on = [MODEL_REQUIREMENTS]
    manifest.files.append(ManagedFile(UNIT_FILE, unit_text.encode()))
    manifest.units.append(UNIT)
    return restart_on, by_model


def site_link_command() -> str:
    """The container runtime mounts the venv's site-packages for the models' requirements."""
    site = f"$({VENV}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')"
    return f'ln -sfn "{site}" {DIST}'


def backend_copy_command() -> str:
    """Assemble the backends folder from the installed wheel, for the venv's Python."""
    site = f"$({VENV}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')"
    version = f"$({VENV}/bin/python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])')"
    python_backend = "$site/pytriton/tritonserver/backends/python"
    return (
        f'site="{site}" && version="{version}" && ln -sfn "$site" {DIST} && '
        f"install -d -m 0755 {BACKENDS}/python && "
        f"install -m 0644 {python_backend}/libtriton_python.so "
        f"{python_backend}/triton_python_backend_utils.py {BACKENDS}/python/ && "
        f'install -m 0755 "$site/pytriton/tritonserver/python_backend_stubs/$version/{STUB}" '
        f"{BACKENDS}/python/{STUB}"
    )
