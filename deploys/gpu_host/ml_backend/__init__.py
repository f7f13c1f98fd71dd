"""The ML backend Label Studio calls on a GPU host: adapter.py turns tasks' PDFs into predictions
through the host's Triton; it runs as oceanid-ml-backend.service behind `ml.<base>`.

Where and how it runs (design.md §7): on each GPU host of the `triton` kind, as a system user
of its own, from a venv of its own under ROOT (it needs no GPU and reaches Triton on
localhost), listening on 127.0.0.1:ML_BACKEND_PORT only; the host's node tunnel publishes it at
its own name (oceanid/names.py: `ml.<base>` beside `gpu.<base>`). Basic auth's user
and password (ESC `mlBackendUser`, `mlBackendPassword`) are in a 0600 file owned by that user,
read by the adapter itself: never in the unit, its arguments or its config.

The venv is built from requirements.txt (this folder), every package of the closure pinned by
version and wheel SHA-256 and installed with `pip --require-hashes --no-deps`, the way
Triton's environment is built (operations/triton.py `environment`: beside the one in use, then
switched to by renaming a link). The unit restarts only when what it reads changed: its code,
config, credentials, unit file, or a new venv.

This is the adapter's one home: `add_to` declares its part of the GPU role's DesiredState (read in
the role's one fact), `prepare` makes its account before the role's files are written (its
credentials file is owned by it), and `deploy` builds the venv and keeps the unit running.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from string import Template

from oceanid.ingress import ML_BACKEND_PORT
from oceanid.model import HostPlan
from operations import managed, services
from operations import triton as triton_ops
from operations.managed import DesiredState, ManagedDirectory, ManagedFile

HERE = Path(__file__).parent
ROOT = "/opt/oceanid-ml-backend"
CODE = f"{ROOT}/adapter.py"
REQUIREMENTS = f"{ROOT}/requirements.txt"
VENV = f"{ROOT}/venv"  # a link to the current environment under ENVS: the unit uses it
ENVS = f"{ROOT}/venvs"
STAMP_NAME = ".oceanid-stamp"
STAMP = f"{VENV}/{STAMP_NAME}"
CONFIG_DIR = "/etc/oceanid-ml-backend"
CONFIG = f"{CONFIG_DIR}/config.json"
CREDENTIALS = f"{CONFIG_DIR}/credentials.json"
USER = "oceanid-ml-backend"
UNIT = "oceanid-ml-backend.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
LISTEN = "127.0.0.1"
MODEL = "docling_granite_python"  # the Triton model that reads a PDF (triton-models/)
PACKAGES = ["python3-venv", "curl"]  # the venv, and the unit's health check after a (re)start
# Up after a (re)start: the adapter answers on its port, and refuses a request without its
# basic auth (every path needs it, /health included), so no credential is on this command line.
HEALTH = (
    f"test \"$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 "
    f'http://{LISTEN}:{ML_BACKEND_PORT}/health)" = 401'
)


def runs_on(plan: HostPlan) -> bool:
    """Whether this GPU host runs the adapter: the `triton` kind (it calls the host's Triton)."""
    return plan.gpu is not None and plan.gpu.service.kind == "triton"


def requirements() -> bytes:
    """The hash-pinned requirements file, as it is installed."""
    return (HERE / "requirements.txt").read_bytes()


def pins() -> list[str]:
    """`name==version` of each pinned package (the lab's wheelhouse downloads these)."""
    return [
        line.split()[0]
        for line in requirements().decode().splitlines()
        if line and not line[0].isspace() and not line.startswith("#")
    ]


def config(plan: HostPlan) -> dict:
    """The adapter's config (adapter.py `Config`): nothing secret, the credentials by path."""
    return {
        "credentials_file": CREDENTIALS,
        "listen_host": LISTEN,
        "listen_port": ML_BACKEND_PORT,
        "triton_url": f"http://127.0.0.1:{plan.gpu.service.port}",
        "model": MODEL,
    }


def credentials(plan: HostPlan) -> bytes:
    """The basic-auth file the adapter reads (ESC mlBackendUser, mlBackendPassword)."""
    if plan.ml_backend_auth is None:  # preflight requires both keys for a `triton` host
        raise ValueError(f"{plan.name}: mlBackendUser and mlBackendPassword were not loaded")
    user, password = plan.ml_backend_auth
    return (json.dumps({"user": user, "password": password}) + "\n").encode()


def unit() -> str:
    return Template((HERE / "oceanid-ml-backend.service").read_text()).substitute(
        user=USER, python=f"{VENV}/bin/python", code=CODE, config=CONFIG, root=ROOT
    )


def stamp() -> bytes:
    """What the environment was built from; a different stamp builds a new one."""
    return f"{hashlib.sha256(requirements()).hexdigest()}\n".encode()


def environment_path() -> str:
    """A new folder to build the environment in (never the one in use: see triton.py's)."""
    built = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return f"{ENVS}/{stamp().decode()[:12]}-{built}"


def add_to(desired: DesiredState, plan: HostPlan) -> list[str]:
    """Declare the adapter's files, account and unit; return the paths that restart it."""
    desired.users.append(USER)
    desired.packages += [p for p in PACKAGES if p not in desired.packages]
    desired.directories += [
        ManagedDirectory(ROOT, "0755"),
        ManagedDirectory(ENVS, "0755"),
        ManagedDirectory(CONFIG_DIR, "0755"),
    ]
    text = json.dumps(config(plan), indent=1, sort_keys=True) + "\n"
    desired.files += [
        ManagedFile(CODE, (HERE / "adapter.py").read_bytes()),
        ManagedFile(REQUIREMENTS, requirements()),
        ManagedFile(CONFIG, text.encode()),
        ManagedFile(
            CREDENTIALS, credentials(plan), mode="0600", user=USER, group=USER, secret=True
        ),
        ManagedFile(UNIT_FILE, unit().encode()),
    ]
    desired.read.append(STAMP)
    desired.units.append(UNIT)
    return [CODE, CONFIG, CREDENTIALS, REQUIREMENTS]


def prepare(desired: DesiredState) -> None:
    """Before the role's files: the account that owns the credentials file."""
    managed.account(name="ML backend's service account", desired=desired, user=USER, system=True)


def deploy(desired: DesiredState, inputs: list[str]) -> None:
    """After the role's files: the venv (rebuilt only for new pins), then the unit, restarted
    when its code, config, credentials, unit file or venv changed, and checked to answer."""
    rebuilt = desired.state()["contents"].get(STAMP) != stamp()
    env = environment_path()
    triton_ops.environment(
        name="ML backend's Python environment",
        desired=desired,
        link=VENV,
        env=env,
        stamp_name=STAMP_NAME,
        stamp=stamp(),
        wheel_requirements=REQUIREMENTS,
        model_requirements=None,
        finish=None,
        what="The ML backend's environment",
    )
    services.unit(
        name="oceanid-ml-backend",
        desired=desired,
        unit_name=UNIT,
        unit_file=UNIT_FILE,
        inputs=inputs,
        restart=rebuilt,
        health=HEALTH,
    )
    triton_ops.old_environments(
        name="Older ML backend environments", link=VENV, envs=ENVS, leftovers=[], rebuilt=rebuilt
    )
