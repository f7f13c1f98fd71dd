"""Triton's Python environment and its model repository, kept without restarts.

The environment (a venv under /opt/triton) is rebuilt only when what it is built from
changes, recorded in a stamp written as the last step, so a failed build is retried on
the next run rather than taken for done. Models are loaded through Triton's repository
API after their files changed; files the repository no longer has are removed, but only
inside the models the deploy manages.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from operations.managed import Manifest

READY_WAIT = 60  # seconds to wait for Triton before loading a model


@operation()
def environment(
    manifest: Manifest,
    venv: str,
    stamp_path: str,
    stamp: bytes,
    wheel_requirements: str | None,
    model_requirements: str,
    finish: str,
):
    """
    Build Triton's Python environment when its inputs changed.

    + manifest: the role's Manifest (its `read` includes `stamp_path`)
    + venv: the virtual environment's path
    + stamp_path: where the environment records what it was built from
    + stamp: what it should have been built from
    + wheel_requirements: a hash-pinned requirements file for the Triton wheel, if any
    + model_requirements: the models' requirements file
    + finish: a shell command run after the installs (assemble backends, links)
    """
    if manifest.state()["contents"].get(stamp_path) == stamp:
        host.noop(f"Triton's environment in {venv} is built from the pinned inputs")
        return
    yield StringCommand("python3", "-m", "venv", "--clear", venv)
    pip = f"{venv}/bin/pip"
    yield StringCommand(pip, "install", "-q", "--disable-pip-version-check", "--upgrade", "pip")
    if wheel_requirements:
        yield StringCommand(
            pip, "install", "-q", "--no-deps", "--require-hashes", "-r", wheel_requirements
        )
    yield StringCommand(pip, "install", "-q", "-r", model_requirements)
    yield finish
    yield StringCommand("printf", "%s", QuoteString(stamp.decode()), ">", stamp_path)


def strays(manifest: Manifest, root: str, models: set[str]) -> list[str]:
    """Entries under `root` inside managed models that the repository no longer has."""
    prefix = root.rstrip("/") + "/"
    wanted = {f.path.removeprefix(prefix) for f in manifest.files if f.path.startswith(prefix)}
    parents = {p.rsplit("/", n)[0] for p in wanted for n in range(1, p.count("/") + 1)}
    found = manifest.state()["trees"].get(root, {})
    return sorted(
        (
            rel
            for rel in found
            if rel.split("/", 1)[0] in models and rel not in wanted and rel not in parents
        ),
        key=lambda rel: -rel.count("/"),
    )


@operation()
def prune(manifest: Manifest, root: str, models: list[str]):
    """
    Remove files and folders of managed models that the repository no longer has.

    + manifest: the role's Manifest (its trees include `root`)
    + root: the model repository on the host
    + models: the models the deploy manages; nothing else under `root` is touched
    """
    extra = strays(manifest, root, set(models))
    if not extra:
        host.noop(f"no stray files in the {len(models)} managed model(s)")
        return
    for rel in extra:
        yield StringCommand("rm", "-rf", QuoteString(f"{root}/{rel}"))


@operation()
def load(models: list[str], port: int = 8000):
    """
    Ask a running Triton (explicit model control) to load these models again.

    + models: model names whose files changed
    + port: Triton's HTTP port on localhost
    """
    if not models:
        host.noop("no model changed")
        return
    base = f"http://127.0.0.1:{port}"
    yield StringCommand(
        "for",
        "i",
        "in",
        "$(seq",
        str(READY_WAIT) + ");",
        "do",
        "curl",
        "-fsS",
        "-o",
        "/dev/null",
        f"{base}/v2/health/live",
        "&&",
        "break;",
        "sleep",
        "1;",
        "done",
    )
    for model in models:
        yield StringCommand(
            "curl",
            "-fsS",
            "-X",
            "POST",
            "-o",
            "/dev/null",
            "-w",
            "''",
            f"{base}/v2/repository/models/{model}/load",
            "||",
            "{",
            "echo",
            QuoteString(f"Triton refused to load model {model}; see its log"),
            ">&2;",
            "exit",
            "1;",
            "}",
        )
