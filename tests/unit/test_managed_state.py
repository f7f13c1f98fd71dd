"""
The batched fact's script, run for real by /bin/sh, and the real pyinfra CLI on @local.

The script is what reaches a host, so it is tested by running it: on names with quotes,
spaces, backslashes, newlines and `$(...)` (which must stay names, never commands), on more
paths than fit in one `sh -c` argument, and through pyinfra itself (`_stdin` on the local
connector), with `ManagedState.process` parsing the real output.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.managed import PEEK_LIMIT, ManagedState, ManagedStates, script, script_together
from operations._lock import LOCK_ENV

REPO = Path(__file__).resolve().parents[2]
PYINFRA = REPO / ".venv" / "bin" / "pyinfra"

ODD_NAMES = [
    "it's here",
    'double "quoted"',
    "back\\slash",
    "new\nline",
    "$(touch PWNED)",
    "`touch PWNED2`",
    "; touch PWNED3 #",
    "-leading dash",
    "trailing space ",
    "ünïcode",
]


def run_script(text: str, cwd: Path) -> dict:
    """Run the script as `sh -s` does on a host and parse its output with the fact."""
    result = subprocess.run(
        ["sh", "-s"], input=text.encode(), cwd=cwd, capture_output=True, check=True
    )
    return ManagedState().process(result.stdout.decode().splitlines())


@pytest.fixture
def odd_tree(tmp_path: Path) -> Path:
    root = tmp_path / "odd"
    root.mkdir()
    for name in ODD_NAMES:
        (root / name).write_bytes(f"content of {name}\n".encode())
    (root / "a dir").mkdir()
    (root / "a dir" / "x'y").write_text("x\n")
    return root


def test_odd_names_are_names_not_commands(odd_tree: Path) -> None:
    paths = tuple(str(odd_tree / name) for name in ODD_NAMES)
    missing = str(odd_tree / "missing 'one'")
    state = run_script(
        script(
            files=(*paths, missing),
            read=paths,
            peek=paths,
            users=("root", "no such 'user'"),
            trees=(str(odd_tree),),
            record=paths[0],
        ),
        cwd=odd_tree,
    )
    for path in paths:
        content = Path(path).read_bytes()
        assert state["paths"][path].kind == "file"
        assert state["paths"][path].sha256 == hashlib.sha256(content).hexdigest(), path
        assert state["contents"][path] == content
        assert state["peeks"][path] == content
    assert state["paths"][missing] is None
    assert state["users"]["root"].uid == 0
    assert state["users"]["no such 'user'"] is None
    assert state["record"] == Path(paths[0]).read_bytes()
    tree = state["trees"][str(odd_tree)]
    assert tree["a dir"] == "directory" and tree["a dir/x'y"] == "file"
    assert {name for name in ODD_NAMES} <= set(tree)
    assert not list(odd_tree.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


def test_a_script_larger_than_one_argument_runs_whole(tmp_path: Path) -> None:
    """The kernel refuses one argument past 128 KiB; on stdin, size does not matter."""
    folder = tmp_path / ("long-folder-name-" * 12)
    folder.mkdir()
    paths = tuple(str(folder / f"model-{i:04d}-{'x' * 120}.py") for i in range(400))
    for path in paths[::2]:
        Path(path).write_text(path)
    text = script(files=paths, peek=paths)
    assert len(text.encode()) > 128 * 1024
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run(["sh", "-c", text], capture_output=True)
    state = run_script(text, cwd=tmp_path)
    assert len(state["paths"]) == 400
    for i, path in enumerate(paths):
        if i % 2:
            assert state["paths"][path] is None
        else:
            assert state["paths"][path].sha256 == hashlib.sha256(path.encode()).hexdigest()
            assert state["peeks"][path] == path.encode()


def test_peek_stops_at_the_limit_and_read_does_not(tmp_path: Path) -> None:
    big = tmp_path / "weights.bin"
    big.write_bytes(b"\0" * (PEEK_LIMIT + 10))
    state = run_script(script(files=(str(big),), peek=(str(big),), read=()), cwd=tmp_path)
    assert str(big) not in state["peeks"]  # no diff read back for model weights
    assert state["paths"][str(big)].sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    state = run_script(script(read=(str(big),)), cwd=tmp_path)
    assert state["contents"][str(big)] == big.read_bytes()


def test_output_cut_short_is_a_fact_error_not_a_crash() -> None:
    from pyinfra.api.exceptions import FactProcessError

    with pytest.raises(FactProcessError, match="ended early"):
        ManagedState().process(["@@oceanid host", "amd64"])


# ---- through pyinfra itself


DEPLOY = """
from pathlib import Path

from operations import managed
from operations.managed import ManagedFile, DesiredState

root = Path({root!r})
desired = DesiredState(
    name="cli test",
    files=[
        ManagedFile(str(root / name), ("new " + name + "\\n").encode(), user={user!r},
                    group={group!r})
        for name in {names!r}
    ],
)
managed.files(name="Odd files", desired=desired)
"""


def _run(tmp_path: Path, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`argv` in `tmp_path`, with this checkout importable (as deploy files import it)."""
    return subprocess.run(
        argv,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _pyinfra(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(tmp_path, [str(PYINFRA), *args])


def test_pyinfra_local_reads_the_state_on_stdin_and_converges(tmp_path: Path) -> None:
    """`_stdin` through pyinfra's local connector: --dry --diff names every file, a real
    run writes them, and the next run reads them back as up to date."""
    import grp
    import pwd

    root = tmp_path / "etc"
    root.mkdir()
    names = ["plain.conf", "it's.conf", "$(touch PWNED).conf"]
    (root / names[0]).write_text("old plain.conf\n")
    deploy = tmp_path / "deploy.py"
    deploy.write_text(
        DEPLOY.format(
            root=str(root),
            names=names,
            user=pwd.getpwuid(os.getuid()).pw_name,
            group=grp.getgrgid(os.getgid()).gr_name,
        )
    )
    dry = _pyinfra(tmp_path, "@local", str(deploy), "--dry", "--diff")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    output = dry.stdout + dry.stderr
    assert "Traceback" not in output
    for name in names:
        assert f"{root / name}: " in output, output
    assert "- old plain.conf" in output and "+ new plain.conf" in output
    assert (root / names[0]).read_text() == "old plain.conf\n"

    real = _pyinfra(tmp_path, "-y", "@local", str(deploy))
    assert real.returncode == 0, real.stdout + real.stderr
    for name in names:
        assert (root / name).read_text() == f"new {name}\n"
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists()

    again = _pyinfra(tmp_path, "-y", "-v", "@local", str(deploy))
    assert again.returncode == 0
    assert "3 file(s) of cli test are up to date" in again.stdout + again.stderr


REFUSING = """
from pyinfra import host
from pyinfra.api import operation

from operations.failure import refuse


@operation()
def refusing():
    if host.name == "@local":
        yield from refuse("@local: no usable NVIDIA GPU (test refusal)")
    else:
        yield "true"


refusing(name="Refuses on one host")
"""


@pytest.mark.parametrize(
    "args",
    [
        ["-y", "@local"],
        ["@local", "--dry"],
        ["@local"],
        ["@local,@chroot//", "--dry"],  # a second host: pyinfra asks "continue?", no terminal
        ["-y", "@local,@chroot//"],
    ],
    ids=["yes", "dry", "no-yes", "two-hosts-dry", "two-hosts-yes"],
)
def test_a_refusal_fails_the_run_with_one_line(tmp_path: Path, args: list[str]) -> None:
    if "@chroot//" in args[-1] + args[0] and os.geteuid() != 0:
        pytest.fail("the two-host cases need root (chroot /)")
    deploy = tmp_path / "deploy.py"
    deploy.write_text(REFUSING)
    run = _pyinfra(tmp_path, *args, str(deploy))
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert output.count("no usable NVIDIA GPU (test refusal)") == 1, output
    assert "Traceback" not in output and "EOFError" not in output, output


UNREADABLE = """
from operations import managed
from operations.managed import ManagedFile, DesiredState

desired = DesiredState(name="cli test", files=[ManagedFile({path!r}, b"x\\n")])
managed.files(name="Files", desired=desired)
managed.sweep(name="Sweep", desired=desired)
"""


@pytest.mark.parametrize("args", [["@local", "--dry"], ["-y", "@local"]], ids=["dry", "yes"])
def test_a_state_that_cannot_be_read_is_one_line_naming_the_host(
    tmp_path: Path, args: list[str]
) -> None:
    """Every command fails (its folder is gone): no TypeError traceback, nothing written."""
    target = tmp_path / "x.conf"
    deploy = tmp_path / "deploy.py"
    deploy.write_text(UNREADABLE.format(path=str(target)))
    run = _pyinfra(tmp_path, "--data", "_chdir=/nonexistent", *args, str(deploy))
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    line = "@local: could not read the state of cli test"
    assert output.count(line) == 1, output
    assert "Traceback" not in output and "TypeError" not in output, output
    assert not target.exists()


def test_probe_output_comes_back_as_lines_whatever_it_holds(tmp_path: Path) -> None:
    """A probe's output is another command's, not ours: a line that looks like one of the
    script's section markers, binary bytes, no final newline, stderr and a failing exit
    status come back as that probe's lines and change no other section."""
    probes = (
        ("marker", "echo '@@oceanid end'; echo '@@oceanid path L2V0Yw=='; echo missing"),
        ("binary", r"printf 'a\000b\377\nlast'"),
        ("noisy", "echo out; echo err >&2; exit 3"),
        ("silent", "true"),
        ("it's odd $(touch PWNED)", "echo quoted; cat"),  # stdin is not the script
    )
    state = run_script(script(files=("/nonexistent",), probes=probes), tmp_path)
    assert state["probes"] == {
        "marker": ["@@oceanid end", "@@oceanid path L2V0Yw==", "missing"],
        "binary": ["a\x00b\ufffd", "last"],
        "noisy": ["out"],
        "silent": [],
        "it's odd $(touch PWNED)": ["quoted"],
    }
    assert state["paths"] == {"/nonexistent": None}  # the fake "/etc" section is not one
    assert not (tmp_path / "PWNED").exists()


# ---- several roles in one command


def test_roles_read_together_come_back_as_each_read_alone(tmp_path: Path) -> None:
    """`script_together` is each role's own script in one command: every role's state is the
    one its own script reads, whatever a probe prints (a line like the role separator too)."""
    (tmp_path / "a.conf").write_text("a\n")
    (tmp_path / "b.conf").write_text("b\n")
    roles = [
        {"files": (str(tmp_path / "a.conf"),), "units": ("nothing.service",)},
        {
            "files": (str(tmp_path / "b.conf"), str(tmp_path / "gone")),
            "read": (str(tmp_path / "b.conf"),),
            "probes": (("marker", "echo '@@oceanid role 7'; echo '@@oceanid end'"),),
        },
        {"packages": ("no-such-package-here",), "record": str(tmp_path / "none.paths")},
    ]
    done = subprocess.run(
        ["sh", "-s"], input=script_together(roles).encode(), capture_output=True, check=True
    )
    together = ManagedStates().process(done.stdout.decode().splitlines())
    alone = [run_script(script(**args), tmp_path) for args in roles]
    assert together == alone
    assert together[1]["probes"]["marker"] == ["@@oceanid role 7", "@@oceanid end"]
    assert together[1]["contents"][str(tmp_path / "b.conf")] == b"b\n"


def test_a_role_cut_short_fails_the_whole_read() -> None:
    output = ["@@oceanid role 0", "@@oceanid host", "amd64", "3.11", "@@oceanid end"]
    output += ["@@oceanid role 1", "@@oceanid host", "amd64"]
    with pytest.raises(FactProcessError):
        ManagedStates().process(output)


TOGETHER = """
from operations import managed
from operations.managed import ManagedFile, DesiredState

first = DesiredState(name="first", files=[ManagedFile({a!r}, b"a\\n")])
second = DesiredState(name="second", files=[ManagedFile({b!r}, b"b\\n")], units=["x.service"])
managed.read_together(first, second)
managed.files(name="First files", desired=first)
managed.files(name="Second files", desired=second)
managed.sweep(name="Second sweep", desired=second)
"""


def test_read_together_is_one_command_for_the_host(tmp_path: Path) -> None:
    """Through the real CLI: two roles read in one fact, counted by the commands pyinfra
    runs (`--debug` logs each one), and the roles then converge from that read."""
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    deploy = tmp_path / "deploy.py"
    deploy.write_text(TOGETHER.format(a=str(a), b=str(b)))
    first = _pyinfra(tmp_path, "-y", "@local", str(deploy))
    assert first.returncode == 0, first.stdout + first.stderr
    assert a.read_text() == "a\n" and b.read_text() == "b\n"
    again = _pyinfra(tmp_path, "-y", "--debug", "@local", str(deploy))
    output = again.stdout + again.stderr
    assert again.returncode == 0, output
    assert output.count("Getting fact: facts.managed.ManagedStates (") == 1, output
    assert "Getting fact: facts.managed.ManagedState (" not in output, output
    assert "No changes" in output


def test_roles_read_together_that_cannot_be_read_are_one_line(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy.py"
    deploy.write_text(TOGETHER.format(a=str(tmp_path / "a"), b=str(tmp_path / "b")))
    run = _pyinfra(tmp_path, "--data", "_chdir=/nonexistent", "-y", "@local", str(deploy))
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert output.count("@local: could not read the state of first, second") == 1, output
    assert "Traceback" not in output, output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _kinds_tree(root: Path) -> list[str]:
    """One path of every kind the fact tells apart, and odd owners and modes."""
    root.mkdir()
    (root / "file").write_text("x\n")
    (root / "empty").write_bytes(b"")
    (root / "setuid").write_text("#!/bin/sh\n")
    (root / "setuid").chmod(0o4755)
    (root / "dir").mkdir()
    (root / "sticky").mkdir()
    (root / "sticky").chmod(0o1777)
    (root / "link").symlink_to("file")
    (root / "dangling").symlink_to("nowhere")
    os.mkfifo(root / "fifo")
    (root / "nobody's").write_text("y\n")
    if os.geteuid() == 0:  # an owner and a group with no name: stat says UNKNOWN
        os.chown(root / "nobody's", 54321, 54321)
    paths = [str(root / name) for name in ("file", "empty", "setuid", "dir", "sticky", "link")]
    paths += [str(root / name) for name in ("dangling", "fifo", "nobody's", "missing")]
    paths.append("/etc/passwd")  # root-owned, as most managed files are
    return paths


def test_paths_in_one_python_process_read_as_stat_and_sha256sum_do(tmp_path: Path) -> None:
    """`_paths` (the host's python3, one process) prints, byte for byte, what `_path` (stat,
    sha256sum and cut for each path) prints, for every kind of path and odd names."""
    from facts.managed import _FUNCTIONS, _PATHS_PY, _call

    assert "'" not in _PATHS_PY  # it is one single-quoted shell word
    paths = _kinds_tree(tmp_path / "kinds")
    for name in ODD_NAMES:
        (tmp_path / "kinds" / name).write_text(f"{name}\n")
    paths += [str(tmp_path / "kinds" / name) for name in ODD_NAMES]
    calls = {
        "each": "\n".join(_call("_path", path) for path in paths),
        "together": " ".join(["_paths", *(_call("", path).strip() for path in paths)]),
    }
    out = {}
    for how, call in calls.items():
        text = "export LC_ALL=C\n" + _FUNCTIONS + call + "\n"
        out[how] = subprocess.run(
            ["sh", "-s"], input=text.encode(), capture_output=True, check=True
        ).stdout
    assert out["together"] == out["each"]
    assert out["each"].count(b"@@oceanid path ") == len(paths)
    assert b"|4755|" in out["each"] and b"|1777|" in out["each"] and b"fifo|" in out["each"]
    if os.geteuid() == 0:
        assert b"|UNKNOWN|UNKNOWN" in out["each"]


def test_paths_without_python3_are_read_by_the_shell(tmp_path: Path) -> None:
    """A host without python3 (PATH without it here) reads the same state through `_path`."""
    paths = _kinds_tree(tmp_path / "kinds")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("stat", "sha256sum", "cut"):
        (tools / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    text = script(files=tuple(paths))
    env = {"PATH": str(tools), "LC_ALL": "C"}
    found = {}
    for how, environment in (("python3", None), ("shell", env)):
        done = subprocess.run(
            ["/bin/sh", "-s"], input=text.encode(), capture_output=True, env=environment
        )
        found[how] = ManagedState().process(done.stdout.decode().splitlines())["paths"]
    assert found["shell"] == found["python3"]
    assert found["shell"][paths[0]].sha256 == hashlib.sha256(b"x\n").hexdigest()


# ---- the deploy lock, taken in the state read (the real script, run by sh)

HOLD = """
import subprocess, sys
text = open(sys.argv[1], "rb").read()
done = subprocess.run(["sh", "-s"], input=text, capture_output=True)
sys.stdout.write(done.stdout.decode())
sys.stdout.flush()
sys.stdin.readline()  # the connection stays open until the test lets go
"""


def _lock_script(lock: Path, take: bool = True, who: str = "ann@desk", run: str = "run-a") -> str:
    arguments = (str(lock), "1" if take else "0", who, "4242", run)
    return script(files=("/nonexistent",), lock=arguments)


class _Run:
    """Another run: a process that reads the state (taking the lock) and stays, as sshd's
    process for a pyinfra connection stays for the whole run; `leave` ends it (killed)."""

    def __init__(self, tmp_path: Path, text: str) -> None:
        path = tmp_path / "other-run.sh"
        path.write_text(text)
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        lines: list[str] = []
        for raw in self.process.stdout:
            lines.append(raw.decode().rstrip("\n"))
            if lines[-1] == "@@oceanid end":
                break
        self.state = ManagedState().process(lines)

    def leave(self) -> None:
        self.process.kill()
        self.process.wait()


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "run" / "deploy.lock"
    first = _Run(tmp_path, _lock_script(lock, who="ann@desk", run="run-a"))
    try:
        assert first.state["lock"]["status"] == "taken"
        written = lock.read_text()
        second = run_script(_lock_script(lock, who="bob@laptop", run="run-b"), tmp_path)
        assert second["lock"]["status"] == "held"
        holder = second["lock"]["holder"]
        assert (holder["who"], holder["pid"], holder["run"]) == ("ann@desk", "4242", "run-a")
        assert holder["holder"].split()[0] == str(first.process.pid)  # the connection's process
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", holder["since"])
        assert lock.read_text() == written  # the refused run left the lock as it was
        # a dry run only looks: it sees the holder and writes nothing
        dry = run_script(_lock_script(lock, take=False, who="bob@laptop"), tmp_path)
        assert dry["lock"]["status"] == "seen" and lock.read_text() == written
    finally:
        first.leave()
    # the first run is gone (killed: its connection closed): the next run takes the lock
    third = run_script(_lock_script(lock, who="bob@laptop", run="run-c"), tmp_path)
    assert third["lock"]["status"] == "took-stale"
    assert third["lock"]["holder"]["who"] == "ann@desk"  # whose lock it took over
    assert "who=bob@laptop" in lock.read_text() and "run=run-c" in lock.read_text()


def test_the_same_run_reading_again_keeps_its_lock(tmp_path: Path) -> None:
    """A deploy whose roles read their states one by one takes the lock once."""
    lock = tmp_path / "deploy.lock"
    assert run_script(_lock_script(lock), tmp_path)["lock"]["status"] == "taken"
    assert run_script(_lock_script(lock), tmp_path)["lock"]["status"] == "again"


def test_a_dry_run_leaves_nothing_behind(tmp_path: Path) -> None:
    lock = tmp_path / "run" / "deploy.lock"
    state = run_script(_lock_script(lock, take=False), tmp_path)
    assert state["lock"] == {"status": "free", "holder": {}}
    assert not (tmp_path / "run").exists()


def test_roles_read_together_take_the_lock_once(tmp_path: Path) -> None:
    lock = tmp_path / "deploy.lock"
    arguments = (str(lock), "1", "ann@desk", "1", "run-a")
    roles = [{"files": ("/a",), "lock": arguments}, {"files": ("/b",), "lock": arguments}]
    done = subprocess.run(
        ["sh", "-s"], input=script_together(roles).encode(), capture_output=True, check=True
    )
    states = ManagedStates().process(done.stdout.decode().splitlines())
    assert [state["lock"]["status"] for state in states] == ["taken", "taken"]


# ---- the lock through pyinfra itself, two runs at once on one host

SLOW = """
from operations import managed
from operations.managed import ManagedFile, DesiredState

desired = DesiredState(name="slow", files=[ManagedFile({path!r}, {content!r},
                    user={user!r}, group={group!r}, validate={validate!r})])
managed.files(name="Slow file", desired=desired)
"""


def _isolated(tmp_path: Path, shell: str) -> subprocess.CompletedProcess:
    """`shell` with a tmpfs of its own on /run/oceanid (where the lock is), so this test's
    runs never meet another pyinfra run on this machine."""
    setup = "mkdir -p /run/oceanid && mount -t tmpfs -o mode=0755 oceanid-test /run/oceanid && "
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", setup + shell]
    # the real lock path, in this private /run/oceanid (not the unit tests' own lock file)
    return _run(tmp_path, argv, {"PYINFRA": str(PYINFRA), LOCK_ENV: ""})


def test_two_pyinfra_runs_at_once_the_second_is_refused_naming_the_first(tmp_path: Path) -> None:
    """Real pyinfra on @local: the first run holds the lock while its file's check runs
    (a `validate` that waits), the second fails at once naming it and changes nothing; a
    dry run meanwhile says so and goes on; once the first has ended (no release command:
    its connection is gone) a third run takes the lock."""
    if os.geteuid() != 0:
        pytest.fail("needs root (a private mount of /run/oceanid)")
    import grp
    import pwd

    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    started = tmp_path / "started"
    slow, other = tmp_path / "slow.conf", tmp_path / "other.conf"
    waiting = f"touch {started} && sleep 8 && true {{path}}"
    (tmp_path / "slow.py").write_text(
        SLOW.format(path=str(slow), content=b"slow\n", user=user, group=group, validate=waiting)
    )
    (tmp_path / "other.py").write_text(
        SLOW.format(path=str(other), content=b"other\n", user=user, group=group, validate=None)
    )
    shell = (
        '"$PYINFRA" -y @local slow.py > first.log 2>&1 & first=$!; '
        f"while [ ! -e {started} ]; do sleep 0.1; done; "
        '"$PYINFRA" -y @local other.py > second.log 2>&1; echo "second=$?" > rc; '
        '"$PYINFRA" @local other.py --dry > dry.log 2>&1; echo "dry=$?" >> rc; '
        'wait $first; echo "first=$?" >> rc; '
        '"$PYINFRA" -y @local other.py > third.log 2>&1; echo "third=$?" >> rc; '
        "cat /run/oceanid/deploy.lock > lock.after"
    )
    done = _isolated(tmp_path, shell)
    assert done.returncode == 0, done.stdout + done.stderr
    codes = dict(line.split("=") for line in (tmp_path / "rc").read_text().split())
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in codes}
    assert codes == {"second": "1", "dry": "0", "first": "0", "third": "0"}, logs
    second = logs["second"]
    assert second.count("@local: another deploy is running here: ") == 1, second
    assert f"{user}@{socket.gethostname()} (pyinfra pid " in second, second
    assert "sudo rm -f /run/oceanid/deploy.lock" in second and "Traceback" not in second
    assert "another deploy is running here" in logs["dry"]
    assert slow.read_bytes() == b"slow\n" and other.read_bytes() == b"other\n"
    first_pid = re.search(r"\(pyinfra pid (\d+),", second)[1]
    after = (tmp_path / "lock.after").read_text()  # the third run's now, the first's is gone
    assert f"who={user}@" in after and f"pid={first_pid}\n" not in after


def test_a_dry_run_through_pyinfra_writes_no_lock(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (a private mount of /run/oceanid)")
    (tmp_path / "other.py").write_text(
        SLOW.format(path=str(tmp_path / "x"), content=b"x\n", user="root", group="root",
                    validate=None)
    )  # fmt: skip
    done = _isolated(tmp_path, '"$PYINFRA" @local other.py --dry && ls -A /run/oceanid')
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1:] != ["deploy.lock"]
    assert "deploy.lock" not in done.stdout


# ---- a restart a killed run owed, done by the next run (real pyinfra, real shell)

OWING = """
from operations import _desired, managed, services
from operations.managed import ManagedFile, DesiredState

_desired.OWED_DIR = services.OWED_DIR = {owed!r}  # this test's marker folder, not the machine's
config = ManagedFile({path!r}, {content!r}, user={user!r}, group={group!r})
desired = DesiredState(name="owing", files=[config], units=["demo.service"])
managed.files(name="Demo config", desired=desired)
services.unit(name="Demo", desired=desired, unit_name="demo.service", unit_file=None,
              inputs=[config.path])
"""

# systemd's client as far as this deploy uses it, for a unit that is enabled and running;
# `restart` fails while $FAIL exists (the run dies before the unit is restarted)
SYSTEMCTL = """#!/bin/sh
case "$1" in
  is-enabled) echo enabled ;;
  is-active) [ "$2" = --quiet ] || echo active ;;
  restart|start) [ -e "$FAIL" ] && exit 1; echo "$1 $2" >> "$LOG" ;;
  *) exit 1 ;;
esac
"""


def test_a_restart_a_run_did_not_get_to_is_done_by_the_next_run(tmp_path: Path) -> None:
    """The first run replaces the unit's config and dies before the restart; the config
    is in place from then on, yet the next run restarts the unit (the marker written with
    the file says it is owed), and the run after that restarts nothing."""
    import grp
    import pwd

    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "systemctl").write_text(SYSTEMCTL)
    (tools / "systemctl").chmod(0o755)
    (tools / "journalctl").symlink_to("/bin/true")
    owed, config, log, fail = (tmp_path / n for n in ("owed", "demo.conf", "restarts", "fail"))
    deploy = tmp_path / "deploy.py"
    deploy.write_text(
        OWING.format(
            owed=str(owed),
            path=str(config),
            content=b"new\n",
            user=pwd.getpwuid(os.getuid()).pw_name,
            group=grp.getgrgid(os.getgid()).gr_name,
        )
    )
    env = {"PATH": f"{tools}:{os.environ['PATH']}", "LOG": str(log), "FAIL": str(fail)}

    def converge() -> subprocess.CompletedProcess:
        return _run(tmp_path, [str(PYINFRA), "-y", "@local", str(deploy)], env)

    fail.touch()
    died = converge()
    assert died.returncode != 0, died.stdout + died.stderr
    assert config.read_bytes() == b"new\n" and not log.exists()
    assert (owed / "demo.service").exists()  # written with the file
    fail.unlink()
    owed_run = converge()
    assert owed_run.returncode == 0, owed_run.stdout + owed_run.stderr
    assert log.read_text() == "restart demo.service\n"
    assert not (owed / "demo.service").exists()  # cleared by the restart
    settled = converge()
    assert settled.returncode == 0, settled.stdout + settled.stderr
    assert log.read_text() == "restart demo.service\n"  # nothing owed, nothing restarted
    assert (
        "demo.service is enabled and active, and nothing it reads changed"
        in (settled.stdout + settled.stderr)
        or "No changes" in settled.stdout + settled.stderr
    )
