"""Triton on a GPU host, and the model repository it serves from /opt/triton/models.

Two runtimes, chosen by host data: `container` (production: the pinned image under
Docker with the GPU passed through) and `host` (the tritonserver that the nvidia-pytriton
wheel carries, in a venv under /opt/triton, run by systemd; the lab runs this on the
CPU). Both use explicit model control: every model loads at start, and a changed model
is loaded again through the repository API after its upload, so a model change never
restarts Triton.

Triton's ports follow the service's `port`: HTTP on it, gRPC on the next, metrics on the
one after, all on 127.0.0.1, so the tunnel's ingress, the unit, the readiness wait and the
model loads agree. Its Python environment is one of /opt/triton/venvs, reached through the
/opt/triton/venv link, which the unit uses for every path: switching the link to a new
environment takes effect only when Triton restarts, which the deploy then does.

In a container the models' packages must match the image's Python, not the host's (the NGC
image runs 3.12; a Debian 12 host builds for 3.11, and numpy's compiled modules would not
import): the image itself builds a venv of its Python in the new environment and installs
them there; the unit mounts it read-only at CONTAINER_ENV, the path it was built at, with
its bin/ first on PATH, which is how Triton's Python stub finds them. The image is on disk
before the unit starts (pulled, or loaded from an archive, by the deploy), so a start needs
no registry.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import NamedTuple

from pyinfra.api import QuoteString, StringCommand

from oceanid import triton_repo
from oceanid.model import HostPlan
from oceanid.triton_runtime import STUB, TritonDistribution, server_command
from operations import docker as docker_ops
from operations import managed, services
from operations import triton as triton_ops
from operations.managed import DesiredState, ManagedDirectory, ManagedFile

HERE = Path(__file__).parent
REPO = HERE.parent.parent
MODEL_SOURCE = REPO / "triton-models"
ROOT = "/opt/triton"
MODELS = f"{ROOT}/models"
VENV = f"{ROOT}/venv"  # a link to the current environment under ENVS: the unit's paths use it
ENVS = f"{ROOT}/venvs"
DIST = f"{VENV}/dist"  # host runtime: link to the env's site-packages, version-free for the unit
CONTAINER_ENV = triton_ops.IMAGE_MOUNT  # where containers see the environment (run: read-only)
BACKENDS = f"{VENV}/backends"
STAMP_NAME = ".oceanid-stamp"
STAMP = f"{VENV}/{STAMP_NAME}"
LEGACY = [f"{ROOT}/dist", f"{ROOT}/backends"]  # the layout before ENVS; removed with old envs
LAYOUT = "envs under venvs/, dist and backends inside each"  # in the stamp: a new layout rebuilds
CONTAINER_LAYOUT = "built by the image: venv/, python-version and container.env in each env"
WHEEL_REQUIREMENTS = f"{ROOT}/wheel-requirements.txt"
MODEL_REQUIREMENTS = f"{ROOT}/model-requirements.txt"
UNIT = "tritonserver.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
HOST_PACKAGES = ["python3-venv", "libpython3-dev"]


def model_gpus(plan: HostPlan) -> list[int] | None:
    """The GPU indexes config.pbtxt names: the host's, or in a container the devices as Docker
    renumbers them from 0 (`gpus: [1]` is passed as `device=1` and seen as GPU 0 there)."""
    gpus = plan.gpu.gpus
    if gpus is None or not plan.gpu.require_gpu:
        return None
    return list(range(len(gpus))) if plan.gpu.service.runtime == "container" else list(gpus)


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
        gpus=model_gpus(plan),
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


class Ports(NamedTuple):
    """Triton's three ports."""

    http: int
    grpc: int
    metrics: int


def ports(plan: HostPlan) -> Ports:
    """Triton's HTTP, gRPC and metrics ports: the service's port and the two after it."""
    http = plan.gpu.service.port
    return Ports(http, http + 1, http + 2)


def host_unit(plan: HostPlan) -> str:
    distribution = TritonDistribution(Path(DIST))
    http, grpc, metrics = ports(plan)
    command = server_command(
        distribution,
        backends=Path(BACKENDS),
        model_repository=Path(MODELS),
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
    )  # explicit model control, every endpoint on 127.0.0.1, as the contract test runs
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


def unit_word(value: str) -> str:
    """`value` as one word of a unit's command line: quoted as the shell would (systemd
    splits the same way), with systemd's own specifier and variable signs doubled."""
    return shlex.quote(value).replace("%", "%%").replace("$", "$$")


def unit_options(words: Sequence[str]) -> str:
    """Optional words of a unit's `docker run`, each followed by its space (none: empty)."""
    return "".join(f"{word} " for word in words)


def gpu_options(plan: HostPlan) -> list[str]:
    """`--gpus` only where a GPU is required: the lab's hosts have none to pass."""
    return ["--gpus", docker_gpus(plan.gpu.gpus)] if plan.gpu.require_gpu else []


def container_unit(plan: HostPlan) -> str:
    memlock = plan.gpu.service.memlock
    granite = plan.gpu.granite_model_dir
    volumes = ["-v", unit_word(f"{granite}:{granite}:ro")] if granite else []
    return Template((HERE / "tritonserver-container.service").read_text()).substitute(
        image=plan.settings.triton_image,
        options=unit_options(gpu_options(plan)),
        shm_size="1g",
        memlock=-1 if memlock == "unlimited" else memlock,
        models=MODELS,
        model_env=VENV,
        container_env=CONTAINER_ENV,
        env_file=triton_ops.IMAGE_ENV_FILE,
        volumes=unit_options(volumes),
        http_port=ports(plan).http,
        grpc_port=ports(plan).grpc,
        metrics_port=ports(plan).metrics,
    )


def environment_stale(desired: DesiredState, plan: HostPlan) -> bool:
    """A new environment will be built (new pins, or it was removed): Triton must restart on it."""
    return desired.state()["contents"].get(STAMP) != stamp(plan)


def stamp(plan: HostPlan) -> bytes:
    """What the environment was built from; a different stamp builds a new one. In a
    container: the image (its Python) and the models' requirements."""
    digest = hashlib.sha256()
    if plan.gpu.service.runtime == "container":
        for part in (plan.settings.triton_image, "\n".join(requirements()), CONTAINER_LAYOUT):
            digest.update(part.encode())
        return f"container {digest.hexdigest()}\n".encode()
    for part in (wheel_requirement(plan), "\n".join(requirements()), LAYOUT):
        digest.update(part.encode())
    return f"{plan.settings.triton_wheel.version} {digest.hexdigest()}\n".encode()


def environment_path(plan: HostPlan) -> str:
    """A new folder to build the environment in: named after its inputs and the time, so a
    rebuild with the same inputs (its stamp removed by hand) never lands on the one in use."""
    built = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return f"{ENVS}/{hashlib.sha256(stamp(plan)).hexdigest()[:12]}-{built}"


@dataclass(frozen=True)
class Declared:
    """What Triton's steps (`deploy`) need from its declaration (`add_to`)."""

    restart_on: list[str]  # the paths whose change restarts Triton
    by_model: dict[str, list[str]]  # model name -> its files


def add_to(desired: DesiredState, plan: HostPlan) -> Declared:
    """Declare Triton's files; return the paths that restart it and each model's paths.

    Triton restarts when its Python environment's pins change (the requirements files the
    environment is built from), never for a model: models are loaded through the API.
    """
    runtime = plan.gpu.service.runtime
    desired.users.append("triton")
    desired.directories += [
        ManagedDirectory(ROOT, "0755"),
        ManagedDirectory(ENVS, "0755"),
        ManagedDirectory(MODELS, "0755"),
    ]
    files = model_files(plan)
    by_model: dict[str, list[str]] = {}
    for relpath in sorted(files):
        model = relpath.split("/", 1)[0]
        path = f"{MODELS}/{relpath}"
        parent = path.rsplit("/", 1)[0]
        if parent != MODELS and all(d.path != parent for d in desired.directories):
            desired.directories.append(ManagedDirectory(parent, "0755"))
        desired.files.append(ManagedFile(path, files[relpath]))
        by_model.setdefault(model, []).append(path)
    desired.trees.append(MODELS)
    desired.files += [
        ManagedFile(WHEEL_REQUIREMENTS, wheel_requirement(plan).encode()),
        ManagedFile(MODEL_REQUIREMENTS, ("\n".join(requirements()) + "\n").encode()),
    ]
    desired.read.append(STAMP)
    if runtime == "host":
        desired.packages += HOST_PACKAGES
        unit_text = host_unit(plan)
        restart_on = [WHEEL_REQUIREMENTS, MODEL_REQUIREMENTS]
    else:  # Docker is the Docker role's (deploys/gpu_host/docker.py); the image builds the env
        docker_ops.probe_image(desired, plan.settings.triton_image)
        unit_text = container_unit(plan)
        restart_on = [MODEL_REQUIREMENTS]
    desired.files.append(ManagedFile(UNIT_FILE, unit_text.encode()))
    desired.units.append(UNIT)
    return Declared(restart_on, by_model)


def _joined(*bits: object) -> StringCommand:
    """One shell word made of `bits` (quoted parts and `"$var"` side by side)."""
    return StringCommand(*bits, _separator="")


def _python(env: str, expression: str) -> StringCommand:
    """`"$(…)"`: what the new environment's Python says `expression` is."""
    script = f"import os, sys, sysconfig; print({expression})"
    return _joined('"$(', QuoteString(f"{env}/bin/python"), " -c ", QuoteString(script), ')"')


def backend_copy_command(env: str) -> StringCommand:
    """Host runtime: `dist` links to the environment's site-packages (a relative link), and
    its backends folder is assembled from its wheel, for its Python version."""
    site = _python(env, 'os.path.relpath(sysconfig.get_paths()["purelib"], sys.prefix)')
    python_backend = f"{env}/dist/pytriton/tritonserver/backends/python"
    stubs = QuoteString(f"{env}/dist/pytriton/tritonserver/python_backend_stubs/")
    backends = f"{env}/backends/python"
    return StringCommand(
        "ln", "-sfn", site, QuoteString(f"{env}/dist"), "&&",
        _joined("version=", _python(env, '"%d.%d" % sys.version_info[:2]')), "&&",
        "install", "-d", "-m", "0755", QuoteString(backends), "&&",
        "install", "-m", "0644", QuoteString(f"{python_backend}/libtriton_python.so"),
        QuoteString(f"{python_backend}/triton_python_backend_utils.py"),
        QuoteString(f"{backends}/"), "&&",
        "install", "-m", "0755", _joined(stubs, '"$version"/', STUB),
        QuoteString(f"{backends}/{STUB}"),
    )  # fmt: skip


def deploy(desired: DesiredState, plan: HostPlan, declared: Declared) -> None:
    """Triton's steps, once the role's packages, folders and files are in place (`declared`:
    what its `add_to` returned).

    The environment is built and switched to, stray and retired model files go, then the
    unit is (re)started only if its pins changed and Triton must answer ready on it; models
    whose files changed are otherwise loaded into the running Triton. Older environments
    are removed last, after Triton answered ready on the new one.
    """
    restart_on, by_model = declared.restart_on, declared.by_model
    http_port = ports(plan).http
    host_runtime = plan.gpu.service.runtime == "host"
    image = None if host_runtime else plan.settings.triton_image
    models = sorted(by_model)
    rebuilt = environment_stale(desired, plan)
    env = environment_path(plan)
    managed.account(name="Triton's service account", desired=desired, user="triton", system=True)
    if image is not None:  # before the environment, which this image builds
        archive = plan.settings.triton_image_archive
        docker_ops.image(
            name="Triton's image",
            desired=desired,
            image=image,
            archive_url=archive.url if archive else None,
            archive_sha256=archive.sha256 if archive else None,
            setting="triton_image",
            archive_setting="triton_image_archive",
        )
    triton_ops.environment(
        name="Triton's Python environment",
        desired=desired,
        link=VENV,
        env=env,
        stamp_name=STAMP_NAME,
        stamp=stamp(plan),
        wheel_requirements=WHEEL_REQUIREMENTS if host_runtime else None,
        model_requirements=MODEL_REQUIREMENTS,
        finish=backend_copy_command(env) if host_runtime else None,
        image=image,
    )
    stray = triton_ops.strays(desired, MODELS, set(by_model))
    triton_ops.prune(name="Stray model files", desired=desired, root=MODELS, models=models)
    triton_ops.retire(
        name="Retired models", desired=desired, root=MODELS, models=models, port=http_port
    )
    todo = services.actions(desired, UNIT, UNIT_FILE, restart_on, restart=rebuilt)
    services.unit(
        name="tritonserver",
        desired=desired,
        unit_name=UNIT,
        unit_file=UNIT_FILE,
        inputs=restart_on,
        restart=rebuilt,
    )
    triton_ops.wait_ready(
        name="Triton answers ready",
        unit=UNIT,
        port=http_port,
        models=models,
        started="start" in todo or "restart" in todo,
    )
    changed = sorted(
        name
        for name, paths in by_model.items()
        if desired.will_change(paths) or any(r.split("/", 1)[0] == name for r in stray)
    )
    triton_ops.load(name="Load changed models", models=[] if todo else changed, port=http_port)
    triton_ops.old_environments(
        name="Older Triton environments", link=VENV, envs=ENVS, leftovers=LEGACY, rebuilt=rebuilt
    )
