"""
`operations.apt_repo.signed_repository` with real OpenPGP keys.

Two keys are generated here with gpg (a temporary GNUPGHOME): the pinned one and another. The
keyring a host reports in the role's fact is real key bytes, so the fingerprint check runs on
what a host would hold. The generated commands are also run for real, in order and stopping at
the first failure as pyinfra does, against a key served on 127.0.0.1, into a temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pyinfra.api import FileUploadCommand, OperationValueError, StringCommand

from facts.managed import ManagedState
from operations import apt_repo
from operations.managed import DesiredState, ManagedFile
from tests.unit.test_operations import (
    Run,
    _fresh_state_cache,  # noqa: F401 - autouse: each test is a fresh run
    file_state,
    managed_state,
    run_op,
    shell_syntax_errors,
)

KEY_URL = "https://nvidia.github.io/libnvidia-container/gpgkey"
KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
REPOSITORY = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /"
SOURCES_LINE = f"deb [signed-by={KEYRING}] {REPOSITORY}\n".encode()
UPDATE = "DEBIAN_FRONTEND=noninteractive apt-get update -qq"


class Key:
    def __init__(self, fingerprint: str, armored: bytes, binary: bytes) -> None:
        self.fingerprint = fingerprint
        self.armored = armored
        self.binary = binary


def _gpg(home: Path, *args: str) -> bytes:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", *args],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Iterator[dict[str, Key]]:
    """Two real ed25519 (v4) keys: `pinned` and `other`."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    made = {}
    try:
        for name in ("pinned", "other"):
            uid = f"Oceanid test {name} <{name}@example.invalid>"
            _gpg(home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
            listing = _gpg(home, "--with-colons", "--list-keys", uid).decode().splitlines()
            fingerprint = next(line.split(":")[9] for line in listing if line.startswith("fpr:"))
            made[name] = Key(
                fingerprint,
                _gpg(home, "--armor", "--export", fingerprint),
                _gpg(home, "--export", fingerprint),
            )
        yield made
    finally:  # quick-gen-key started an agent for this home: stop it
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def _repo(
    key: Key,
    installed: bytes | None,
    *,
    sources: bytes | None = SOURCES_LINE,
    keyring: str = KEYRING,
    sources_list: str = SOURCES,
    key_url: str = KEY_URL,
) -> Run:
    """signed_repository on a host whose keyring holds `installed` and whose sources file
    holds `sources` (None: missing)."""
    desired = DesiredState(name="gpu host calypso", read=[keyring, sources_list])
    paths = {
        sources_list: None if sources is None else file_state(ManagedFile(sources_list, sources)),
        keyring: None if installed is None else file_state(ManagedFile(keyring, installed)),
    }
    contents = {keyring: installed, sources_list: sources}
    return run_op(
        apt_repo.signed_repository,
        desired,
        key_url=key_url,
        fingerprint=key.fingerprint,
        keyring=keyring,
        sources_list=sources_list,
        repository=REPOSITORY,
        facts={ManagedState: managed_state(paths=paths, contents=contents)},
    )


def _kinds(run: Run) -> list[str]:
    """What each yielded command does, in order: fetch, upload (the sources file), update."""
    kinds = []
    for command in run.raw:
        if isinstance(command, FileUploadCommand):
            kinds.append("upload")
            continue
        text = command.get_raw_value()
        if "gpg" in text:
            kinds.append("fetch")
        elif text == UPDATE:
            kinds.append("update")
        elif SOURCES in text or ".oceanid-staging" in text:
            kinds.append("sources")
        else:
            kinds.append(text)
    return kinds


# ---- the fingerprint of a keyring, computed here


def test_fingerprints_are_gpgs_for_each_key_and_for_a_two_key_keyring(keys) -> None:
    pinned, other = keys["pinned"], keys["other"]
    assert apt_repo.primary_fingerprints(pinned.binary) == [pinned.fingerprint]
    assert apt_repo.primary_fingerprints(other.binary) == [other.fingerprint]
    both = pinned.binary + other.binary
    assert apt_repo.primary_fingerprints(both) == [pinned.fingerprint, other.fingerprint]


def test_an_armoured_or_cut_keyring_cannot_be_read(keys) -> None:
    pinned = keys["pinned"]
    with pytest.raises(ValueError, match="no OpenPGP packet"):
        apt_repo.primary_fingerprints(pinned.armored)
    with pytest.raises(ValueError, match="cut short"):
        apt_repo.primary_fingerprints(pinned.binary[:-3])


# ---- what the operation decides from the fact


def test_pinned_keyring_and_sources_in_place_is_a_noop(keys) -> None:
    pinned = keys["pinned"]
    run = _repo(pinned, pinned.binary)
    assert run.commands == []
    assert run.noop == (f"{KEYRING} holds only key {pinned.fingerprint}, and {SOURCES} is in place")


@pytest.mark.parametrize(
    "installed",
    ["other key", "pinned and other", "armoured pinned", "missing"],
)
def test_a_keyring_that_is_not_only_the_pinned_key_is_replaced(keys, installed) -> None:
    pinned, other = keys["pinned"], keys["other"]
    content = {
        "other key": other.binary,
        "pinned and other": pinned.binary + other.binary,
        "armoured pinned": pinned.armored,
        "missing": None,
    }[installed]
    run = _repo(pinned, content)
    assert _kinds(run) == ["fetch", "update"]
    assert shell_syntax_errors(run.commands) == []


def test_sources_are_written_only_after_the_key_is_verified(keys) -> None:
    pinned, other = keys["pinned"], keys["other"]
    run = _repo(pinned, other.binary, sources=None)
    kinds = _kinds(run)
    assert kinds[0] == "fetch"
    assert "upload" in kinds and kinds[-1] == "update"
    [upload] = [c for c in run.raw if isinstance(c, FileUploadCommand)]
    assert upload.src.getvalue() == SOURCES_LINE
    assert shell_syntax_errors(run.commands) == []


def test_changed_sources_with_the_pinned_key_rewrite_only_the_sources(keys) -> None:
    pinned = keys["pinned"]
    run = _repo(pinned, pinned.binary, sources=b"deb https://elsewhere.example/ /\n")
    kinds = _kinds(run)
    assert "fetch" not in kinds
    assert "upload" in kinds and kinds[-1] == "update"


def test_a_keyring_the_fact_does_not_read_is_refused(keys) -> None:
    desired = DesiredState(name="gpu host calypso", read=[KEYRING])  # the sources file is not read
    with pytest.raises(OperationValueError, match=f"{SOURCES}: add to the `read` list"):
        run_op(
            apt_repo.signed_repository,
            desired,
            key_url=KEY_URL,
            fingerprint=keys["pinned"].fingerprint,
            keyring=KEYRING,
            sources_list=SOURCES,
            repository=REPOSITORY,
            facts={ManagedState: managed_state()},
        )


# ---- the generated commands, run for real against a key served on 127.0.0.1


@pytest.fixture
def key_server(tmp_path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving the folder it returns; the URL of `gpgkey` there."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *_args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/gpgkey", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def execute(run: Run, cwd: Path) -> tuple[list[str], subprocess.CompletedProcess | None]:
    """Run the commands as pyinfra would, in order, stopping at the first that fails; uploads
    land relative to `cwd` (the SSH user's home); apt-get update is recorded, not run."""
    done: list[str] = []
    for command in run.raw:
        if isinstance(command, FileUploadCommand):
            (cwd / command.dest).write_bytes(command.src.getvalue())
            done.append("upload")
            continue
        assert isinstance(command, StringCommand)
        text = command.get_raw_value()
        if text == UPDATE:
            done.append("update")
            continue
        if os.geteuid() != 0:  # the sources file is root's on a host; here, the test user's
            text = text.replace("chown root:root", f"chown {os.getuid()}:{os.getgid()}")
        result = subprocess.run(
            ["sh", "-c", text], cwd=cwd, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            return done, result
        done.append(_kinds(Run([], [command], None, []))[0])
    return done, None


def test_the_pinned_key_replaces_a_wrong_keyring_then_the_sources_are_written(
    keys, key_server, tmp_path
) -> None:
    pinned, other = keys["pinned"], keys["other"]
    url, served = key_server
    (served / "gpgkey").write_bytes(pinned.armored)
    keyring, sources = tmp_path / "keyring.gpg", tmp_path / "sources.list"
    keyring.write_bytes(other.binary)  # what a host that trusted the wrong key holds
    run = _repo(
        pinned,
        other.binary,
        sources=None,
        keyring=str(keyring),
        sources_list=str(sources),
        key_url=url,
    )
    done, failed = execute(run, tmp_path)
    assert failed is None, failed and failed.stderr
    assert done[0] == "fetch" and done[-1] == "update"
    assert apt_repo.primary_fingerprints(keyring.read_bytes()) == [pinned.fingerprint]
    assert oct(keyring.stat().st_mode & 0o777) == "0o644"
    assert sources.read_text() == f"deb [signed-by={keyring}] {REPOSITORY}\n"
    assert oct(sources.stat().st_mode & 0o777) == "0o644"
    assert not list(tmp_path.glob("*.oceanid-new"))


@pytest.mark.parametrize("served_key", ["other", "pinned and other"])
def test_a_published_key_that_is_not_the_pin_fails_before_the_sources(
    keys, key_server, tmp_path, served_key
) -> None:
    pinned, other = keys["pinned"], keys["other"]
    url, served = key_server
    armored = other.armored if served_key == "other" else pinned.armored + other.armored
    (served / "gpgkey").write_bytes(armored)
    keyring, sources = tmp_path / "keyring.gpg", tmp_path / "sources.list"
    keyring.write_bytes(b"old keyring")
    run = _repo(
        pinned, None, sources=None, keyring=str(keyring), sources_list=str(sources), key_url=url
    )
    done, failed = execute(run, tmp_path)
    assert done == [] and failed is not None and failed.returncode == 1
    assert f"{url}: expected the single key {pinned.fingerprint}" in failed.stderr
    if served_key == "other":
        assert f"got {other.fingerprint};" in failed.stderr
    else:
        assert "got none or several;" in failed.stderr
    assert keyring.read_bytes() == b"old keyring"  # left as it was
    assert not sources.exists()  # apt is not pointed at anything


def test_a_key_server_that_never_answers_fails_the_fetch_in_bounded_time(
    keys, tmp_path, monkeypatch
) -> None:
    """Run for real against a socket that takes the connection and says nothing, the limits
    shortened: curl gives up (its exit 28, time limit), the old keyring stays and apt is not
    pointed at anything."""
    import socket
    import time

    monkeypatch.setattr(apt_repo, "KEY_WAIT", 1)
    monkeypatch.setattr(apt_repo, "KEY_RETRY_WAIT", 1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/gpgkey"
        keyring, sources = tmp_path / "keyring.gpg", tmp_path / "sources.list"
        keyring.write_bytes(b"old keyring")
        run = _repo(
            keys["pinned"], None, sources=None, keyring=str(keyring), sources_list=str(sources),
            key_url=url,
        )  # fmt: skip
        fetch = run.strings[0]
        assert f"--connect-timeout {apt_repo.KEY_CONNECT_WAIT} --max-time 1 " in fetch
        started = time.monotonic()
        done, failed = execute(run, tmp_path)
        elapsed = time.monotonic() - started
    assert done == [] and failed is not None and failed.returncode == 28
    assert "Operation timed out" in failed.stderr or "timed out" in failed.stderr
    assert elapsed < 20
    assert keyring.read_bytes() == b"old keyring" and not sources.exists()
