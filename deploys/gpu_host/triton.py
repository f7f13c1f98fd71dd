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
"""

from __future__ import annotations

import hashlib
import shlex
from datetime import UTC, datetime
from pathlib import Path
from string import Template

from oceanid import triton_repo
from oceanid.preflight import HostPlan
from oceanid.triton_runtime import STUB, TritonDistribution, server_command
from operations import managed, services
from operations import triton as triton_ops
from operations.managed import ManagedDirectory, ManagedFile, Manifest

HERE = Path(__file__).parent
REPO = HERE.parent.parent
MODEL_SOURCE = REPO / "triton-models"
ROOT = "/opt/triton"
MODELS = f"{ROOT}/models"
VENV = f"{ROOT}/venv"  # a link to the current environment under ENVS: the unit's paths use it
ENVS = f"{ROOT}/venvs"
DIST = f"{VENV}/dist"  # link to the environment's site-packages: version-free paths for the unit
BACKENDS = f"{VENV}/backends"
STAMP_NAME = ".oceanid-stamp"
STAMP = f"{VENV}/{STAMP_NAME}"
LEGACY = [f"{ROOT}/dist", f"{ROOT}/backends"]  # the layout before ENVS; removed with old envs
LAYOUT = "envs under venvs/, dist and backends inside each"  # in the stamp: a new layout rebuilds
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


def ports(plan: HostPlan) -> tuple[int, int, int]:
    """Triton's HTTP, gRPC and metrics ports: the service's port and the two after it."""
    http = plan.gpu.service.port
    return http, http + 1, http + 2


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


def container_unit(plan: HostPlan) -> str:
    return Template((HERE / "tritonserver-container.service").read_text()).substitute(
        image=plan.settings.triton_image,
        gpus=docker_gpus(plan.gpu.gpus),
        shm_size="1g",
        models=MODELS,
        model_env=VENV,
        model_site=DIST,
        http_port=ports(plan)[0],
        grpc_port=ports(plan)[1],
        metrics_port=ports(plan)[2],
    )


def environment_stale(manifest: Manifest, plan: HostPlan) -> bool:
    """A new environment will be built (new pins, or it was removed): Triton must restart on it."""
    return manifest.state()["contents"].get(STAMP) != stamp(plan)


def stamp(plan: HostPlan) -> bytes:
    """What the environment was built from; a different stamp builds a new one."""
    digest = hashlib.sha256()
    for part in (wheel_requirement(plan), "\n".join(requirements()), LAYOUT):
        digest.update(part.encode())
    return f"{plan.settings.triton_wheel.version} {digest.hexdigest()}\n".encode()


def environment_path(plan: HostPlan) -> str:
    """A new folder to build the environment in: named after its inputs and the time, so a
    rebuild with the same inputs (its stamp removed by hand) never lands on the one in use."""
    built = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return f"{ENVS}/{hashlib.sha256(stamp(plan)).hexdigest()[:12]}-{built}"


def add_to(manifest: Manifest, plan: HostPlan) -> tuple[list[str], dict[str, list[str]]]:
    """Declare Triton's files; return (paths that restart it, model name -> its paths).

    Triton restarts when its Python environment's pins change (the requirements files the
    environment is built from), never for a model: models are loaded through the API.
    """
    runtime = plan.gpu.service.runtime
    manifest.users.append("triton")
    manifest.directories += [
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
        unit_text = host_unit(plan)
        restart_on = [WHEEL_REQUIREMENTS, MODEL_REQUIREMENTS]
    else:
        manifest.packages += [plan.gpu.service.docker_package, "python3-venv"]
        unit_text = container_unit(plan)
        restart_on = [MODEL_REQUIREMENTS]
    manifest.files.append(ManagedFile(UNIT_FILE, unit_text.encode()))
    manifest.units.append(UNIT)
    return restart_on, by_model


def _python(env: str, expression: str) -> str:
    """`$(…)`: what the new environment's Python says `expression` is (needs `import os, sys`)."""
    script = f"import os, sys, sysconfig; print({expression})"
    return f"$({shlex.quote(env)}/bin/python -c {shlex.quote(script)})"


def site_link_command(env: str) -> str:
    """The container runtime mounts the environment for the models' requirements; `dist` in it
    points to its site-packages by a relative path, which holds inside the container too."""
    site = _python(env, 'os.path.relpath(sysconfig.get_paths()["purelib"], sys.prefix)')
    return f'ln -sfn "{site}" {shlex.quote(env)}/dist'


def backend_copy_command(env: str) -> str:
    """Assemble the environment's backends folder from its wheel, for its Python version."""
    new = shlex.quote(env)
    python_backend = f"{new}/dist/pytriton/tritonserver/backends/python"
    stub = f'{new}/dist/pytriton/tritonserver/python_backend_stubs/"$version"/{STUB}'
    version = _python(env, '"%d.%d" % sys.version_info[:2]')
    return (
        f'{site_link_command(env)} && version="{version}" && '
        f"install -d -m 0755 {new}/backends/python && "
        f"install -m 0644 {python_backend}/libtriton_python.so "
        f"{python_backend}/triton_python_backend_utils.py {new}/backends/python/ && "
        f"install -m 0755 {stub} {new}/backends/python/{STUB}"
    )


def deploy(manifest: Manifest, plan: HostPlan, restart_on: list[str], by_model: dict) -> None:
    """Triton's steps, once the role's packages, folders and files are in place.

    The environment is built and switched to, stray and retired model files go, then the
    unit is (re)started only if its pins changed and Triton must answer ready on it; models
    whose files changed are otherwise loaded into the running Triton. Older environments
    are removed last, after Triton answered ready on the new one.
    """
    http_port = ports(plan)[0]
    host_runtime = plan.gpu.service.runtime == "host"
    models = sorted(by_model)
    rebuilt = environment_stale(manifest, plan)
    env = environment_path(plan)
    managed.account(name="Triton's service account", manifest=manifest, user="triton", system=True)
    triton_ops.environment(
        name="Triton's Python environment",
        manifest=manifest,
        link=VENV,
        env=env,
        stamp_name=STAMP_NAME,
        stamp=stamp(plan),
        wheel_requirements=WHEEL_REQUIREMENTS if host_runtime else None,
        model_requirements=MODEL_REQUIREMENTS,
        finish=backend_copy_command(env) if host_runtime else site_link_command(env),
    )
    stray = triton_ops.strays(manifest, MODELS, set(by_model))
    triton_ops.prune(name="Stray model files", manifest=manifest, root=MODELS, models=models)
    triton_ops.retire(
        name="Retired models", manifest=manifest, root=MODELS, models=models, port=http_port
    )
    todo = services.actions(manifest, UNIT, UNIT_FILE, restart_on, rebuilt)
    services.unit(
        name="tritonserver",
        manifest=manifest,
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
        if manifest.will_change(paths) or any(r.split("/", 1)[0] == name for r in stray)
    )
    triton_ops.load(name="Load changed models", models=[] if todo else changed, port=http_port)
    triton_ops.old_environments(
        name="Older Triton environments", link=VENV, envs=ENVS, leftovers=LEGACY, rebuilt=rebuilt
    )
