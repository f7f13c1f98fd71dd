"""The lab's container images, built here without a registry (issue 13, items 1 and 6).

No image registry is reachable from the lab, so its Docker hosts `docker load` archives that
the lab builds from what it already has: its bookworm root filesystem tarball, Debian's
packages and the pinned `nvidia-pytriton` wheel (lab/docker.md, "Building the Triton test
image"). Each archive is the `docker save` layout: `manifest.json`, a config JSON and one
layer tar. Everything in it is fixed (sorted entries, mtime 0, numeric owners, a fixed
`created`), so the same staging tree gives the same bytes and therefore the same image ID, the
SHA-256 of the config, which settings can pin before the image is ever loaded.

The archives are cached in .lab/cache by a hash of their inputs, like the rootfs, so a second
`make lab` reuses them; `publish()` puts them in the lab mirror and records their IDs, URLs
and hashes in .lab/artifacts.json.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from lab import mirror, rootfs
from lab.topology import CACHE_DIR, MIRROR_DIR, MIRROR_URL, REPO

#: what `docker image inspect` shows as the image's creation time: fixed, for a stable ID
CREATED = "1970-01-01T00:00:00Z"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

TRITON_PACKAGES = ("libpython3.11", "python3-numpy", "python3-pip", "python3-venv")
TRITON_DIST = "/opt/tritonserver/dist"
TRITON_BACKEND = "/opt/tritonserver/backends/python"
TRITON_ENV = (
    f"PATH={TRITON_DIST}/pytriton/tritonserver/bin:{BASE_PATH}",
    # the stub copied out of the wheel loses its relative RPATH to the wheel's libraries
    f"LD_LIBRARY_PATH={TRITON_DIST}/nvidia_pytriton.libs",
)
# Triton's default --backend-directory holds the Python backend, as in the NGC image, so the
# container unit's command line needs no lab-only flag. The stub is the image's Python's.
TRITON_BACKEND_FILES = {
    "libtriton_python.so": "pytriton/tritonserver/backends/python/libtriton_python.so",
    "triton_python_backend_utils.py": (
        "pytriton/tritonserver/backends/python/triton_python_backend_utils.py"
    ),
    "triton_python_backend_stub": (
        "pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub"
    ),
}
WHEEL_DISTRIBUTION = "nvidia-pytriton"
WHEELS_DIR = CACHE_DIR / "wheels"

HTTP_TAG = "oceanid-lab/http:1"
HTTP_SERVER_PATH = "/opt/oceanid-http/server.py"
HTTP_CMD = ("python3", HTTP_SERVER_PATH)
HTTP_ENV = (f"PATH={BASE_PATH}",)
# The `http` service kind's stand-in for an operator's own server: it says whether its token
# reached it (the env file works) without ever showing the token.
HTTP_SERVER = '''\
"""A tiny HTTP server for the lab's `http` service kind (built by lab/images.py)."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_VARIABLE = "OCEANID_HTTP_TOKEN"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            self._answer(200, "text/plain", b"ok\\n")
        elif self.path == "/":
            body = {"server": "oceanid-http", "token_set": bool(os.environ.get(TOKEN_VARIABLE))}
            self._answer(200, "application/json", json.dumps(body).encode() + b"\\n")
        else:
            self._answer(404, "text/plain", b"not found\\n")

    def _answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    # all interfaces inside the container; Docker publishes the port on the host's loopback
    address = os.environ.get("BIND_ADDRESS", "0.0.0.0")
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer((address, port), Handler)
    print(f"oceanid-http listening on {address}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
'''

#: the mirror's file and artifacts.json's key for each image
MIRROR_NAMES = {"triton_image": "tritonserver.tar", "http_image": "http.tar"}

Customize = Callable[[Path], None]
Built = tuple[str, Path, str]  # (image ID "sha256:…", archive path, archive SHA-256)


class ImageError(RuntimeError):
    """An image could not be built; the message says what to do."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uname = info.gname = ""
    return info


def write_layer(stage: Path, layer: Path) -> None:
    """`stage`'s tree as a layer tar whose bytes depend only on the tree's names, contents,
    modes and numeric owners: each folder's entries in name order, mtime 0, no user names."""
    with tarfile.open(layer, "w", format=tarfile.GNU_FORMAT) as archive:
        _add_folder(archive, stage, stage)


def _add_folder(archive: tarfile.TarFile, stage: Path, folder: Path) -> None:
    # in name order, depth first (as `tar --sort=name`), so the first name of a hard-linked
    # inode carries the data and the later ones link to it
    for path in sorted(folder.iterdir(), key=lambda entry: entry.name):
        archive.add(path, str(path.relative_to(stage)), recursive=False, filter=_normalised)
        if path.is_dir() and not path.is_symlink():
            _add_folder(archive, stage, path)


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    return info, io.BytesIO(data)


def write_archive(
    layer: Path, tag: str, env: Sequence[str], cmd: Sequence[str] | None, archive: Path
) -> str:
    """A `docker load` archive of one layer; returns the image ID (the config's SHA-256)."""
    layer_digest = _sha256_file(layer)
    settings: dict = {"Env": list(env)}
    if cmd:
        settings["Cmd"] = list(cmd)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": settings,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": CREATED, "created_by": "lab/images.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    layer_name = f"{layer_digest}/layer.tar"
    manifest = [{"Config": f"{config_digest}.json", "RepoTags": [tag], "Layers": [layer_name]}]
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as out:
        folder = tarfile.TarInfo(layer_digest)
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
        out.addfile(folder)
        info, _ = _member(layer_name, b"")
        info.size = layer.stat().st_size
        with layer.open("rb") as data:
            out.addfile(info, data)
        out.addfile(*_member(f"{config_digest}.json", config_bytes))
        out.addfile(*_member("manifest.json", json.dumps(manifest).encode()))
    return f"sha256:{config_digest}"


def image_id(archive: Path) -> str:
    """The ID of the image in a `docker load` archive: the SHA-256 of its config."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    return "sha256:" + manifest[0]["Config"].removesuffix(".json")


def build(
    name: str,
    base: Path,
    customize: Customize,
    tag: str,
    env: Sequence[str],
    cmd: Sequence[str] | None,
    key_parts: Sequence[str],
    cache: Path = CACHE_DIR,
    log: Callable[[str], None] = print,
) -> Built:
    """The image `name` built from the rootfs tarball `base`, changed by `customize(stage)`;
    cached in `cache` by a hash of the base, the tag, env, cmd, `key_parts` and this recipe."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for part in (_sha256_file(base), tag, *env, *(cmd or ()), *key_parts):
        digest.update(part.encode() + b"\0")
    archive = cache / f"image-{name}-{digest.hexdigest()[:16]}.tar"
    if archive.exists():
        log(f"images: cached {archive.name}")
        return image_id(archive), archive, _sha256_file(archive)
    log(f"images: building {archive.name}")
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f"image-{name}-*"):
        if os.path.ismount(stale / "proc"):  # a killed build's chroot
            subprocess.run(["umount", str(stale / "proc")], check=True)
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    stage = cache / f"image-{name}-staging"
    layer = cache / f"image-{name}-layer.partial"
    partial = archive.with_suffix(".partial")
    stage.mkdir()
    try:
        subprocess.run(["tar", "-C", str(stage), "--numeric-owner", "-xpf", str(base)], check=True)
        customize(stage)
        write_layer(stage, layer)
        ident = write_archive(layer, tag, env, cmd, partial)
        partial.rename(archive)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        layer.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return ident, archive, _sha256_file(archive)


def _add_http_server(stage: Path) -> None:
    target = stage / HTTP_SERVER_PATH.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(HTTP_SERVER)
    target.chmod(0o644)


def http_image(base: Path, cache: Path = CACHE_DIR, log: Callable[[str], None] = print) -> Built:
    """The `http` service kind's image: the lab's base (it has python3) and a tiny server."""
    return build(
        "http",
        base,
        _add_http_server,
        HTTP_TAG,
        HTTP_ENV,
        HTTP_CMD,
        (HTTP_SERVER,),
        cache,
        log,
    )


def triton_pin() -> tuple[str, str]:
    """The (version, amd64 SHA-256) of the nvidia-pytriton wheel production pins."""
    pin = runpy.run_path(str(REPO / "group_data" / "all.py"))["triton_wheel"]
    return pin["version"], pin["sha256"]["amd64"]


def triton_wheel(version: str, sha256: str, wheels: Path = WHEELS_DIR) -> Path:
    """The pinned wheel, downloaded once (`pip download --no-deps`) and checked by SHA-256."""
    pattern = f"nvidia_pytriton-{version}-*.whl"
    if not list(wheels.glob(pattern)):
        pip(
            ["download", "--quiet", "--no-deps", "--dest", str(wheels)]
            + [f"{WHEEL_DISTRIBUTION}=={version}"],
            f"pip download {WHEEL_DISTRIBUTION}=={version}",
        )
    wheel = sorted(wheels.glob(pattern))[0]
    actual = _sha256_file(wheel)
    if actual != sha256:
        raise ImageError(
            f"{wheel} has SHA-256 {actual}, but group_data/all.py's triton_wheel pins {sha256}: "
            "delete the wheel and retry, or fix the pin"
        )
    return wheel


def _chroot_apt(stage: Path, packages: Sequence[str]) -> None:
    """apt-get install in the staged rootfs, reaching Debian as this machine does: the
    rootfs's own apt proxy is the lab's (up only while the lab runs), so it is set aside, and
    this machine's resolver and proxy environment are used; both are restored after."""
    proxy_conf = stage / "etc/apt/apt.conf.d/00lab-proxy"
    resolv = stage / "etc/resolv.conf"
    saved_proxy = proxy_conf.read_bytes() if proxy_conf.exists() else None
    saved_link = os.readlink(resolv) if resolv.is_symlink() else None
    saved_resolv = resolv.read_bytes() if saved_link is None and resolv.exists() else None
    proxy_conf.unlink(missing_ok=True)
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    proc = stage / "proc"
    proc.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() in ("http_proxy", "https_proxy", "no_proxy")
    }
    env |= {"PATH": BASE_PATH, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    try:
        for argv in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-q", "-y", "--no-install-recommends", *packages],
            ["apt-get", "clean"],
        ):
            done = subprocess.run(
                ["chroot", str(stage), *argv], env=env, capture_output=True, text=True
            )
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise ImageError(f"{' '.join(argv)} in the image's rootfs failed: {tail}")
    finally:
        subprocess.run(["umount", str(proc)], check=False)
        resolv.unlink(missing_ok=True)
        if saved_link is not None:
            resolv.symlink_to(saved_link)
        elif saved_resolv is not None:
            resolv.write_bytes(saved_resolv)
        if saved_proxy is not None:
            proxy_conf.write_bytes(saved_proxy)
    # what apt leaves behind that is no part of the image; the logs and ldconfig's cache (inode
    # numbers, times) are all that would differ between two builds from the same packages
    for leftover in ("var/lib/apt/lists", "var/cache/apt", "var/log/apt"):
        for path in (stage / leftover).glob("*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != "lock":
                path.unlink()
    for leftover in (
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/cache/ldconfig/aux-cache",
    ):
        (stage / leftover).unlink(missing_ok=True)


def pip(args: list[str], what: str) -> None:
    """This machine's pip; a failure is one line: `what` and pip's last word on it."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ImageError(f"{what} failed: {tail}")


def _install_triton(stage: Path, wheel: Path) -> None:
    dist = stage / TRITON_DIST.lstrip("/")
    pip(
        ["install", "--quiet", "--no-deps", "--no-index", "--no-compile"]
        + ["--target", str(dist), str(wheel)],
        f"pip install {wheel.name} into the image",
    )
    # console scripts whose shebang is this machine's interpreter
    shutil.rmtree(dist / "bin", ignore_errors=True)
    backend = stage / TRITON_BACKEND.lstrip("/")
    backend.mkdir(parents=True)
    for name, source in TRITON_BACKEND_FILES.items():
        shutil.copy2(dist / source, backend / name)


def triton_image(base: Path, cache: Path = CACHE_DIR, log: Callable[[str], None] = print) -> Built:
    """Triton for the lab's Docker hosts: the lab's base, Python with numpy (the Python
    backend's) and pip/venv (so the image builds the models' environment, issue 13 item 2),
    and the tritonserver the pinned nvidia-pytriton wheel carries."""
    version, sha256 = triton_pin()
    wheel = triton_wheel(version, sha256)

    def customize(stage: Path) -> None:
        _chroot_apt(stage, TRITON_PACKAGES)
        _install_triton(stage, wheel)

    return build(
        "triton",
        base,
        customize,
        f"oceanid-lab/tritonserver:{version}",
        TRITON_ENV,
        None,
        (*TRITON_PACKAGES, sha256, *TRITON_BACKEND_FILES.values()),
        cache,
        log,
    )


def publish(base: Path, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Build (or reuse) both images, serve them from the lab mirror and record their pins in
    .lab/artifacts.json. Call it after `mirror.populate()`, which empties the mirror."""
    return serve(
        {"triton_image": triton_image(base, log=log), "http_image": http_image(base, log=log)}
    )


def serve(built: dict[str, Built]) -> dict[str, dict]:
    """Put built archives in the mirror (images/<name>.tar) and record, under each key, the
    image ID settings pin and the archive's URL and SHA-256 the deploy downloads and checks."""
    pins = {}
    for key, (ident, archive, sha256) in built.items():
        relative = f"images/{MIRROR_NAMES[key]}"
        mirror.place(archive, MIRROR_DIR / relative)
        pins[key] = {"id": ident, "url": f"{MIRROR_URL}/{relative}", "sha256": sha256}
    mirror.record(pins)
    return pins


if __name__ == "__main__":
    print(json.dumps(publish(rootfs.build_base(print)), indent=2))
