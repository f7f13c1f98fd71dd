"""Run the tritonserver that the nvidia-pytriton wheel carries, without pytriton's launcher.

The wheel ships a CPU/GPU `tritonserver` 2.51.0, its shared libraries (`nvidia_pytriton.libs`),
the Python backend and one backend stub per Python version. pytriton assembles them into a
workspace at run time; the contract test, the GPU check and the calypso deploy (Triton in a venv
under /opt/triton) do the same thing, so the recipe lives here once:

- the stub for the model environment's Python version is copied into a backends folder of our
  own (`assemble_backends`), never into the installed wheel;
- `nvidia_pytriton.libs` goes on LD_LIBRARY_PATH, with the model Python's own libpython ahead of
  the system's so the stub's interpreter matches the standard library it loads;
- the model environment's `bin/` goes first on PATH: the stub's embedded interpreter finds
  `python3` there, reads that venv's pyvenv.cfg and so imports the venv's numpy<2 and model
  requirements, and processes its .pth files (how PyTorch from another venv is reached).

Paths are computed without touching the filesystem, so the deploy can use them for a remote
host; only `installed_distribution`, `missing`, `assemble_backends` and `python_env` look.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STUB = "triton_python_backend_stub"
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")


@dataclass(frozen=True)
class TritonDistribution:
    """A wheel-layout Triton: `root` holds `pytriton/tritonserver/` and `nvidia_pytriton.libs/`.

    `root` is the site-packages the wheel is installed in, or a bundle that keeps its layout
    (tests/gpu/pack.sh), so the binaries' RPATHs keep working as well.
    """

    root: Path

    @property
    def server(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "backends" / "python"

    @property
    def libs(self) -> Path:
        return self.root / "nvidia_pytriton.libs"

    def stub(self, python_version: str) -> Path:
        """The Python-backend stub built for `python_version` ("3.12")."""
        stubs = self.root / "pytriton" / "tritonserver" / "python_backend_stubs"
        return stubs / python_version / STUB

    def missing(self, python_version: str) -> list[str]:
        """Files this distribution lacks for a model environment on `python_version`."""
        needed = [self.server, self.libs, self.stub(python_version)]
        needed += [self.python_backend / name for name in PYTHON_BACKEND_FILES]
        return [str(path) for path in needed if not path.exists()]


@dataclass(frozen=True)
class PythonEnv:
    """The interpreter a model runs under: its prefix, X.Y version and libpython folder."""

    prefix: Path
    version: str
    libdir: Path | None


def installed_distribution() -> TritonDistribution:
    """The Triton inside the installed nvidia-pytriton wheel, found without importing pytriton.

    Raises FileNotFoundError naming the wheel, so a missing install fails loudly.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("nvidia-pytriton is not installed: no tritonserver to run")
    distribution = TritonDistribution(Path(spec.origin).resolve().parent.parent)
    if not distribution.server.is_file():
        raise FileNotFoundError(f"nvidia-pytriton has no tritonserver at {distribution.server}")
    return distribution


def python_env(python: Path) -> PythonEnv:
    """Ask an interpreter (a venv's bin/python3) for its prefix, version and shared libpython.

    libdir is None when that Python has no shared libpython (a static build); the stub then
    falls back to the system's libpythonX.Y.
    """
    script = (
        "import json, sys, sysconfig, os;"
        "lib = os.path.join(sysconfig.get_config_var('LIBDIR') or '',"
        " sysconfig.get_config_var('INSTSONAME') or '-');"
        "print(json.dumps([sys.prefix, '%d.%d' % sys.version_info[:2],"
        " os.path.dirname(lib) if os.path.isfile(lib) else None]))"
    )
    output = subprocess.run(
        [str(python), "-c", script], check=True, capture_output=True, text=True
    ).stdout
    prefix, version, libdir = json.loads(output)
    return PythonEnv(Path(prefix), version, Path(libdir) if libdir else None)


def assemble_backends(distribution: TritonDistribution, dest: Path, python_version: str) -> Path:
    """A backends folder for `--backend-directory`: the Python backend plus the right stub.

    Copies (about 3 MB), so the folder stands on its own and nothing is written into the
    installed wheel, which other tools (pytriton itself) share.
    """
    missing = distribution.missing(python_version)
    if missing:
        raise FileNotFoundError("Triton distribution is incomplete; missing: " + ", ".join(missing))
    python_dir = Path(dest) / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in PYTHON_BACKEND_FILES:
        shutil.copy2(distribution.python_backend / name, python_dir / name)
    shutil.copy2(distribution.stub(python_version), python_dir / STUB)
    return Path(dest)


def server_env(
    distribution: TritonDistribution, env: PythonEnv, base: Mapping[str, str]
) -> dict[str, str]:
    """The environment for tritonserver: `base` with PATH and LD_LIBRARY_PATH set for the stub."""
    result = dict(base)
    libraries = [str(distribution.libs)]
    if env.libdir is not None:
        libraries.append(str(env.libdir))
    result["LD_LIBRARY_PATH"] = _prepend(libraries, base.get("LD_LIBRARY_PATH"))
    result["PATH"] = _prepend([str(env.prefix / "bin")], base.get("PATH", "/usr/bin:/bin"))
    return result


def server_command(
    distribution: TritonDistribution,
    *,
    backends: Path,
    model_repository: Path,
    address: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    extra: Sequence[str] = (),
) -> list[str]:
    """The tritonserver argument list, in explicit model-control mode.

    Explicit mode with `--load-model=*` loads every model at start; afterwards a model (new
    versions included) is loaded by `POST /v2/repository/models/<name>/load` once its upload is
    complete. Unlike poll mode, Triton never sees a half-uploaded version, and the load's
    success or failure comes back to the caller instead of only into the server's log.
    Every endpoint binds `address`: calypso's tunnel reaches Triton on localhost.
    """
    return [
        str(distribution.server),
        f"--model-repository={model_repository}",
        f"--backend-directory={backends}",
        "--model-control-mode=explicit",
        "--load-model=*",
        f"--http-address={address}",
        f"--http-port={http_port}",
        f"--grpc-address={address}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={address}",
        f"--metrics-port={metrics_port}",
        *extra,
    ]


def _prepend(first: Sequence[str], rest: str | None) -> str:
    return ":".join([*first, *([rest] if rest else [])])
