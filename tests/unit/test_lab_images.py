"""The lab's container images (lab/images.py): `docker load` archives built without a
registry, byte for byte the same from the same inputs so their image IDs can be pinned.

The archives here are built from a tiny hand-made rootfs tarball through the same code as the
real ones (extract, customize, layer, archive); the real Triton image (apt in a chroot, the
pinned wheel) is too slow for unit tests and is built by hand (`python -m lab.images`).
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from lab import images, mirror
from lab.topology import MIRROR_URL

TOKEN = "tok-3f9a1c-never-shown"


def _tiny_rootfs(path: Path, greeting: bytes = b"hello\n") -> Path:
    """A root filesystem tarball with a directory, files, a symlink and a hard link."""
    with tarfile.open(path, "w") as tar:
        for name in ("usr", "usr/bin", "etc"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(info)
        for name, data, mode in (
            ("usr/bin/hello", greeting, 0o755),
            ("etc/pip.conf", b"[global]\nproxy = http://10.77.0.1:3128\n", 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("bin")
        link.type, link.linkname = tarfile.SYMTYPE, "usr/bin"
        tar.addfile(link)
        hard = tarfile.TarInfo("usr/bin/zz-hello")
        hard.type, hard.linkname, hard.mode = tarfile.LNKTYPE, "usr/bin/hello", 0o755
        tar.addfile(hard)
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _layer(archive: Path) -> tarfile.TarFile:
    members = _read(archive)
    (layer_name,) = json.loads(members["manifest.json"])[0]["Layers"]
    return tarfile.open(fileobj=io.BytesIO(members[layer_name]))


@pytest.fixture
def built(tmp_path):
    base = _tiny_rootfs(tmp_path / "base.tar")
    return images.http_image(base, cache=tmp_path / "cache", log=lambda line: None)


def test_archive_manifest_config_and_layer_agree(built):
    ident, archive, archive_sha = built
    members = _read(archive)
    assert _sha256(archive.read_bytes()) == archive_sha
    (manifest,) = json.loads(members["manifest.json"])
    assert manifest["RepoTags"] == [images.HTTP_TAG]
    config_bytes = members[manifest["Config"]]
    # Docker's image ID is the config's digest: known before `docker load`
    assert ident == "sha256:" + _sha256(config_bytes)
    assert manifest["Config"] == ident.removeprefix("sha256:") + ".json"
    config = json.loads(config_bytes)
    (layer_name,) = manifest["Layers"]
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": ["sha256:" + _sha256(members[layer_name])],
    }
    assert layer_name == _sha256(members[layer_name]) + "/layer.tar"
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert config["config"]["Cmd"] == ["python3", "/opt/oceanid-http/server.py"]
    assert config["config"]["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ]
    assert images.image_id(archive) == ident


def test_layer_is_the_rootfs_plus_the_server_with_fixed_metadata(built):
    _, archive, _ = built
    with _layer(archive) as layer:
        members = layer.getmembers()
        names = [m.name for m in members]
        # each folder's entries in name order, depth first, as `tar --sort=name` writes them
        assert names == [
            "bin",
            "etc",
            "etc/pip.conf",
            "opt",
            "opt/oceanid-http",
            "opt/oceanid-http/server.py",
            "usr",
            "usr/bin",
            "usr/bin/hello",
            "usr/bin/zz-hello",
        ]
        assert all(m.mtime == 0 and m.uname == "" and m.gname == "" for m in members)
        by_name = {m.name: m for m in members}
        assert by_name["bin"].issym() and by_name["bin"].linkname == "usr/bin"
        # the first name of a hard-linked file carries its data, the later one links to it
        assert by_name["usr/bin/hello"].isfile() and by_name["usr/bin/hello"].mode == 0o755
        assert by_name["usr/bin/zz-hello"].islnk()
        assert by_name["usr/bin/zz-hello"].linkname == "usr/bin/hello"
        assert layer.extractfile("opt/oceanid-http/server.py").read() == images.HTTP_SERVER.encode()
        assert layer.extractfile("etc/pip.conf").read().startswith(b"[global]\nproxy")


def test_two_builds_are_byte_identical(tmp_path):
    base = _tiny_rootfs(tmp_path / "base.tar")
    first = images.http_image(base, cache=tmp_path / "one", log=lambda line: None)
    time.sleep(1.1)  # files the build writes get a later mtime: it must not reach the archive
    second = images.http_image(base, cache=tmp_path / "two", log=lambda line: None)
    assert first[1].read_bytes() == second[1].read_bytes()
    assert (first[0], first[2]) == (second[0], second[2])


def test_the_cache_is_reused_and_a_changed_base_rebuilds(tmp_path):
    cache = tmp_path / "cache"
    lines: list[str] = []
    base = _tiny_rootfs(tmp_path / "base.tar")
    first = images.http_image(base, cache=cache, log=lines.append)
    written = first[1].stat().st_mtime_ns
    again = images.http_image(base, cache=cache, log=lines.append)
    assert again == first and again[1].stat().st_mtime_ns == written
    assert lines == [f"images: building {first[1].name}", f"images: cached {first[1].name}"]
    changed = images.http_image(
        _tiny_rootfs(base, greeting=b"bonjour\n"), cache=cache, log=lines.append
    )
    assert changed[0] != first[0] and changed[1] != first[1]
    assert sorted(p.name for p in cache.iterdir()) == [changed[1].name]  # the stale one is gone


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.parametrize("token", [TOKEN, None])
def test_http_server_answers_health_and_root_and_never_shows_the_token(built, tmp_path, token):
    with _layer(built[1]) as layer:
        script = tmp_path / "server.py"
        script.write_bytes(layer.extractfile("opt/oceanid-http/server.py").read())
    port = _free_port()
    env = {"PORT": str(port), "BIND_ADDRESS": "127.0.0.1"}
    if token:
        env["OCEANID_HTTP_TOKEN"] = token
    server = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert server.stdout.readline().decode() == f"oceanid-http listening on 127.0.0.1:{port}\n"
        base = f"http://127.0.0.1:{port}"
        health = _get(base + "/health")
        root = _get(base + "/")
        missing = _get(base + "/nope")
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    assert health == (200, b"ok\n")
    assert root[0] == 200
    assert json.loads(root[1]) == {"server": "oceanid-http", "token_set": token is not None}
    assert missing[0] == 404
    for text in (health[1], root[1], missing[1], out, err):
        assert TOKEN.encode() not in text


def _fake_wheel(folder: Path) -> Path:
    """A wheel laid out like nvidia-pytriton's, for the install step (pip, offline)."""
    folder.mkdir()
    wheel = folder / "nvidia_pytriton-0.7.0-py3-none-any.whl"
    files = {
        "pytriton/__init__.py": "",
        "pytriton/tritonserver/bin/tritonserver": "#!/bin/sh\n",
        **{source: name for name, source in images.TRITON_BACKEND_FILES.items()},
        "nvidia_pytriton.libs/libtritonserver-0.so": "lib",
        "nvidia_pytriton-0.7.0.dist-info/METADATA": (
            "Metadata-Version: 2.1\nName: nvidia-pytriton\nVersion: 0.7.0\n"
        ),
        "nvidia_pytriton-0.7.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        "nvidia_pytriton-0.7.0.dist-info/entry_points.txt": (
            "[console_scripts]\npytriton = pytriton:main\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + "nvidia_pytriton-0.7.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr("nvidia_pytriton-0.7.0.dist-info/RECORD", record)
    return wheel


def test_triton_install_puts_the_python_backend_where_triton_looks(tmp_path):
    stage = tmp_path / "stage"
    images._install_triton(stage, _fake_wheel(tmp_path / "wheels"))
    backend = stage / "opt/tritonserver/backends/python"
    assert sorted(p.name for p in backend.iterdir()) == sorted(images.TRITON_BACKEND_FILES)
    # the stub is the image's Python's (3.11), as the copied file's content says
    assert (backend / "triton_python_backend_stub").read_text() == "triton_python_backend_stub"
    assert not (stage / "opt/tritonserver/dist/bin").exists()  # builder-shebang scripts
    env = dict(item.split("=", 1) for item in images.TRITON_ENV)
    assert (stage / env["PATH"].split(":")[0].lstrip("/") / "tritonserver").is_file()
    assert (stage / env["LD_LIBRARY_PATH"].lstrip("/") / "libtritonserver-0.so").is_file()


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path):
    wheel = _fake_wheel(tmp_path / "wheels")
    with pytest.raises(images.ImageError) as refused:
        images.triton_wheel("0.7.0", "0" * 64, wheels=wheel.parent)
    assert str(refused.value) == (
        f"{wheel} has SHA-256 {_sha256(wheel.read_bytes())}, but group_data/all.py's "
        f"triton_wheel pins {'0' * 64}: delete the wheel and retry, or fix the pin"
    )
    assert images.triton_wheel("0.7.0", _sha256(wheel.read_bytes()), wheels=wheel.parent) == wheel


def test_the_triton_pin_is_group_data_s():
    namespace: dict = {}
    source = (images.REPO / "group_data/all.py").read_text()
    exec(compile(source, "group_data/all.py", "exec"), namespace)
    pin = namespace["triton_wheel"]
    assert images.triton_pin() == (pin["version"], pin["sha256"]["amd64"])


def test_serve_puts_archives_in_the_mirror_and_records_them_next_to_the_others(
    built, tmp_path, monkeypatch
):
    artifacts = tmp_path / "artifacts.json"
    artifacts.write_text(json.dumps({"k3s": {"version": "v1"}}))
    monkeypatch.setattr(images, "MIRROR_DIR", tmp_path / "mirror")
    monkeypatch.setattr(mirror, "ARTIFACTS_FILE", artifacts)
    ident, archive, sha = built
    pins = images.serve({"http_image": built})
    served = tmp_path / "mirror/images/http.tar"
    assert served.read_bytes() == archive.read_bytes()
    expected = {"id": ident, "url": f"{MIRROR_URL}/images/http.tar", "sha256": sha}
    assert pins == {"http_image": expected}
    assert json.loads(artifacts.read_text()) == {"k3s": {"version": "v1"}, "http_image": expected}
