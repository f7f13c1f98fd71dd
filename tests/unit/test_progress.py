"""Long steps say how they go (issue 23 item 7): every wait longer than progress.EVERY seconds
says what it waits for, how long so far and its limit, at least every EVERY seconds; a download
says how much has come; and pyinfra shows these lines as they come in a plain run.

Each wait's real command runs here by sh with fake probes on PATH and EVERY shortened to one
second. Nothing is timed: a fake probe answers only once the test has read the progress lines
it expects (`run_until`), so a line per interval is what the wait printed before it ended."""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from shlex import quote

import gevent
import pytest

from operations import _shell, apt_repo, docker, k3s, managed, progress, services
from operations import triton as triton_ops
from tests.unit.test_k3s_manifests_applied import APP, HELD, IN_PLACE, OLD, _applied
from tests.unit.test_k3s_operations import _fake_tools as fake_tools
from tests.unit.test_operations import run_op, shell_syntax_errors

REPO = Path(__file__).resolve().parents[2]


def watched(command: str, what: str, limit: int | None, *, bounded=True, every=10) -> str:
    """The text a watched wait has, written out: `command` in the background, a ticker beside
    it, then the ticker stopped and `command`'s status (tests of whole commands compare it)."""
    stop = f'[ "$oceanid_n" -le {limit} ] || exit 0; ' if bounded and limit else ""
    of = f"%s: %s s of %s s\\n' 'waiting for {what}' \"$oceanid_n\" {limit}"
    if limit is None:
        of = f"%s: %s s\\n' 'waiting for {what}' \"$oceanid_n\""
    return (
        f"{command} & oceanid_job=$!; ( oceanid_n=0; while sleep {every} </dev/null >/dev/null "
        f"2>&1; do oceanid_n=$((oceanid_n+{every})); {stop}printf '{of}; done ) & "
        'oceanid_tick=$!; wait "$oceanid_job"; oceanid_rc=$?; kill "$oceanid_tick" 2>/dev/null; '
        '(exit "$oceanid_rc")'
    )


@pytest.fixture
def every_second(monkeypatch):
    monkeypatch.setattr(progress, "EVERY", 1)


def waits_for(path: Path) -> str:
    """Shell: block until `path` exists (a fake probe's answer, given by the test)."""
    return f"until [ -e {path} ]; do sleep 0.05; done"


Stage = tuple[str, int, Callable[[], None]]


def run_until(command: str, env: dict, *stages: Stage) -> tuple[int, list[str], str]:
    """Run `command` by sh. Each stage (`said`, `times`, `release`): once stdout holds `times`
    lines starting with `said`, call `release` (which lets a fake probe answer); the stages go
    in turn. Returns the exit status, stdout's lines and stderr. A hang is killed at 60 s."""
    with tempfile.TemporaryFile(mode="w+") as err:
        process = subprocess.Popen(
            ["sh", "-c", command], stdout=subprocess.PIPE, stderr=err, text=True, env=env
        )
        guard = threading.Timer(60, process.kill)
        guard.start()
        lines: list[str] = []
        todo = list(stages)
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                while todo and sum(seen.startswith(todo[0][0]) for seen in lines) >= todo[0][1]:
                    todo.pop(0)[2]()
            code = process.wait()
        finally:
            guard.cancel()
        err.seek(0)
        assert not todo, f"never said {todo[0][0]!r}: {lines}"
        return code, lines, err.read()


def seconds_said(lines: list[str], what: str, limit: int | None) -> list[int]:
    """The seconds of each ``waiting for <what>: <n> s of <limit> s`` line, in order."""
    of = f" of {limit} s" if limit is not None else ""
    pattern = re.compile(rf"waiting for {re.escape(what)}: (\d+) s{re.escape(of)}")
    return [int(m.group(1)) for line in lines if (m := pattern.fullmatch(line))]


def assert_every_second(seconds: list[int], at_least: int) -> None:
    """A line every second: 1, 2, 3… (the ticker's own count), at least `at_least` of them."""
    assert len(seconds) >= at_least, seconds
    assert seconds == list(range(1, len(seconds) + 1)), seconds


# ---- the ticker itself


def test_a_wait_says_what_it_waits_for_every_interval_then_stops(tmp_path) -> None:
    release = tmp_path / "answered"
    text = " ".join(progress.watch("the probe", 30, "sh", "-c", quote(waits_for(release)), every=1))
    assert text == watched(f"sh -c {quote(waits_for(release))}", "the probe", 30, every=1)
    code, lines, err = run_until(
        text + "; echo after", dict(os.environ), ("waiting", 3, release.touch)
    )
    assert code == 0 and err == ""
    assert_every_second(seconds_said(lines, "the probe", 30), at_least=3)
    assert lines[-1] == "after"  # the ticker stopped with the wait: nothing after it


def test_the_waits_exit_status_is_the_whole_commands_and_an_exit_ends_only_the_wait() -> None:
    failing = " ".join(progress.watch("x", 5, "{", "exit", "7;", "}"))
    done = subprocess.run(
        ["sh", "-c", f'{failing} || echo "failed with $?"; echo after'],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.stdout.splitlines() == ["failed with 7", "after"]
    quick = " ".join(progress.watch("x", 600, "true"))
    done = subprocess.run(["sh", "-c", quick], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == ""  # over at once: no line, no ticker left


def test_the_ticker_ends_at_the_limit(tmp_path) -> None:
    """A wait that outlives its limit (as `timeout` does by its kill grace) is not said to be
    past it: the last line is the limit's."""
    release = tmp_path / "answered"
    text = " ".join(progress.watch("x", 1, "sh", "-c", quote(waits_for(release)), every=1))
    # released once the limit's line came, later than another tick would have come
    later = partial(subprocess.Popen, ["sh", "-c", f"sleep 1.5; touch {release}"])
    code, lines, _ = run_until(text, dict(os.environ), ("waiting for x: 1 s", 1, later))
    assert code == 0
    assert seconds_said(lines, "x", 1) == [1]


def test_a_python_wait_says_so_from_its_own_greenlet_while_a_call_blocks() -> None:
    said: list[float] = []
    with progress.telling(said.append, every=0.05):
        while len(said) < 3:  # a call blocked on the connection, as gevent sees it
            gevent.sleep(0.01)
    assert said[:3] == pytest.approx([0.05, 0.1, 0.15])
    count = len(said)
    gevent.sleep(0.2)
    assert len(said) == count  # stopped with the body


# ---- each wait of the deploy, its real command


def test_a_unit_start_and_its_health_check_say_what_they_wait_for(
    tmp_path, monkeypatch, every_second
) -> None:
    monkeypatch.setattr(services, "SETTLE", 0)
    started, healthy = tmp_path / "started", tmp_path / "healthy"
    command = services._started_and_alive(
        "restart", "k3s.service", health=f"[ -e {healthy} ]", rollback=["/usr/local/bin/k3s"]
    )
    assert isinstance(command, progress.Shown)
    assert command.get_raw_value().startswith(
        watched("timeout 150 systemctl restart k3s.service", "k3s.service to restart", 150, every=1)
    )
    env = fake_tools(tmp_path, systemctl=f'[ "$1" = restart ] && {waits_for(started)}; exit 0')
    code, lines, err = run_until(
        command.get_raw_value(),
        env,
        ("waiting for k3s.service to restart", 2, started.touch),
        ("waiting for k3s.service to become healthy", 2, healthy.touch),
    )
    assert code == 0, err
    assert_every_second(seconds_said(lines, "k3s.service to restart", 150), at_least=2)
    assert_every_second(seconds_said(lines, "k3s.service to become healthy", 120), at_least=2)


def test_a_rollback_restart_says_what_it_waits_for(tmp_path, monkeypatch, every_second) -> None:
    monkeypatch.setattr(services, "HEALTH_WAIT", 1)
    monkeypatch.setattr(services, "SETTLE", 0)
    binary = tmp_path / "k3s"
    binary.write_text("new")
    (tmp_path / "k3s.previous").write_text("old")
    back = tmp_path / "back"
    restarts = tmp_path / "restarts"
    command = services._started_and_alive("restart", "k3s.service", "false", [str(binary)])
    env = fake_tools(
        tmp_path,  # the second restart (on the previous binary) takes a while
        systemctl=f'[ "$1" = restart ] && echo >> {restarts} && '
        f'[ "$(wc -l < {restarts})" -gt 1 ] && {waits_for(back)}; exit 0',
        journalctl="echo 'k3s: no API'",
    )
    what = "k3s.service to restart on its previous binary"
    code, lines, err = run_until(
        command.get_raw_value(), env, (f"waiting for {what}", 2, back.touch)
    )
    assert code == 1 and binary.read_text() == "old"
    assert "was put back" in err
    assert_every_second(seconds_said(lines, what, 150), at_least=2)


def test_an_agent_says_it_waits_for_the_servers_api(tmp_path, every_second) -> None:
    run = run_op(k3s.wait_for_server, "https://tethys:7443", wait=30, facts={}, name="styx")
    (command,) = run.raw
    assert isinstance(command, progress.Shown)
    answers = tmp_path / "answers"
    env = fake_tools(tmp_path, curl=f"[ -e {answers} ]")
    what = "the k3s API at https://tethys:7443/ping"
    code, lines, err = run_until(run.strings[0], env, (f"waiting for {what}", 2, answers.touch))
    assert code == 0, err
    assert_every_second(seconds_said(lines, what, 30), at_least=2)


def test_the_wait_for_k3s_to_apply_a_manifest_says_which(tmp_path, every_second) -> None:
    run = _applied({**IN_PLACE, APP.path: b"kind: Deployment # before\n"}, {**HELD, **{
        "oceanid-label-studio": OLD
    }})  # fmt: skip
    (command,) = run.raw
    assert isinstance(command, progress.Shown) and shell_syntax_errors(run.commands) == []
    applied = tmp_path / "applied"
    env = fake_tools(tmp_path, k3s=f"[ -e {applied} ] && echo oceanid-label-studio={APP.sha256}")
    what = "k3s to apply oceanid-label-studio.yaml"
    code, lines, err = run_until(run.strings[0], env, (f"waiting for {what}", 2, applied.touch))
    assert code == 0, err
    assert_every_second(seconds_said(lines, what, k3s.APPLY_WAIT), at_least=2)


class _Triton(http.server.BaseHTTPRequestHandler):
    ready = False

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.send_response(200 if type(self).ready else 400)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def triton_port():
    handler = type("Handler", (_Triton,), {"ready": False})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


def test_the_wait_for_triton_says_which_models_it_waits_for(
    tmp_path, every_second, triton_port
) -> None:
    port, handler = triton_port
    run = run_op(
        triton_ops.wait_ready, "tritonserver.service", port, ["a", "b"], True, 300, facts={}
    )
    (command,) = run.raw
    assert isinstance(command, progress.Shown)
    env = fake_tools(
        tmp_path,
        systemctl='case "$*" in *SubState*) echo running;; *NRestarts*) echo 0;; esac',
    )
    what = "tritonserver.service to be ready (models: a, b)"

    def ready() -> None:
        handler.ready = True

    code, lines, err = run_until(run.strings[0], env, (f"waiting for {what}", 2, ready))
    assert code == 0, err
    assert_every_second(seconds_said(lines, what, 300), at_least=2)


def test_a_model_load_says_what_it_waits_for(tmp_path, every_second) -> None:
    run = run_op(triton_ops.load, ["m"], 8010, facts={})
    assert all(isinstance(command, progress.Shown) for command in run.raw)
    live, loaded = tmp_path / "live", tmp_path / "loaded"
    env = fake_tools(
        tmp_path,
        curl=f'case "$*" in *health/live*) [ -e {live} ];; *load*) {waits_for(loaded)};; esac',
    )
    answer = "Triton on 127.0.0.1:8010 to answer"
    code, lines, err = run_until(run.strings[0], env, (f"waiting for {answer}", 2, live.touch))
    assert code == 0, err
    assert_every_second(seconds_said(lines, answer, triton_ops.READY_WAIT), at_least=2)
    what = "Triton to finish loading model m"
    code, lines, err = run_until(run.strings[1], env, (f"waiting for {what}", 2, loaded.touch))
    assert code == 0, err
    assert_every_second(seconds_said(lines, what, triton_ops.LOAD_WAIT), at_least=2)


def test_a_pull_says_what_it_waits_for_beside_dockers_own_lines(tmp_path, every_second) -> None:
    command = docker._pull_command("registry.example/triton:1", "triton_image_archive")
    assert isinstance(command, progress.Shown)
    pulled = tmp_path / "pulled"
    env = fake_tools(
        tmp_path,
        docker=f"echo 'abc: Pulling fs layer'; {waits_for(pulled)}; echo 'abc: Pull complete'",
    )
    what = "docker pull registry.example/triton:1"
    code, lines, err = run_until(
        command.get_raw_value(), env, (f"waiting for {what}", 2, pulled.touch)
    )
    assert code == 0, err
    assert lines[0] == "abc: Pulling fs layer" and lines[-1] == "abc: Pull complete"
    assert_every_second(seconds_said(lines, what, docker.PULL_WAIT), at_least=2)


def test_a_stalled_key_download_says_what_it_waits_for(tmp_path, every_second) -> None:
    command = apt_repo._fetch_and_verify("https://keys.example/k.asc", "AB" * 20, "/nowhere")
    assert isinstance(command, progress.Shown)
    given_up = tmp_path / "given-up"
    env = fake_tools(tmp_path, curl=f"{waits_for(given_up)}; exit 28")
    what = "the key https://keys.example/k.asc"
    code, lines, _ = run_until(
        command.get_raw_value(), env, (f"waiting for {what}", 2, given_up.touch)
    )
    assert code != 0  # curl's own failure fails the command, as before
    limit = apt_repo.KEY_RETRY_WAIT + apt_repo.KEY_WAIT
    assert_every_second(seconds_said(lines, what, limit), at_least=2)


def test_the_backup_jobs_wait_says_what_it_waits_for(tmp_path, every_second) -> None:
    from deploys.cluster_apps import backup

    done = tmp_path / "done"
    kubectl = textwrap.dedent(
        f"""\
        case "$*" in
          *" get job "*) [ -e {done} ] && echo 'Complete ';;
          *" logs "*) echo 'apps/x  3 bytes  sha256 abc'; echo 'backup x: done (1 media files)';;
        esac
        exit 0"""
    )
    env = fake_tools(tmp_path, k3s=kubectl)
    script = backup.run_job_script("j", create=["create", "job", "j"], summary=True)
    what = "Job apps/j to finish"
    code, lines, err = run_until(script, env, (f"waiting for {what}", 2, done.touch))
    assert code == 0, err
    assert_every_second(seconds_said(lines, what, 3600), at_least=2)
    assert lines[-1] == "backup x: done (1 media files)"  # the summary only, on success
    assert "apps/x  3 bytes  sha256 abc" not in lines


def test_a_job_that_cannot_be_read_fails_at_once_without_its_logs(tmp_path) -> None:
    from deploys.cluster_apps import backup

    env = fake_tools(tmp_path, k3s='case "$*" in *" get job "*) exit 1;; *) echo LOG;; esac')
    script = backup.run_job_script("j", create=["create", "job", "j"])
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "LOG" not in done.stdout


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v curl"]).returncode, reason="curl")
def test_a_download_says_how_much_has_come_as_it_goes(tmp_path, every_second) -> None:
    """The real curl against a loopback server that sends half, then the rest only once the
    test read two progress lines: each says the bytes so far."""
    half = b"x" * 50_000
    rest = threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(2 * len(half)))
            self.end_headers()
            self.wfile.write(half)
            self.wfile.flush()
            rest.wait(60)
            self.wfile.write(half)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/tool"
    payload = half + half
    binary = managed.ManagedBinary(
        str(tmp_path / "tool"), url, "1", {"amd64": hashlib.sha256(payload).hexdigest()}
    )
    try:
        commands = list(_shell.download_commands(binary, url, binary.sha256["amd64"]))
        assert isinstance(commands[0], progress.Shown)
        code, lines, err = run_until(
            commands[0].get_raw_value(), dict(os.environ), (f"downloading {url}", 2, rest.set)
        )
    finally:
        rest.set()
        server.shutdown()
        server.server_close()
    assert code == 0, err
    pattern = re.compile(rf"downloading {re.escape(url)}: (\d+) bytes so far, (\d+) s")
    said = [(int(m[1]), int(m[2])) for line in lines if (m := pattern.fullmatch(line))]
    assert [seconds for _, seconds in said] == list(range(1, len(said) + 1))
    assert 0 < said[0][0] <= said[1][0] <= len(half)  # what had come (curl may buffer some)
    assert lines[-1].startswith(f"downloaded {len(payload)} bytes in ")
    verify = subprocess.run(["sh", "-c", commands[1].get_raw_value()], capture_output=True)
    assert verify.returncode == 0  # the verification after it is unchanged


# ---- waits in Python


def test_a_wait_for_the_agent_token_says_what_it_waits_for(tmp_path, monkeypatch, caplog):
    from tests.unit.test_k3s_operations import ShellHost, _execution_state

    monkeypatch.setattr(k3s, "_connector_arguments", lambda state, target: {})
    monkeypatch.setattr(k3s, "AGENT_TOKEN_WAIT", 30)
    clock = iter(range(0, 1000, 2))  # each look at the clock 2 s later
    monkeypatch.setattr(k3s.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(k3s.time, "sleep", lambda seconds: None)
    written = tmp_path / "agent-token"
    written.write_text("K10" + "cd" * 32 + "::server:secret\n")  # never the node form here
    monkeypatch.setattr(k3s, "SERVER_AGENT_TOKEN", str(written))
    tethys, styx = ShellHost("tethys", dict(os.environ)), ShellHost("styx", dict(os.environ))
    caplog.set_level(logging.INFO)
    assert not k3s._copy_token(
        _execution_state(tethys, styx), styx, "tethys", str(tmp_path / "t"), str(written)
    )
    what = f"k3s on tethys to write the agent token in {written}"
    said = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert said == [f"[styx] waiting for {what}: {n} s of 30 s" for n in (10, 20, 30)]


def test_a_snapshot_says_what_it_waits_for_while_it_runs(
    tmp_path, monkeypatch, caplog, every_second
) -> None:
    from tests.unit.test_k3s_operations import ShellHost

    monkeypatch.setattr(k3s, "_connector_arguments", lambda state, target: {})
    saved = tmp_path / "saved"
    script = f'{waits_for(saved)}; echo "level=info msg=\\"Snapshot $4-tethys-1 saved.\\"" >&2'
    tethys = ShellHost("tethys", fake_tools(tmp_path, k3s=script))
    tethys.log_styled = lambda message, **style: None  # type: ignore[method-assign]
    caplog.set_level(logging.INFO)
    what = "waiting for k3s etcd-snapshot save --name pre-upgrade-v1"

    def release_once_said_twice() -> None:
        while sum(what in r.getMessage() for r in caplog.records) < 2:
            gevent.sleep(0.05)
        saved.touch()

    releaser = gevent.spawn(release_once_said_twice)
    assert k3s._take_snapshot(None, tethys, "pre-upgrade-v1", "v1")
    releaser.join(timeout=10)
    said = [r.getMessage() for r in caplog.records if what in r.getMessage()]
    assert said[:2] == [f"[tethys] {what}: 1 s", f"[tethys] {what}: 2 s"]


# ---- what the operator sees: pyinfra shows these lines in a plain run


DEPLOY = """\
from pyinfra.api import QuoteString, StringCommand, operation
from operations import progress, _shell

@operation()
def wait(release, shown):
    probe = f"until [ -e {release} ]; do sleep 0.05; done"
    command = progress.watch("the probe", 30, "sh", "-c", QuoteString(probe), every=1)
    made = progress.Shown if shown else StringCommand
    yield made(*command, "&&", "echo", "the probe answered")

@operation()
def fail():
    yield progress.Shown("echo 'the last log line'", ";", "exit", "1")

wait(PLAIN, False, name="a plain StringCommand")
wait(SHOWN, True, name="a Shown one")
fail(name="a failing one")
"""


def test_a_plain_pyinfra_run_shows_the_lines_as_they_come_and_a_failure_once(tmp_path) -> None:
    """`pyinfra -y @local` without -v: a plain StringCommand's output is not shown (pyinfra
    shows output only with -vvv), a Shown command's is, line by line while it runs (its probe
    answers only once two were read here); a failed one's output appears once, not twice."""
    plain, shown = tmp_path / "plain", tmp_path / "shown"
    plain.touch()  # the plain command's probe answers at once: nobody would see its lines
    deploy = tmp_path / "deploy.py"
    deploy.write_text(DEPLOY.replace("PLAIN", repr(str(plain))).replace("SHOWN", repr(str(shown))))
    pyinfra = [sys.executable, "-m", "pyinfra", "-y", "@local", str(deploy)]
    with tempfile.TemporaryFile(mode="w+") as out:
        process = subprocess.Popen(pyinfra, cwd=REPO, stdout=out, stderr=subprocess.PIPE, text=True)
        guard = threading.Timer(120, process.kill)
        guard.start()
        lines: list[str] = []
        try:
            assert process.stderr is not None
            for line in process.stderr:
                lines.append(line.rstrip("\n"))
                if sum("waiting for the probe: " in seen for seen in lines) == 2:
                    shown.touch()
            process.wait()
        finally:
            guard.cancel()
    text = "\n".join(lines)
    before, after = text.split("--> Starting operation: a Shown one", 1)
    assert "the probe answered" not in before  # a plain command's output: not shown
    assert "[@local] waiting for the probe: 1 s of 30 s" in after
    assert "[@local] waiting for the probe: 2 s of 30 s" in after
    assert "the probe answered" in after
    assert text.count("the last log line") == 1
