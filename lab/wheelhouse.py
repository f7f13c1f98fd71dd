"""The wheels every lab GPU host installs, fetched once on this machine and served locally.

A GPU host of the host runtime installs the pinned Triton wheel (`pip --require-hashes`) and
the models' requirements; every `triton` GPU host installs the ML-backend adapter's hash-pinned
venv. With many GPU hosts a site gives them a local wheelhouse instead of
PyPI, and the lab does the same: the wheels are downloaded here once (`pip download`, for the
hosts' Python, Debian 12's 3.11, whatever Python this machine runs), kept in .lab/cache by a
hash of what was asked for, and served by the mirror as a pip `--find-links` page (the
mirror's directory listing is one). The hosts' pip.conf (lab/rootfs.py) points there with
`no-index`, so a wheel missing here fails the deploy rather than quietly going to PyPI.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from lab import images, mirror
from lab.topology import CACHE_DIR, GATEWAY, MIRROR_DIR, WHEELHOUSE_URL

#: the hosts' interpreter and platform (lab/rootfs.py: Debian 12), for `pip download`
PYTHON_VERSION = "3.11"
ABIS = ("cp311", "abi3", "none")
PLATFORMS = ("manylinux_2_36_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
FOLDER = "pypi"  # in the mirror: WHEELHOUSE_URL

PIP_CONF = (
    "[global]\n"
    "no-index = true\n"
    f"find-links = {WHEELHOUSE_URL}\n"
    f"trusted-host = {GATEWAY}\n"
    "disable-pip-version-check = true\n"
)


def requirements() -> list[str]:
    """What the deploy's pip installs besides the pinned wheel: the models' requirements, and
    every pin of the ML-backend adapter's venv (deploys/gpu_host/ml_backend/requirements.txt,
    installed with --require-hashes: the wheels downloaded here are the very files pinned)."""
    from deploys.gpu_host.ml_backend import pins
    from deploys.gpu_host.triton import requirements as model_requirements

    return model_requirements() + pins()


def download_argv(dest: Path, wanted: list[str]) -> list[str]:
    """`pip download` of `wanted` and their dependencies, as wheels for the hosts' Python."""
    argv = ["download", "--quiet", "--dest", str(dest), "--only-binary=:all:"]
    argv += ["--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for abi in ABIS:
        argv += ["--abi", abi]
    for platform in PLATFORMS:
        argv += ["--platform", platform]
    return argv + wanted


def ensure(log: Callable[[str], None] = print, cache: Path = CACHE_DIR) -> Path:
    """The wheelhouse folder for today's pins, downloaded when no cached one matches."""
    version, sha256 = images.triton_pin()
    wanted = requirements()
    key = hashlib.sha256("\n".join([version, sha256, *wanted]).encode()).hexdigest()[:16]
    folder = cache / f"pypi-{key}"
    if folder.is_dir():
        log(f"wheelhouse: cached {folder.name}")
        return folder
    for stale in cache.glob("pypi-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = cache / "pypi-staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log(f"wheelhouse: pip download {' '.join(wanted)}")
    images.pip(download_argv(staging, wanted), "pip download of the models' requirements")
    wheel = images.triton_wheel(version, sha256)
    shutil.copyfile(wheel, staging / wheel.name)
    staging.rename(folder)
    return folder


def publish(folder: Path) -> list[str]:
    """Serve the wheelhouse from the mirror (call it after `mirror.populate()`, which empties
    the mirror); returns the wheels' names."""
    names = []
    for wheel in sorted(folder.glob("*.whl")):
        mirror.place(wheel, MIRROR_DIR / FOLDER / wheel.name)
        names.append(wheel.name)
    return names
