"""
Our operations (``operations/``) against fact values, through pyinfra-testing where it can say it.

Two halves:

- Generated, one test per file in ``fixtures/operations/<module>.<operation>/`` (pyinfra's own
  layout: ``kwargs``, ``facts``, ``commands``, ``noop_description``, ``exception``). The harness
  builds dataclass arguments (our ``DesiredState``, ``ManagedBinary``...) from plain YAML, so every
  operation whose inputs are text is tested that way. Every expected command is also checked
  with ``sh -n``: a command that would not even parse on the host is a failure here.
- Hand-written below, for what its YAML cannot express: file content is ``bytes`` (the harness
  leaves it a ``str``, which ``ManagedFile.sha256`` cannot hash), the Triton stamp is ``bytes``,
  an empty fact list must be falsy (the harness wraps fact values in an object that is always
  true), and ``--diff`` needs ``host.log``, which its fake host lacks. These use the same fake
  state and host, with the fact layer (``host.get_fact``) the only thing replaced: it returns
  real fact values (``PathState``, ``GpuDevices().process(<real H200 output>)``).
"""

from __future__ import annotations

import grp
import hashlib
import inspect
import json
import logging
import os
import pwd
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import TestCase

import pytest
from pyinfra import logger as pyinfra_logger
from pyinfra.api import FunctionCommand, OperationValueError, StringCommand
from pyinfra.api.arguments import all_argument_meta
from pyinfra.api.operation import attach_args
from pyinfra.context import ctx_host, ctx_state
from pyinfra_testing.operations import make_operation_tests, parse_commands
from pyinfra_testing.util import FakeHost, FakeState

from facts.gpu import GpuDevices
from facts.managed import Account, ManagedState, PathState
from operations import _desired, _lock, _shell, apt_repo, failure, gpu, k3s, managed, services
from operations import triton as triton_ops
from operations._lock import RUN_ID
from operations._shell import STAGING
from operations.managed import (
    DesiredState,
    ManagedBinary,
    ManagedDirectory,
    ManagedFile,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
FIXTURES = Path(__file__).parent / "fixtures" / "operations"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------------------------
# Shared checks


def shell_syntax_errors(commands: list[Any]) -> list[str]:
    """`sh -n` on every shell command of a parsed command list: what would not parse."""
    errors = []
    for command in commands:
        text = command.get("command") if isinstance(command, dict) else command
        if isinstance(text, dict):  # masked: {"raw": ..., "masked": ...}
            text = text["raw"]
        if not isinstance(text, str):  # an upload: ["upload", data, dest]
            continue
        result = subprocess.run(["sh", "-n", "-c", text], capture_output=True, text=True)
        if result.returncode != 0:
            errors.append(f"{text!r}: {result.stderr.strip()}")
    return errors


@pytest.fixture(autouse=True)
def _fresh_state_cache():
    """`DesiredState.state()` memoises per host and role for a pyinfra run; each test is a run."""
    _desired.STATE_CACHE.clear()
    yield
    _desired.STATE_CACHE.clear()


# --------------------------------------------------------------------------------------------
# Generated: one test per fixture file


def _with_fresh_cache_and_shell_check(case: type[TestCase]) -> type[TestCase]:
    generated = case._test  # type: ignore[attr-defined]

    def _test(self: TestCase, test_name: str, test_data: dict[str, Any]) -> None:
        _desired.STATE_CACHE.clear()
        try:
            generated(self, test_name, test_data)
        finally:
            _desired.STATE_CACHE.clear()
        # Reached only when the yielded commands equal the fixture's, so this checks them.
        assert shell_syntax_errors(test_data.get("commands", [])) == []

    case._test = _test  # type: ignore[attr-defined]
    return case


for _op_dir in sorted(path for path in FIXTURES.iterdir() if path.is_dir()):
    _case = _with_fresh_cache_and_shell_check(
        make_operation_tests("operations", _op_dir.name, _op_dir)
    )
    globals()[f"TestOperation_{_op_dir.name.replace('.', '_')}"] = _case
del _op_dir, _case


def test_every_fixture_folder_names_an_operation_and_has_cases() -> None:
    """A misnamed folder would import nothing and so test nothing."""
    folders = sorted(path.name for path in FIXTURES.iterdir() if path.is_dir())
    assert folders, "no operation fixtures found"
    for name in folders:
        cases = list((FIXTURES / name).glob("*.yaml")) + list((FIXTURES / name).glob("*.json"))
        assert cases, f"{name}: no cases"


@pytest.mark.parametrize(
    "module", [apt_repo, gpu, k3s, managed, services, triton_ops], ids=lambda m: m.__name__
)
def test_every_operation_is_a_generator(module) -> None:
    """pyinfra iterates an operation's body; one that only raises or noops must still yield."""
    ops = [value for value in vars(module).values() if hasattr(value, "_inner")]
    assert ops
    for op in ops:
        assert inspect.isgeneratorfunction(op._inner), f"{module.__name__}.{op.__name__}"


# --------------------------------------------------------------------------------------------
# Hand-written: a fake host whose facts are real Python values


class _Host(FakeHost):
    """pyinfra-testing's fake host, plus `log` and `log_styled`, which the real `Host` has."""

    def log(self, message: str, log_func=pyinfra_logger.info) -> None:
        log_func(f"{self.print_prefix}{message}")

    def log_styled(self, message: str, log_func=pyinfra_logger.info, **_style) -> None:
        log_func(f"{self.print_prefix}{message}")


def assert_refused(run: Run, caplog, text: str) -> str:
    """The operation failed the way `operations.failure.refuse` fails it: one logged line
    (shown in --dry too), then a command that fails, and nothing else."""
    assert len(run.raw) == 1 and isinstance(run.raw[0], FunctionCommand), run.raw
    assert run.raw[0].function is failure._failed
    assert run.raw[0].function(None, None) is False
    message = next(r.getMessage() for r in caplog.records if text in r.getMessage())
    return message


@dataclass
class Run:
    commands: list[Any]  # as pyinfra-testing compares them: str, {"_sudo": ..., "command": ...}
    raw: list[Any]  # what the operation yielded
    noop: str | None
    facts: list[tuple[type, dict]]

    @property
    def strings(self) -> list[str]:
        """Every shell command as text (uploads left out)."""
        out = []
        for command in self.commands:
            text = command.get("command") if isinstance(command, dict) else command
            if isinstance(text, str):
                out.append(text)
        return out


def run_op(
    op, *args, facts: dict[type, Any], diff: bool = False, name="calypso", failed=(), **kwargs
) -> Run:
    """Run an operation's body on a fake host; `facts` maps fact class -> its value;
    `failed`: names of other hosts of the run that failed before this operation."""
    state = FakeState()
    state.config.DIFF = diff
    # pyinfra's State keeps the hosts that failed in this run (pyinfra_testing's lacks it)
    gone = [_Host(state, other, facts={}, data={}) for other in failed]
    state.failed_hosts = set(gone)
    if gone:
        state.inventory = gone
    host = _Host(state, name, facts={}, data={})
    calls: list[tuple[type, dict]] = []

    def get_fact(fact_cls, *fact_args, **fact_kwargs):
        fact_kwargs = {k: v for k, v in fact_kwargs.items() if k not in all_argument_meta}
        fact_cls().command(*fact_args, **fact_kwargs)  # real fact arguments, or a TypeError
        calls.append((fact_cls, fact_kwargs))
        return facts[fact_cls]

    host.get_fact = get_fact  # type: ignore[method-assign]
    with ctx_state.use(state), ctx_host.use(host):
        raw = list(op._inner(*args, **kwargs))
    commands = parse_commands(list(raw))  # the form pyinfra-testing compares
    return Run(commands, raw, host.noop_description, calls)


def managed_state(
    *,
    arch: str | None = "amd64",
    paths: dict | None = None,
    packages: dict | None = None,
    users: dict | None = None,
    contents: dict | None = None,
    units: dict | None = None,
    trees: dict | None = None,
) -> dict:
    """A `ManagedState` value, in the shape its `process` returns."""
    return {
        "arch": arch,
        "python": "3.11",
        "paths": paths or {},
        "packages": packages or {},
        "users": users or {},
        "contents": contents or {},
        "units": units or {},
        "trees": trees or {},
    }


def file_state(managed_file: ManagedFile, **changes) -> PathState:
    """The PathState a host reports when `managed_file` is exactly in place (or as changed)."""
    values = {
        "kind": "file",
        "mode": managed_file.mode.zfill(4),
        "user": managed_file.user,
        "group": managed_file.group,
        "sha256": managed_file.sha256,
    }
    return PathState(**{**values, **changes})


SUDOERS = ManagedFile(
    "/etc/sudoers.d/oceanid",
    b"oceanid ALL=(ALL) NOPASSWD:ALL\n",
    mode="0440",
    validate="visudo -cq -f {path}",
)
CONFIG = ManagedFile("/etc/cloudflared/config.yaml", b"tunnel: 1\nprotocol: auto\n")
RUN_STAGING = f"{STAGING}/{RUN_ID}"  # this run's own staging folder
STAGED_CONFIG = f"{RUN_STAGING}/{CONFIG.sha256[:16]}"


def base_desired(*files: ManagedFile) -> DesiredState:
    return DesiredState(name="base calypso", files=list(files or (SUDOERS, CONFIG)))


# ---- managed.files


def test_files_up_to_date_is_a_noop_and_reads_one_fact() -> None:
    desired = base_desired()
    state = managed_state(paths={f.path: file_state(f) for f in desired.files})
    run = run_op(managed.files, desired, facts={ManagedState: state})
    assert run.commands == []
    assert run.noop == "2 file(s) of base calypso are up to date"
    assert run.facts == [(ManagedState, desired.fact_args())]


def test_changed_file_is_staged_copied_owned_and_renamed() -> None:
    desired = base_desired()
    state = managed_state(
        paths={SUDOERS.path: file_state(SUDOERS), CONFIG.path: file_state(CONFIG, sha256="0" * 64)}
    )
    run = run_op(managed.files, desired, facts={ManagedState: state})
    new = "/etc/cloudflared/config.yaml.oceanid-new"
    assert run.commands == [
        {
            "_sudo": False,
            "command": f"umask 077 && mkdir -p {RUN_STAGING} && chmod 0700 {STAGING} "
            f"{RUN_STAGING} && find {STAGING} -mindepth 1 -maxdepth 1 -mmin +60 -exec rm -rf "
            f"{{}} + && : > {STAGED_CONFIG}",
        },
        {"_sudo": False, "command": ["upload", CONFIG.content.decode(), STAGED_CONFIG]},
        f"( umask 077 && cp {STAGED_CONFIG} {new} && chown root:root {new} && chmod 0644 {new} "
        f"&& mv -f {new} {CONFIG.path} ) || {{ rm -f {new} ; rm -rf {RUN_STAGING} ; exit 1 ; }}",
        {"_sudo": False, "command": f"rm -rf {RUN_STAGING}"},
    ]
    assert run.noop is None
    assert shell_syntax_errors(run.commands) == []


def test_missing_file_is_created_the_same_way() -> None:
    desired = base_desired(CONFIG)
    run = run_op(
        managed.files, desired, facts={ManagedState: managed_state(paths={CONFIG.path: None})}
    )
    assert run.commands[1] == {
        "_sudo": False,
        "command": ["upload", CONFIG.content.decode(), STAGED_CONFIG],
    }
    assert f"mv -f {CONFIG.path}.oceanid-new {CONFIG.path}" in run.strings[1]


def test_validate_runs_on_the_new_copy_before_it_replaces_the_old() -> None:
    desired = base_desired(SUDOERS)
    state = managed_state(paths={SUDOERS.path: file_state(SUDOERS, sha256="1" * 64)})
    run = run_op(managed.files, desired, facts={ManagedState: state})
    chain = run.strings[1]
    new = "/etc/sudoers.d/oceanid.oceanid-new"
    steps = [
        "umask 077",
        f"cp {STAGING}/",
        f"visudo -cq -f {new}",
        f"chown root:root {new}",
        f"chmod 0440 {new}",
        f"mv -f {new} /etc/sudoers.d/oceanid",
    ]
    positions = [chain.index(step) for step in steps]
    assert positions == sorted(positions), chain
    assert shell_syntax_errors(run.commands) == []


def test_only_attributes_changed_fixes_them_in_place() -> None:
    desired = base_desired(SUDOERS)
    state = managed_state(paths={SUDOERS.path: file_state(SUDOERS, mode="0644", user="oceanid")})
    run = run_op(managed.files, desired, facts={ManagedState: state})
    assert run.commands == [
        "chown root:root /etc/sudoers.d/oceanid",
        "chmod 0440 /etc/sudoers.d/oceanid",
    ]


def test_files_paths_narrows_to_the_named_files() -> None:
    desired = base_desired()
    state = managed_state(
        paths={SUDOERS.path: file_state(SUDOERS, sha256="1" * 64), CONFIG.path: None}
    )
    run = run_op(managed.files, desired, paths=[CONFIG.path], facts={ManagedState: state})
    assert all("sudoers" not in text for text in run.strings)
    with pytest.raises(OperationValueError, match="/etc/nope is not in manifest base calypso"):
        run_op(managed.files, desired, paths=["/etc/nope"], facts={ManagedState: state})


def test_something_else_where_a_file_belongs_is_refused(caplog) -> None:
    desired = base_desired(CONFIG)
    state = managed_state(paths={CONFIG.path: PathState("directory", "0755", "root", "root")})
    run = run_op(managed.files, desired, facts={ManagedState: state})
    assert_refused(run, caplog, "config.yaml exists but is a directory, not a file")


def test_a_file_where_a_directory_belongs_is_refused(caplog) -> None:
    desired = DesiredState(
        name="gpu host calypso", directories=[ManagedDirectory("/etc/cloudflared")]
    )
    state = managed_state(paths={"/etc/cloudflared": PathState("file", "0644", "root", "root")})
    run = run_op(managed.directories, desired, facts={ManagedState: state})
    assert_refused(run, caplog, "/etc/cloudflared exists but is a file, not a directory")


def _execute(commands: list[Any], cwd: Path) -> subprocess.CompletedProcess | None:
    """Run parsed commands the way the SSH connector would (an upload writes the file)."""
    for command in commands:
        body = command["command"] if isinstance(command, dict) else command
        if isinstance(body, list) and body[0] == "upload":
            (cwd / body[2]).write_text(body[1])
            continue
        result = subprocess.run(["sh", "-c", body], cwd=cwd, capture_output=True, text=True)
        if result.returncode != 0:
            return result
    return None


def _me() -> tuple[str, str]:
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


@pytest.mark.parametrize("valid", [True, False])
def test_replace_chain_runs_atomically_and_validate_protects_the_old_file(
    tmp_path: Path, valid: bool
) -> None:
    """The real commands, run by sh in a scratch home: a failed check leaves no trace."""
    home, etc = tmp_path / "home", tmp_path / "etc"
    home.mkdir()
    etc.mkdir()
    target = etc / "rule"
    target.write_text("old\n")
    user, group = _me()
    rule = ManagedFile(
        str(target),
        b"VALID new rule\n" if valid else b"broken rule\n",
        mode="0640",
        user=user,
        group=group,
        validate="grep -q VALID {path}",
    )
    state = managed_state(paths={rule.path: file_state(rule, sha256="2" * 64)})
    run = run_op(managed.files, base_desired(rule), facts={ManagedState: state})
    failed = _execute(run.commands, home)
    staged = home / RUN_STAGING / rule.sha256[:16]
    assert not staged.exists() and not staged.parent.exists()
    assert not (etc / "rule.oceanid-new").exists()
    if valid:
        assert failed is None
        assert target.read_bytes() == rule.content
        assert oct(target.stat().st_mode & 0o777) == "0o640"
    else:
        assert failed is not None and failed.returncode == 1
        assert target.read_text() == "old\n"


# ---- secrets


TUNNEL_SECRET = "c2VjcmV0LXR1bm5lbC1zZWNyZXQtdmFsdWUtMTIzNDU2Nzg5MA=="


def _secret_desired() -> tuple[DesiredState, ManagedFile]:
    credential = ManagedFile(
        "/etc/cloudflared/0b1c6d3e-6f26-4c8a-9e70-5a8d3c1f2a4b.json",
        json.dumps({"TunnelSecret": TUNNEL_SECRET}).encode(),
        mode="0600",
        secret=True,
    )
    return base_desired(CONFIG, credential), credential


def test_secret_content_is_never_in_a_command_or_an_operation_argument() -> None:
    desired, credential = _secret_desired()
    state = managed_state(paths={CONFIG.path: None, credential.path: None})
    run = run_op(managed.files, desired, facts={ManagedState: state})
    uploads = [
        c["command"] for c in run.commands if isinstance(c, dict) and c["command"][0] == "upload"
    ]
    # The secret travels only as the upload's content, into the private staging folder
    secret_uploads = [u for u in uploads if TUNNEL_SECRET in u[1]]
    assert [u[2] for u in secret_uploads] == [f"{RUN_STAGING}/{credential.sha256[:16]}"]
    for command in run.raw:
        if isinstance(command, StringCommand):
            assert TUNNEL_SECRET not in command.get_raw_value()
            assert TUNNEL_SECRET not in command.get_masked_value()
    # How pyinfra prints an unnamed operation: str() of each argument
    meta = attach_args(SimpleNamespace(args=[]), (desired,), {"desired": desired})
    assert meta.args and all(TUNNEL_SECRET not in arg for arg in meta.args)
    assert TUNNEL_SECRET not in repr(desired)
    assert TUNNEL_SECRET not in repr(desired.fact_args())


def test_diff_shows_non_secret_changes_and_hides_secret_ones(caplog) -> None:
    desired, credential = _secret_desired()
    desired.read.append(CONFIG.path)
    state = managed_state(
        paths={
            CONFIG.path: file_state(CONFIG, sha256="3" * 64),
            credential.path: file_state(credential, sha256="4" * 64),
        },
        contents={CONFIG.path: b"tunnel: 1\nprotocol: quic\n"},
    )
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        run_op(managed.files, desired, diff=True, facts={ManagedState: state})
    text = ANSI.sub("", caplog.text)
    assert "- protocol: quic" in text
    assert "+ protocol: auto" in text
    assert f"{credential.path}: secret content changes (not shown)" in text
    assert TUNNEL_SECRET not in text


def test_without_diff_nothing_is_logged(caplog) -> None:
    desired, credential = _secret_desired()
    state = managed_state(paths={CONFIG.path: None, credential.path: None})
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        run_op(managed.files, desired, facts={ManagedState: state})
    assert "protocol" not in caplog.text
    assert "not shown" not in caplog.text


# ---- managed.binaries, run for real


def test_binary_checksum_mismatch_keeps_the_installed_one(tmp_path: Path) -> None:
    """The real verify and rename commands, with the download already in place."""
    target = tmp_path / "cloudflared"
    target.write_text("installed\n")
    download = tmp_path / "cloudflared.oceanid-new"
    good = b"#!/bin/sh\necho pinned\n"
    pin = hashlib.sha256(good).hexdigest()
    binary = ManagedBinary(
        str(target), "https://mirror.example/{version}/{arch}", "1", {"amd64": pin}
    )
    desired = DesiredState(name="node", binaries=[binary])
    run = run_op(managed.binaries, desired, facts={ManagedState: managed_state()})
    assert len(run.strings) == 3 and run.strings[0].startswith("curl ")
    assert pin in run.strings[1] and "the installed binary was left in place" in run.strings[1]
    verify_and_rename = run.strings[1:]

    download.write_bytes(b"tampered\n")
    failed = _execute(verify_and_rename, tmp_path)
    assert failed is not None and failed.returncode == 1
    assert f"expected {pin}" in failed.stderr and "left in place" in failed.stderr
    assert target.read_text() == "installed\n" and not download.exists()

    download.write_bytes(good)
    assert _execute(verify_and_rename, tmp_path) is None
    assert target.read_bytes() == good and os.access(target, os.X_OK)


# ---- services.unit / services.actions

UNIT = "cloudflared-node.service"
UNIT_FILE = ManagedFile(f"/etc/systemd/system/{UNIT}", b"[Service]\nExecStart=/bin/true\n")


def _unit_run(
    *,
    unit_file_changed=False,
    input_changed=False,
    enabled="enabled",
    active="active",
    restart=False,
):
    """(what `unit` yields, what `actions` decides) for one state of the unit and its files."""
    desired = DesiredState(name="gpu host calypso", files=[UNIT_FILE, CONFIG], units=[UNIT])
    unit_sha = "5" * 64 if unit_file_changed else UNIT_FILE.sha256
    config_sha = "6" * 64 if input_changed else CONFIG.sha256
    state = managed_state(
        paths={
            UNIT_FILE.path: file_state(UNIT_FILE, sha256=unit_sha),
            CONFIG.path: file_state(CONFIG, sha256=config_sha),
        },
        units={UNIT: {"enabled": enabled, "active": active}},
    )
    facts = {ManagedState: state}
    run = run_op(
        services.unit, desired, UNIT, UNIT_FILE.path, [CONFIG.path], restart=restart, facts=facts
    )
    _desired.STATE_CACHE.clear()
    with ctx_state.use(FakeState()), ctx_host.use(_fake_host_with(facts)):
        todo = services.actions(desired, UNIT, UNIT_FILE.path, [CONFIG.path], restart=restart)
    return run, todo


def _fake_host_with(facts: dict[type, Any]) -> _Host:
    host = _Host(FakeState(), "calypso", facts={}, data={})
    host.get_fact = lambda cls, *a, **k: facts[cls]  # type: ignore[method-assign]
    return host


def _alive(verb: str) -> str:
    from tests.unit.test_progress import watched  # it imports this module

    wait = f"timeout {services.START_WAIT} systemctl {verb} {UNIT}"
    return (
        f"{watched(wait, f'{UNIT} to {verb}', services.START_WAIT)} && sleep 2 && "
        f"systemctl is-active --quiet {UNIT} || "
        f"{{ echo '{UNIT} did not become active within {services.START_WAIT}s or did not stay "
        "active; its last log lines:' >&2; "
        f"journalctl -u {UNIT} -n 25 --no-pager >&2; exit 1; }}"
    )


def test_unit_file_changed_reloads_and_restarts() -> None:
    run, todo = _unit_run(unit_file_changed=True)
    assert todo == ["daemon-reload", "restart"]
    assert run.commands == ["systemctl daemon-reload", _alive("restart")]
    assert shell_syntax_errors(run.commands) == []


def test_input_changed_restarts_only() -> None:
    run, todo = _unit_run(input_changed=True)
    assert todo == ["restart"]
    assert run.commands == [_alive("restart")]


def test_a_change_outside_the_files_restarts_only() -> None:
    run, todo = _unit_run(restart=True)  # e.g. Triton's environment was rebuilt
    assert todo == ["restart"]
    assert run.commands == [_alive("restart")]


# ---- a restart owed: the marker written with the file, cleared by the restart

OWED = f"{_desired.OWED_DIR}/{UNIT}"


def test_a_replaced_input_marks_its_unit_owed_before_the_rename() -> None:
    """In the same command that renames the new file over the old: a run killed after it
    leaves the marker; one killed before it has not replaced the file."""
    desired = DesiredState(name="gpu host calypso", files=[CONFIG, SUDOERS], units=[UNIT])
    desired.reads(UNIT, [UNIT_FILE.path, CONFIG.path])  # what services.unit declares
    state = managed_state(paths={CONFIG.path: None, SUDOERS.path: None})
    run = run_op(managed.files, desired, facts={ManagedState: state})
    config_chain = next(s for s in run.strings if f"mv -f {CONFIG.path}.oceanid-new" in s)
    mark = f"mkdir -p {_desired.OWED_DIR} && touch {OWED} && mv -f {CONFIG.path}.oceanid-new"
    assert mark in config_chain
    sudoers_chain = next(s for s in run.strings if "mv -f /etc/sudoers.d/oceanid.oceanid" in s)
    assert "touch" not in sudoers_chain  # no unit reads it: nothing owed
    assert shell_syntax_errors(run.commands) == []


@pytest.mark.parametrize("stalls", [True, False], ids=["stalled", "slow-but-moving"])
def test_a_download_that_stalls_is_given_up_and_one_that_moves_is_not(
    tmp_path: Path, monkeypatch, stalls: bool
) -> None:
    """The real curl command against a loopback server sending 4 KiB at 2 KiB/s: with a
    floor of 1 KiB/s over 2 s, a server that then stops is given up (and the run fails
    naming the URL), one that keeps sending to the end is not cut, however long it takes."""
    import http.server
    import threading

    monkeypatch.setattr(_shell, "SLOW_SECONDS", 2)
    body = b"x" * 4096

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) * (2 if stalls else 1)))
            self.end_headers()
            for start in range(0, len(body), 512):
                self.wfile.write(body[start : start + 512])
                self.wfile.flush()
                time.sleep(0.25)
            if stalls:
                time.sleep(30)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{{version}}/{{arch}}"
        binary = ManagedBinary(str(tmp_path / "tool"), url, "1", {"amd64": "a" * 64})
        desired = DesiredState(name="gpu host calypso", binaries=[binary])
        run = run_op(managed.binaries, desired, facts={ManagedState: managed_state()})
        download = run.strings[0].replace("--retry 3", "--retry 0")  # one try, timed
        began = time.monotonic()
        done = subprocess.run(["sh", "-c", download], capture_output=True, text=True, timeout=60)
        took = time.monotonic() - began
    finally:
        server.shutdown()
    if stalls:
        assert done.returncode == 1 and "download failed: http://127.0.0.1:" in done.stderr
        assert took < 10, took  # not the 30 s the server would hold it
        assert not Path(f"{binary.path}.oceanid-new").exists()
    else:
        assert done.returncode == 0, done.stderr
        assert Path(f"{binary.path}.oceanid-new").read_bytes() == body


def test_a_replaced_binary_marks_its_unit_owed_before_the_rename() -> None:
    binary = ManagedBinary("/usr/local/bin/cloudflared", "https://x/{version}/{arch}", "1",
                           {"amd64": "a" * 64})  # fmt: skip
    desired = DesiredState(name="gpu host calypso", binaries=[binary], units=[UNIT])
    desired.reads(UNIT, [binary.path])
    run = run_op(managed.binaries, desired, facts={ManagedState: managed_state()})
    assert run.strings[-1] == (
        f"chmod 0755 {binary.path}.oceanid-new && mkdir -p {_desired.OWED_DIR} && touch {OWED} "
        f"&& mv -f {binary.path}.oceanid-new {binary.path}"
    )


def _owed_run(owed: bool, registered: bool = False):
    _desired.STATE_CACHE.clear()  # a run of its own
    desired = DesiredState(name="gpu host calypso", files=[UNIT_FILE, CONFIG], units=[UNIT])
    if registered:
        desired.reads(UNIT, [UNIT_FILE.path, CONFIG.path])
    state = managed_state(
        paths={UNIT_FILE.path: file_state(UNIT_FILE), CONFIG.path: file_state(CONFIG)},
        units={UNIT: {"enabled": "enabled", "active": "active", "owed": owed}},
    )
    return run_op(
        services.unit, desired, UNIT, UNIT_FILE.path, [CONFIG.path], facts={ManagedState: state}
    )


def test_an_owed_restart_is_done_although_the_files_are_in_place() -> None:
    run = _owed_run(owed=True)
    assert run.commands == ["systemctl daemon-reload", f"{_alive('restart')} && rm -f {OWED}"]
    assert shell_syntax_errors(run.commands) == []
    # nothing owed, nothing changed: nothing to do, registered or not
    for registered in (False, True):
        assert _owed_run(owed=False, registered=registered).commands == []


def test_a_restart_for_a_changed_input_clears_the_marker_the_files_wrote() -> None:
    desired = DesiredState(name="gpu host calypso", files=[UNIT_FILE, CONFIG], units=[UNIT])
    desired.reads(UNIT, [UNIT_FILE.path, CONFIG.path])
    state = managed_state(
        paths={UNIT_FILE.path: file_state(UNIT_FILE), CONFIG.path: file_state(CONFIG, sha256="7")},
        units={UNIT: {"enabled": "enabled", "active": "active", "owed": False}},
    )
    run = run_op(
        services.unit, desired, UNIT, UNIT_FILE.path, [CONFIG.path], facts={ManagedState: state}
    )
    assert run.commands == [f"{_alive('restart')} && rm -f {OWED}"]


def test_the_marker_stays_when_the_restart_fails(tmp_path: Path) -> None:
    """The clearing is part of the restart's command, after its checks: a unit that does
    not come up stays owed to the next run. Run for real, systemctl failing."""
    command = _owed_run(owed=True).strings[-1].replace(_desired.OWED_DIR, str(tmp_path))
    marker = tmp_path / UNIT
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool, code in (("systemctl", 1), ("journalctl", 0), ("sleep", 0), ("timeout", None)):
        body = 'shift; exec "$@"' if code is None else f"exit {code}"
        (tools / tool).write_text(f"#!/bin/sh\n{body}\n")
        (tools / tool).chmod(0o755)
    env = {"PATH": f"{tools}:/usr/bin:/bin"}
    for works in (False, True):
        marker.touch()
        (tools / "systemctl").write_text(f"#!/bin/sh\nexit {0 if works else 1}\n")
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
        assert (done.returncode == 0) is works, done.stderr
        assert marker.exists() is not works


def test_inactive_unit_is_started() -> None:
    run, todo = _unit_run(active="failed")
    assert todo == ["start"]
    assert run.commands == [_alive("start")]


def test_inactive_unit_whose_inputs_change_is_restarted() -> None:
    """A package installed in this run may have started the unit from its own files before
    ours replaced them (haproxy, docker.io): only a restart makes it read ours."""
    run, todo = _unit_run(input_changed=True, active="inactive")
    assert todo == ["restart"]
    assert run.commands == [_alive("restart")]


def test_disabled_unit_is_enabled() -> None:
    run, todo = _unit_run(enabled="disabled")
    assert todo == ["enable"]
    assert run.commands == [f"systemctl enable {UNIT}"]


def test_unknown_unit_is_reloaded_enabled_and_started() -> None:
    run, todo = _unit_run(enabled="not-found", active="inactive")
    assert todo == ["daemon-reload", "enable", "start"]
    assert run.commands == ["systemctl daemon-reload", f"systemctl enable {UNIT}", _alive("start")]


def test_settled_unit_is_a_noop() -> None:
    run, todo = _unit_run()
    assert todo == []
    assert run.commands == []
    assert run.noop == f"{UNIT} is enabled and active, and nothing it reads changed"


def test_start_fails_the_run_with_the_journal_when_the_unit_dies(tmp_path: Path) -> None:
    """Run the real start command with fake systemctl/journalctl on PATH."""
    run, _ = _unit_run(active="inactive")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(
        '#!/bin/sh\n[ "$1" = is-active ] && exit 3\nexit 0\n'
    )  # starts, then is not active
    (bin_dir / "journalctl").write_text("#!/bin/sh\necho 'cloudflared: Invalid tunnel secret'\n")
    (bin_dir / "sleep").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(["sh", "-c", run.strings[-1]], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "did not stay active" in result.stderr
    assert "Invalid tunnel secret" in result.stderr


def test_a_start_that_never_finishes_fails_after_the_wait(tmp_path: Path, monkeypatch) -> None:
    """A Type=notify unit with TimeoutStartSec=0 that never connects: systemctl start would
    wait for ever; the deploy gives up after START_WAIT with the unit's log."""
    monkeypatch.setattr(services, "START_WAIT", 1)
    run, _ = _unit_run(active="inactive")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text('#!/bin/sh\n[ "$1" = start ] && exec sleep 60\nexit 3\n')
    (bin_dir / "journalctl").write_text("#!/bin/sh\necho 'cloudflared: no edge connection'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    started = time.monotonic()
    result = subprocess.run(["sh", "-c", run.strings[-1]], env=env, capture_output=True, text=True)
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert f"{UNIT} did not become active within 1s" in result.stderr
    assert "no edge connection" in result.stderr


# ---- triton.environment: tests/unit/test_triton_operations.py


# ---- triton.strays (what prune removes; prune's commands are in the YAML fixtures)


def test_strays_keep_unmanaged_models_and_go_deepest_first() -> None:
    root = "/opt/triton/models"
    desired = DesiredState(
        name="gpu host calypso",
        files=[
            ManagedFile(f"{root}/m/config.pbtxt", b"name: 'm'"),
            ManagedFile(f"{root}/m/1/a.py", b""),
        ],
        trees=[root],
    )
    found = {
        "m": "directory",
        "m/config.pbtxt": "file",
        "m/1": "directory",
        "m/1/a.py": "file",
        "m/1/b.py": "file",
        "m/3": "directory",
        "m/3/sub": "directory",
        "m/3/sub/c.py": "file",
        "unmanaged": "directory",
        "unmanaged/config.pbtxt": "file",
    }
    state = managed_state(trees={root: found})
    with ctx_state.use(FakeState()), ctx_host.use(_fake_host_with({ManagedState: state})):
        extra = triton_ops.strays(desired, root, {"m"})
    assert set(extra) == {"m/1/b.py", "m/3", "m/3/sub", "m/3/sub/c.py"}
    depths = [rel.count("/") for rel in extra]
    assert depths == sorted(depths, reverse=True)


# ---- gpu.require, against the real H200's nvidia-smi output


def _h200_devices() -> list[dict]:
    path = SHARED_FIXTURES / "nvidia-smi" / "h200" / "query-gpu-noheader-nounits.csv"
    if not path.is_file():
        raise AssertionError(f"shared fixture {path} is missing (real H200 output is needed)")
    return GpuDevices().process(path.read_text().splitlines())


def test_require_gpu_passes_on_the_h200() -> None:
    devices = _h200_devices()
    assert [d["index"] for d in devices] == [0]
    run = run_op(gpu.require, gpus=[0], facts={GpuDevices: devices})
    assert run.commands == []
    assert run.noop.startswith("GPU present (0: NVIDIA H200; driver ")
    assert run.facts == [(GpuDevices, {})]
    assert run_op(gpu.require, facts={GpuDevices: devices}).noop == run.noop


def test_require_gpu_fails_without_a_gpu(caplog) -> None:
    devices = GpuDevices().process(["No devices were found"])
    assert devices == []
    run = run_op(gpu.require, gpus=[0], facts={GpuDevices: devices})
    message = assert_refused(run, caplog, "no usable NVIDIA GPU")
    assert "calypso: no usable NVIDIA GPU" in message
    assert "require_gpu" in message
    assert "fall" in message and "CPU" in message


def test_require_gpu_compares_the_driver_with_the_triton_images_minimum(caplog) -> None:
    """Issue 23: the H200's real driver (580.x) is new enough for the pinned image's 575;
    the same GPU against a release newer than its driver is refused, naming what to install."""
    devices = _h200_devices()
    (have,) = {d["driver_version"] for d in devices}
    image = "nvcr.io/nvidia/tritonserver:25.08-py3"
    run = run_op(gpu.require, gpus=[0], min_driver="575", image=image, facts={GpuDevices: devices})
    assert run.commands == [] and f"driver {have}" in run.noop
    newer = str(int(have.split(".")[0]) + 10)
    run = run_op(gpu.require, gpus=[0], min_driver=newer, image=image, facts={GpuDevices: devices})
    message = assert_refused(run, caplog, "older than")
    assert f"calypso: NVIDIA driver {have} is older than the {newer}" in message
    assert image in message and f"install driver release {newer} or later" in message


def test_require_gpu_names_configured_indexes_that_are_absent(caplog) -> None:
    run = run_op(gpu.require, gpus=[0, 1, 3], facts={GpuDevices: _h200_devices()})
    message = assert_refused(run, caplog, "are configured")
    assert "GPU index(es) [1, 3] are configured" in message
    assert "nvidia-smi lists only [0]" in message


# ---- apt_repo.signed_repository: tests/unit/test_apt_repo.py (real OpenPGP keys)


# ---- account facts used by other roles: a real Account value


def test_account_noop_reads_a_real_account_value() -> None:
    desired = DesiredState(name="base calypso", users=["oceanid"])
    account = Account(1000, 1000, "/home/oceanid", "/bin/bash", ("oceanid", "sudo"))
    run = run_op(
        managed.account,
        desired,
        "oceanid",
        facts={ManagedState: managed_state(users={"oceanid": account})},
    )
    assert run.noop == "account oceanid exists (uid 1000, home /home/oceanid)"


def test_directories_noop_with_real_path_state() -> None:
    desired = DesiredState(name="base calypso", directories=[ManagedDirectory("/etc/oceanid")])
    state = managed_state(paths={"/etc/oceanid": PathState("directory", "0755", "root", "root")})
    run = run_op(managed.directories, desired, facts={ManagedState: state})
    assert run.noop == "1 director(ies) of base calypso are in place"


# ---- the dry run tells the whole truth: plan and report every change, then yield


def _change_detection_then_execution(op, *args, facts, **kwargs) -> tuple[list[Any], list[Any]]:
    """What pyinfra does without -y: iterate the generator to its first command (change
    detection), then again in full (execution), as the same host and operation."""
    state = FakeState()
    state.config.DIFF = True
    host = _Host(state, "calypso", facts={}, data={})
    host.current_op_hash = "op-1"  # type: ignore[attr-defined]
    host.get_fact = lambda cls, *a, **k: facts[cls]  # type: ignore[method-assign]
    with ctx_state.use(state), ctx_host.use(host):
        first = next(iter(op._inner(*args, **kwargs)))
        _desired.STATE_CACHE.clear()
        everything = list(op._inner(*args, **kwargs))
    return [first], everything


def test_diff_shows_every_file_before_the_first_command_and_only_once(caplog) -> None:
    other = ManagedFile("/etc/cloudflared/other.yaml", b"a: 2\n")
    desired, credential = _secret_desired()
    desired.files.append(other)
    state = managed_state(
        paths={CONFIG.path: None, credential.path: None, other.path: None},
    )
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        _change_detection_then_execution(managed.files, desired, facts={ManagedState: state})
    text = ANSI.sub("", caplog.text)
    assert text.count(f"{CONFIG.path}: created") == 1
    assert text.count(f"{other.path}: created") == 1
    assert text.count("+ a: 2") == 1
    assert text.count(f"{credential.path}: secret content created (not shown)") == 1
    assert TUNNEL_SECRET not in text


def test_diff_of_a_large_or_binary_file_is_not_read_back(caplog) -> None:
    weights = ManagedFile("/opt/triton/models/m/1/weights.bin", b"\0\1" * 1000)
    desired = base_desired(CONFIG, weights)
    with ctx_state.use(FakeState()):
        _desired.state.config.DIFF = True
        assert desired.script_args()["peek"] == (CONFIG.path,)
    state = managed_state(
        paths={CONFIG.path: file_state(CONFIG), weights.path: file_state(weights, sha256="9" * 64)}
    )
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        run_op(managed.files, desired, diff=True, facts={ManagedState: state})
    assert f"{weights.path}: binary or large file changes" in ANSI.sub("", caplog.text)


def test_diff_names_every_directory_and_binary_change(caplog) -> None:
    pin = "b" * 64
    desired = DesiredState(
        name="gpu host calypso",
        directories=[ManagedDirectory("/etc/cloudflared"), ManagedDirectory("/opt/triton")],
        binaries=[
            ManagedBinary("/usr/local/bin/a", "https://x/{version}/{arch}", "1", {"amd64": pin}),
            ManagedBinary("/usr/local/bin/b", "https://x/{version}/{arch}", "2", {"amd64": pin}),
        ],
    )
    state = managed_state(
        paths={
            "/etc/cloudflared": None,
            "/opt/triton": PathState("directory", "0700", "triton", "root"),
            "/usr/local/bin/a": None,
            "/usr/local/bin/b": PathState("file", "0644", "root", "root", pin),
        }
    )
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        for op in (managed.directories, managed.binaries):
            _change_detection_then_execution(op, desired, facts={ManagedState: state})
    text = ANSI.sub("", caplog.text)
    for line in [
        "/etc/cloudflared: directory created (root:root 0755)",
        "/opt/triton: owner and mode triton:root 0700 become root:root 0755",
        "/usr/local/bin/a: 1 for amd64 installed from https://x/1/amd64",
        "/usr/local/bin/b: mode becomes 0755",
    ]:
        assert text.count(line) == 1, text


# ---- a state that could not be read: one line, and nothing acts on it


def test_an_unreadable_state_refuses_every_operation_on_it(caplog) -> None:
    desired = base_desired(CONFIG)
    desired.packages.append("curl")
    for op in (managed.files, managed.packages, managed.sweep):
        _desired.STATE_CACHE.clear()
        run = run_op(op, desired, facts={ManagedState: None})
        assert_refused(run, caplog, "could not read the state of base calypso")
    assert "calypso: could not read the state of base calypso" in caplog.text
    _desired.STATE_CACHE.clear()
    with ctx_state.use(FakeState()), ctx_host.use(_fake_host_with({ManagedState: None})):
        assert desired.will_change([CONFIG.path]) is False  # restarts nothing on it
        assert desired.unwanted() == []  # and removes nothing


# ---- staging is private in fact


def test_staging_folder_is_private_and_a_killed_runs_leftovers_go(tmp_path: Path) -> None:
    """This run stages in a 0700 folder of its own; what a killed run left (untouched for an
    hour) is removed, another run's fresh folder is not."""
    desired, credential = _secret_desired()
    staging = tmp_path / STAGING
    staging.mkdir(mode=0o755)
    staging.chmod(0o755)
    old, busy = staging / "left-by-a-killed-run", staging / "another-run"
    old.mkdir()
    (old / "staged").write_text("old secret")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    busy.mkdir()
    (busy / "staged").write_text("its upload")
    run = run_op(managed.files, base_desired(credential), facts={ManagedState: managed_state()})
    prepare, upload = run.commands[0], run.commands[1]
    subprocess.run(["sh", "-c", prepare["command"]], cwd=tmp_path, check=True)
    assert oct(staging.stat().st_mode & 0o777) == "0o700"
    staged = tmp_path / upload["command"][2]
    assert staged.parent == tmp_path / RUN_STAGING
    assert oct(staged.parent.stat().st_mode & 0o777) == "0o700"
    assert sorted(p.name for p in staging.iterdir()) == sorted([RUN_ID, busy.name])
    assert (busy / "staged").read_text() == "its upload"
    assert [p.name for p in staged.parent.iterdir()] == [staged.name]
    assert oct(staged.stat().st_mode & 0o777) == "0o600"  # before any content is in it
    assert prepare["_sudo"] is False and upload["_sudo"] is False


def test_two_runs_at_once_never_remove_each_others_uploads(tmp_path: Path, monkeypatch) -> None:
    """Two runs on one host (the lock bypassed), their commands interleaved as two SSH
    connections would run them: each replaces its file with its own upload."""
    user, group = _me()
    first = ManagedFile(str(tmp_path / "a.conf"), b"first run\n", user=user, group=group)
    second = ManagedFile(str(tmp_path / "b.conf"), b"second run\n", user=user, group=group)
    runs = []
    for run_id, managed_file in (("run-one", first), ("run-two", second)):
        monkeypatch.setattr(_lock, "RUN_ID", run_id)
        state = managed_state(paths={managed_file.path: None})
        op = run_op(managed.files, base_desired(managed_file), facts={ManagedState: state})
        runs.append(op.commands)
    home = tmp_path / "home"
    home.mkdir()
    # first's staging and upload, then second's staging, then each finishes
    order = [runs[0][:2], runs[1][:2], runs[0][2:], runs[1][2:]]
    for commands in order:
        assert _execute(commands, home) is None
    assert Path(first.path).read_bytes() == first.content
    assert Path(second.path).read_bytes() == second.content
    assert list((home / STAGING).iterdir()) == []  # and each cleaned up after itself


# ---- sweep: what the role wrote and no longer wants is removed

TUNNEL_ID = "0b1c6d3e-6f26-4c8a-9e70-5a8d3c1f2a4b"


def _record(files: list[str], directories: list[str] = ()) -> bytes:
    return (
        json.dumps({"directories": sorted(directories), "files": sorted(files)}, indent=1) + "\n"
    ).encode()


def test_sweep_removes_the_credential_of_the_old_shape(caplog) -> None:
    """The node tunnel switched from credentials.json to a token: the json goes."""
    token = ManagedFile("/etc/cloudflared/token", b"t", mode="0600", secret=True)
    desired = DesiredState(
        name="gpu host calypso",
        files=[CONFIG, token],
        directories=[ManagedDirectory("/etc/cloudflared")],
    )
    old = f"/etc/cloudflared/{TUNNEL_ID}.json"
    state = managed_state()
    state["record"] = _record([CONFIG.path, old], ["/etc/cloudflared"])
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        run = run_op(managed.sweep, desired, facts={ManagedState: state})
    assert desired.unwanted() == [old]
    assert run.strings[0] == f"rm -f -- {old}"
    assert f"{old}: no longer wanted, removed" in caplog.text
    # then the record is rewritten to what the manifest declares now
    record_upload = next(
        c["command"] for c in run.commands if isinstance(c, dict) and c["command"][0] == "upload"
    )
    assert json.loads(record_upload[1]) == {
        "directories": ["/etc/cloudflared"],
        "files": sorted([CONFIG.path, token.path]),
    }
    assert any(
        f"mv -f {desired.record_path}.oceanid-new {desired.record_path}" in s for s in run.strings
    )
    assert desired.record_path == "/var/lib/oceanid/gpu-host-calypso.paths"
    assert shell_syntax_errors(run.commands) == []


def test_sweep_with_nothing_unwanted_and_a_current_record_is_a_noop() -> None:
    desired = base_desired(CONFIG)
    state = managed_state()
    state["record"] = _record([CONFIG.path])
    run = run_op(managed.sweep, desired, facts={ManagedState: state})
    assert run.commands == []
    assert run.noop == "nothing base calypso wrote is unwanted; its record is up to date"


def test_sweep_without_a_record_removes_nothing_and_writes_one() -> None:
    desired = base_desired(CONFIG)
    for record in (None, b"not json", b'{"files": "/etc"}'):
        _desired.STATE_CACHE.clear()
        state = managed_state()
        state["record"] = record
        run = run_op(managed.sweep, desired, facts={ManagedState: state})
        assert desired.unwanted() == []
        assert not any(s.startswith(("rm -f --", "if [ -d")) for s in run.strings)
        assert any(desired.record_path in s for s in run.strings)


def test_sweep_for_real_removes_only_recorded_files_and_empty_directories(
    tmp_path: Path,
) -> None:
    """The real commands in a scratch tree: unlisted files stay, a non-empty directory stays."""
    models = tmp_path / "models"
    kept, gone = models / "kept", models / "gone"
    (gone / "1").mkdir(parents=True)
    kept.mkdir()
    (gone / "1" / "model.py").write_text("old")
    (gone / "config.pbtxt").write_text("old")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "not-ours").write_text("someone else's")
    unlisted = kept / "local-notes.txt"
    unlisted.write_text("mine")
    odd = tmp_path / "it's $(touch PWNED)"
    odd.write_text("old")
    wanted = ManagedFile(str(kept / "config.pbtxt"), b"name: kept\n")
    desired = DesiredState(
        name="gpu host calypso", files=[wanted], directories=[ManagedDirectory(str(kept))]
    )
    state = managed_state()
    state["record"] = _record(
        [wanted.path, str(gone / "1" / "model.py"), str(gone / "config.pbtxt"), str(odd)],
        [str(kept), str(gone), str(gone / "1"), str(busy), str(tmp_path / "never-made")],
    )
    run = run_op(managed.sweep, desired, facts={ManagedState: state})
    removals = [s for s in run.strings if s.startswith(("rm -f --", "if [ -d"))]
    for command in removals:
        subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True)
    assert not gone.exists() and not odd.exists()
    assert busy.is_dir() and (busy / "not-ours").exists()
    assert unlisted.exists() and kept.is_dir()
    assert not (tmp_path / "PWNED").exists()


def test_long_removals_are_split_into_commands_of_bounded_size() -> None:
    names = [f"/opt/triton/models/old/{i:05d}-{'x' * 200}" for i in range(1000)]
    desired = base_desired(CONFIG)
    state = managed_state()
    state["record"] = _record([CONFIG.path, *names])
    run = run_op(managed.sweep, desired, facts={ManagedState: state})
    removals = [s for s in run.strings if s.startswith("rm -f --")]
    assert len(removals) > 1
    assert all(len(s) < 100 * 1024 for s in removals)
    assert sorted(w for s in removals for w in s.split()[3:]) == sorted(names)


# ---- held packages


def test_a_held_package_is_installed_not_reinstalled() -> None:
    output = [
        "@@oceanid host",
        "amd64",
        "3.11",
        "@@oceanid packages",
        "cloudflared hi  2025.8.1",
        "@@oceanid end",
    ]
    state = ManagedState().process(output)
    desired = DesiredState(name="gpu host calypso", packages=["cloudflared"])
    run = run_op(managed.packages, desired, facts={ManagedState: state})
    assert run.commands == []
    assert run.noop == "1 package(s) of gpu host calypso are installed"


def test_a_shared_file_is_never_recorded_so_never_swept() -> None:
    keys = ManagedFile("/home/oceanid/.ssh/authorized_keys", b"ssh-ed25519 A\n", shared=True)
    desired = base_desired(SUDOERS, keys)
    state = managed_state()
    state["record"] = _record([SUDOERS.path, keys.path])  # however it got there
    run = run_op(managed.sweep, desired, facts={ManagedState: state})
    assert desired.declared() == {"files": [SUDOERS.path], "directories": []}
    assert not any(s.startswith("rm -f --") for s in run.strings)
