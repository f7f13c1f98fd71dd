"""
Docker's operations (operations/docker.py) and the Docker role's decisions
(deploys/gpu_host/docker.py), against fact values as the role's one fact returns them.

Docker cannot run here: an image's download, check, load and verification are run for real
against a fake `docker` (it records its arguments and answers `image inspect` from what was
"loaded") and a local HTTP server holding the archive, stopping at the first failed command
as pyinfra does. The lab runs the same commands against Debian's docker.io.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyinfra.api import Config, FileUploadCommand, Inventory, State
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state
from pyinfra_testing.util import FakeState

from deploys import gpu_host
from deploys.gpu_host import docker, ml_backend, triton
from facts.managed import Account, ManagedState, PathState, empty_state, script
from operations import _desired
from operations import docker as docker_ops
from operations.managed import DesiredState, ManagedFile
from tests.unit.test_gpu_rendering import make_plan  # noqa: F401 - a fixture
from tests.unit.test_operations import (
    _fake_host_with,
    assert_refused,
    file_state,
    managed_state,
    run_op,
    shell_syntax_errors,
)

IMAGE_ID = "sha256:" + "b3" * 32
DIGEST = "sha256:" + "d1" * 32
TAGGED = "nvcr.io/nvidia/tritonserver:25.08-py3"
BY_DIGEST = f"{TAGGED}@{DIGEST}"


@pytest.fixture(autouse=True)
def _fresh_state_cache():
    _desired.STATE_CACHE.clear()
    yield
    _desired.STATE_CACHE.clear()


def _state(probes: dict[str, list[str]] | None = None, **kwargs) -> dict:
    return {**managed_state(**kwargs), "probes": probes or {}}


def _inspected(image: str, line: str) -> dict[str, list[str]]:
    """The probe's output for `image`: `<ID> <repo digests as JSON>`, or `-` when not on disk."""
    return {f"docker image {image}": [line]}


# ---- the probes: read in the role's one fact


def test_the_probes_run_in_the_roles_one_read(tmp_path) -> None:
    """The role's fact script, run for real: what it reads of Docker comes back as the
    operations read it (a fake docker has the image loaded; a fake dockerd is installed)."""
    desired = DesiredState(name="gpu host calypso")
    docker_ops.probe_image(desired, IMAGE_ID)
    docker_ops.probe_image(desired, TAGGED)  # not on disk
    docker_ops.probe_engine(desired)
    env = _fake_docker(tmp_path, holds="")
    (tmp_path / "loaded").write_text(f'{IMAGE_ID} ["nvcr.io/nvidia/tritonserver@{DIGEST}"]\n')
    (tmp_path / "bin" / "dockerd").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "dockerd").chmod(0o755)
    with ctx_state.use(FakeState()):
        stdin = script(**desired.fact_args(), **desired.script_args())
    done = subprocess.run(["sh"], input=stdin, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    facts = {ManagedState: ManagedState().process(done.stdout.splitlines())}
    with ctx_state.use(FakeState()), ctx_host.use(_fake_host_with(facts)):
        assert docker_ops.on_disk(desired, IMAGE_ID) == IMAGE_ID
        assert docker_ops.on_disk(desired, TAGGED) is None
        assert docker_ops.engine(desired) == f"{tmp_path}/bin/dockerd"


@pytest.mark.parametrize(
    ("line", "found"),
    [(["-"], None), ([], None), (["/usr/bin/dockerd"], "/usr/bin/dockerd")],
)
def test_an_existing_docker_is_found_by_its_daemon(line, found) -> None:
    desired = DesiredState(name="gpu host calypso")
    docker_ops.probe_engine(desired)
    facts = {ManagedState: _state({docker_ops.ENGINE_PROBE: line})}
    with ctx_state.use(FakeState()), ctx_host.use(_fake_host_with(facts)):
        assert docker_ops.engine(desired) == found


# ---- image: present before the unit starts, never pulled by it


def _image_run(image: str, line: str, archive: tuple[str, str] | None = None, **kwargs):
    desired = DesiredState(name="gpu host calypso")
    docker_ops.probe_image(desired, image)
    url, sha256 = archive or (None, None)
    return run_op(
        docker_ops.image,
        desired,
        image,
        archive_url=url,
        archive_sha256=sha256,
        setting="triton_image",
        archive_setting="triton_image_archive",
        facts={ManagedState: _state(_inspected(image, line))},
        **kwargs,
    )


@pytest.mark.parametrize(
    ("image", "line"),
    [
        (IMAGE_ID, f"{IMAGE_ID} []"),  # loaded from an archive: no repo digest
        (IMAGE_ID, f"{IMAGE_ID} null"),
        (TAGGED, f'{IMAGE_ID} ["nvcr.io/nvidia/tritonserver@{DIGEST}"]'),
        (
            BY_DIGEST,
            f'{IMAGE_ID} ["ghcr.io/x/y@sha256:{"0" * 64}", "nvcr.io/nvidia/tritonserver@{DIGEST}"]',
        ),
    ],
)
def test_an_image_on_disk_as_pinned_is_a_noop(image, line) -> None:
    run = _image_run(image, line)
    assert run.commands == []
    assert run.noop == f"image {image} is on disk ({IMAGE_ID[:19]})"


PULL = f"timeout -k {docker_ops.PULL_KILL_AFTER} {docker_ops.PULL_WAIT} docker pull"


def pulled(image: str) -> str:
    """The pull, in the background of a wait that says what it waits for (test_progress)."""
    from tests.unit.test_progress import watched

    return watched(f"{PULL} {image}", f"docker pull {image}", docker_ops.PULL_WAIT)


def test_an_image_without_an_archive_is_pulled_then_checked() -> None:
    run = _image_run(BY_DIGEST, "-")
    assert run.strings[0].startswith(f"{pulled(BY_DIGEST)} ||")
    assert f"grep -qF @{DIGEST} ||" in run.strings[1]
    assert shell_syntax_errors(run.commands) == []


def test_an_image_on_disk_under_another_digest_is_pulled() -> None:
    """The tag is there, but not the pinned build: the digest decides."""
    other = "sha256:" + "e2" * 32
    run = _image_run(BY_DIGEST, f'{IMAGE_ID} ["nvcr.io/nvidia/tritonserver@{other}"]')
    assert run.strings[0].startswith(f"{pulled(BY_DIGEST)} ||")


def test_an_image_id_without_archive_is_refused_in_one_line(caplog) -> None:
    caplog.set_level(logging.ERROR)
    run = _image_run(IMAGE_ID, "-")
    message = assert_refused(run, caplog, "cannot be pulled")
    assert "triton_image is an image ID" in message and "set triton_image_archive" in message


def test_an_archive_for_an_image_pinned_by_digest_is_refused(caplog) -> None:
    """`docker load` records no repo digest: the unit's `docker run` would pull it."""
    caplog.set_level(logging.ERROR)
    run = _image_run(BY_DIGEST, "-", ("https://mirror.example/triton.tar", "a" * 64))
    message = assert_refused(run, caplog, "pins a registry digest")
    assert "with triton_image_archive, pin the image by its ID (sha256:…) or by its tag" in message


# -- the archive path, run for real against a fake docker


FAKE_DOCKER = r"""#!/bin/sh
echo "$*" >> "$LOG"
case "$1 $2" in
  "load -q") cat "$4" > /dev/null && cat "$ARCHIVE_HOLDS" >> "$LOADED"; exit 0;;
  "image inspect")
    for ref; do :; done
    while read -r id digests; do
      [ "$id" = "$ref" ] && { echo "$id $digests"; exit 0; }
    done < "$LOADED"
    exit 1;;
esac
exit 1
"""


class _Files(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def archive_server() -> Iterator[type[_Files]]:
    handler = type("Handler", (_Files,), {"body": b"a docker save archive\n"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/triton.tar"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler
    server.shutdown()


def _fake_docker(tmp_path: Path, holds: str) -> dict[str, str]:
    """The environment that puts the fake docker first on PATH; an archive it loads holds
    the images listed in `holds` (`<ID> <repo digests as JSON>` lines)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    (tmp_path / "holds").write_text(holds)
    (tmp_path / "loaded").touch()
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(tmp_path / "docker.log"),
        "ARCHIVE_HOLDS": str(tmp_path / "holds"),
        "LOADED": str(tmp_path / "loaded"),
    }


def _run_with_fake_docker(tmp_path: Path, commands: list[str], holds: str):
    env = _fake_docker(tmp_path, holds)
    for command in commands:
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return done
    return None


SLOW_PULL = r"""#!/bin/sh
echo "$*" >> "$LOG"
case "$1" in
  pull) [ "$PULL_RC" = hang ] && exec sleep 30
        echo "Error response from daemon: manifest unknown" >&2; exit "$PULL_RC";;
esac
exit 1
"""


@pytest.mark.parametrize(
    ("rc", "late"), [("hang", True), ("1", False)], ids=["registry-hangs", "docker-fails"]
)
def test_a_pull_that_hangs_is_ended_and_said_to_be_late(tmp_path, monkeypatch, rc, late) -> None:
    """Run for real, the limit shortened: a registry that stops answering fails the run in
    words naming the limit and the archive alternative; docker's own failure stays its own."""
    monkeypatch.setattr(docker_ops, "PULL_WAIT", 1)
    monkeypatch.setattr(docker_ops, "PULL_KILL_AFTER", 1)
    run = _image_run(TAGGED, "-")
    env = _fake_docker(tmp_path, holds="")
    (tmp_path / "bin" / "docker").write_text(SLOW_PULL)
    done = subprocess.run(
        ["sh", "-c", run.strings[0]], env={**env, "PULL_RC": rc}, capture_output=True, text=True,
        timeout=20,
    )  # fmt: skip
    assert (tmp_path / "docker.log").read_text() == f"pull {TAGGED}\n"
    if late:
        assert done.returncode == 124
        assert done.stderr.strip() == (
            f"docker pull {TAGGED} did not finish in 1 s (the limit set in "
            "operations/docker.py, PULL_WAIT): check that the host reaches the registry, or set "
            "triton_image_archive to a `docker save` archive of the image"
        )
    else:
        assert done.returncode == 1
        assert done.stderr.strip() == "Error response from daemon: manifest unknown"


def _archive_run(tmp_path, monkeypatch, server, sha256: str | None = None):
    monkeypatch.setattr(docker_ops, "IMAGE_DOWNLOADS", str(tmp_path / "images"))
    pinned = sha256 or hashlib.sha256(server.body).hexdigest()
    return _image_run(IMAGE_ID, "-", (server.url, pinned)), pinned


def test_an_archive_is_verified_loaded_removed_and_must_hold_the_image(
    tmp_path, monkeypatch, archive_server
) -> None:
    run, pinned = _archive_run(tmp_path, monkeypatch, archive_server)
    assert shell_syntax_errors(run.commands) == []
    assert _run_with_fake_docker(tmp_path, run.strings, f"{IMAGE_ID} []\n") is None
    assert list((tmp_path / "images").iterdir()) == []  # the archive is not kept
    assert (tmp_path / "images").stat().st_mode & 0o777 == 0o700
    log = (tmp_path / "docker.log").read_text().splitlines()
    assert log[0] == f"load -q -i {tmp_path}/images/{pinned}.tar"
    assert log[1].startswith("image inspect") and log[1].endswith(IMAGE_ID)


def test_an_archive_without_the_image_fails_naming_both_settings(
    tmp_path, monkeypatch, archive_server
) -> None:
    run, _ = _archive_run(tmp_path, monkeypatch, archive_server)
    other = "sha256:" + "0f" * 32
    failed = _run_with_fake_docker(tmp_path, run.strings, f"{other} []\n")
    assert failed is not None
    assert failed.stderr.strip() == (
        f"triton_image_archive ({archive_server.url}) does not hold image {IMAGE_ID} "
        "(triton_image): point it at a `docker save` archive of that image, or fix the reference"
    )
    assert list((tmp_path / "images").iterdir()) == []


def test_an_archive_with_another_sha256_is_never_loaded(
    tmp_path, monkeypatch, archive_server
) -> None:
    run, _ = _archive_run(tmp_path, monkeypatch, archive_server, sha256="0" * 64)
    failed = _run_with_fake_docker(tmp_path, run.strings, f"{IMAGE_ID} []\n")
    assert failed is not None and "SHA-256 mismatch" in failed.stderr
    assert "nothing was loaded" in failed.stderr and "binary" not in failed.stderr
    assert not (tmp_path / "docker.log").exists()  # docker was never called
    assert list((tmp_path / "images").iterdir()) == []


def test_the_archive_download_is_named_in_a_dry_run(tmp_path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(docker_ops, "IMAGE_DOWNLOADS", str(tmp_path / "images"))
    _image_run(IMAGE_ID, "-", ("https://mirror.example/triton.tar", "a" * 64), diff=True)
    assert any(
        f"image {IMAGE_ID}: loaded from https://mirror.example/triton.tar" in r.getMessage()
        for r in caplog.records
    )


# ---- daemon.json: merged, never overwritten whole

DAEMON = docker.DOCKER_DAEMON
OPERATOR = {
    "data-root": "/srv/docker",
    "log-driver": "journald",
    "registry-mirrors": ["https://mirror.example"],
    "runtimes": {"crun": {"path": "/usr/bin/crun"}},
}


def _daemon_run(current: bytes | None, record: bytes | None = None):
    _desired.STATE_CACHE.clear()  # each call is a run of its own
    desired = DesiredState(name="gpu host calypso", read=[DAEMON])
    paths = {} if current is None else {DAEMON: file_state(ManagedFile(DAEMON, current))}
    state = {**_state(paths=paths, contents={DAEMON: current}), "record": record}
    run = run_op(
        docker_ops.daemon_json, desired, DAEMON, docker.RUNTIMES, facts={ManagedState: state}
    )
    uploads = [c.src.getvalue() for c in run.raw if isinstance(c, FileUploadCommand)]
    return run, uploads


def test_daemon_json_keeps_every_operator_key_and_gains_the_nvidia_runtime() -> None:
    run, [written] = _daemon_run(json.dumps(OPERATOR).encode())
    merged = json.loads(written)
    assert merged == {
        **OPERATOR,
        "runtimes": {"crun": {"path": "/usr/bin/crun"}, **docker.RUNTIMES},
    }
    assert any(f"mv -f {DAEMON}.oceanid-new {DAEMON} )" in text for text in run.strings)
    assert shell_syntax_errors(run.commands) == []
    again, uploads = _daemon_run(written)  # the second converge
    assert (again.commands, uploads) == ([], [])
    assert again.noop == f"{DAEMON} has the nvidia runtime"


def test_no_daemon_json_is_created_with_only_the_runtime() -> None:
    _, [written] = _daemon_run(None)
    assert json.loads(written) == {"runtimes": docker.RUNTIMES}


def test_a_daemon_json_that_already_has_the_runtime_is_left_as_the_operator_wrote_it() -> None:
    text = b'{"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},\n "x": 1}'
    run, uploads = _daemon_run(text)
    assert (run.commands, uploads) == ([], [])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"[1, 2]", "it is not a JSON object"),
        (b'{"data-root": "/srv",}', "it is not valid JSON"),
        (b'{"runtimes": []}', 'its "runtimes" is not a JSON object'),
    ],
)
def test_a_daemon_json_that_cannot_be_merged_is_refused_not_replaced(caplog, text, why) -> None:
    caplog.set_level(logging.ERROR)
    run, uploads = _daemon_run(text)
    message = assert_refused(run, caplog, DAEMON)
    assert message.startswith(f"calypso: {DAEMON}: {why}")
    assert message.endswith("make it a JSON object (or remove it), the deploy merges the nvidia "
                            "runtime into it")  # fmt: skip
    assert uploads == []


def test_a_daemon_json_an_older_deploy_wrote_whole_is_written_again_after_the_sweep() -> None:
    """The role's record lists it (it was a managed file); sweep removes it this run."""
    current = json.dumps({"runtimes": docker.RUNTIMES}, indent=2).encode()
    record = json.dumps({"files": [DAEMON], "directories": []}).encode()
    _, [written] = _daemon_run(current, record)
    assert json.loads(written) == {"runtimes": docker.RUNTIMES}


# ---- the role: Docker used as found; restarted exactly when the toolkit or daemon.json change


def _restart(plan, packages: dict, current: bytes | None) -> bool:
    desired = DesiredState(name="gpu host calypso")
    docker.add_to(desired, plan)
    state = _state(packages=packages, contents={DAEMON: current})
    with ctx_state.use(FakeState()), ctx_host.use(_fake_host_with({ManagedState: state})):
        return docker.restart_needed(desired, plan)


MERGED = json.dumps({"runtimes": docker.RUNTIMES}).encode()


@pytest.mark.parametrize(
    ("toolkit", "current", "restart"),
    [
        (None, MERGED, True),  # installed in this run: Docker registers its runtime at start
        (None, None, True),  # a fresh host: Docker was started by its own install, before both
        ("1.17.8-1", None, True),
        ("1.17.8-1", json.dumps(OPERATOR).encode(), True),
        ("1.17.8-1", MERGED, False),
    ],
)
def test_docker_restarts_exactly_when_the_toolkit_or_daemon_json_change(
    make_plan,  # noqa: F811 - the imported fixture
    toolkit,
    current,
    restart,
) -> None:
    plan = make_plan()
    assert _restart(plan, {"nvidia-container-toolkit": toolkit}, current) is restart


def test_without_a_gpu_docker_gets_no_nvidia_runtime_nor_restart(make_plan) -> None:  # noqa: F811
    plan = make_plan(gpu={"require_gpu": False, "gpus": None})
    desired = DesiredState(name="gpu host calypso")
    docker.add_to(desired, plan)
    assert desired.packages == [] and desired.read == []
    assert desired.probes == {docker_ops.ENGINE_PROBE: "command -v dockerd || echo -"}
    assert _restart(plan, {}, None) is False


def test_with_a_gpu_the_role_reads_daemon_json_and_the_toolkit(make_plan) -> None:  # noqa: F811
    desired = DesiredState(name="gpu host calypso")
    docker.add_to(desired, make_plan())
    assert desired.packages == docker.CONTAINER_PACKAGES
    assert DAEMON in desired.read
    assert DAEMON not in [f.path for f in desired.files]  # merged by its operation, not replaced


# ---- the whole GPU host role, planned as a run plans it: order, and a second converge


def _plan_role(plan, state_value: dict) -> list[tuple[str, list[str]]]:
    """Queue deploys/gpu_host for calypso on a real pyinfra State; [(op name, commands)]."""
    inventory = Inventory((["calypso"], {}), gpu_hosts=(["calypso"], {}))
    _desired.STATE_CACHE.clear()  # a pyinfra run of its own
    state = State(inventory, Config())
    state.current_deploy_filename = __file__
    state.current_op_file_number = 0
    state.set_stage(StateStage.Prepare)
    host = inventory.get_host("calypso")
    host.get_fact = lambda cls, *args, **kwargs: {ManagedState: state_value}[cls]
    state.activate_host(host)
    with ctx_state.use(state), ctx_host.use(host):
        gpu_host.deploy(plan, gpu_host.declare(plan))
    assert state.failed_hosts == set()
    order = []
    for op_hash in state.get_op_order():
        with ctx_state.use(state), ctx_host.use(host):
            host.current_op_hash = op_hash
            commands = list(state.ops[host][op_hash].command_generator())
        name = sorted(state.get_op_meta(op_hash).names)[0]
        order.append((name, [str(c) for c in commands]))
    return order


def _fresh(plan, engine: str = "-") -> dict:
    image = plan.settings.triton_image
    probes = {docker_ops.ENGINE_PROBE: [engine], f"docker image {image}": ["-"]}
    return {**empty_state(), "arch": "amd64", "probes": probes}


def test_a_fresh_gpu_host_gets_docker_the_toolkit_a_restart_then_the_image_then_triton(
    make_plan,  # noqa: F811 - the imported fixture
) -> None:
    plan = make_plan()
    order = _plan_role(plan, _fresh(plan))
    names = [name for name, _ in order]
    steps = [
        "Docker engine package",
        "NVIDIA container toolkit repository",
        "NVIDIA container toolkit",
        "Docker's NVIDIA runtime",
        "Docker",
        "Triton's image",
        "Triton's Python environment",
        "tritonserver",
        "Triton answers ready",
    ]
    assert [name for name in names if name in steps] == steps
    commands = dict(order)
    assert commands["Docker engine package"][-1].endswith("--no-install-recommends docker.io")
    assert commands["Docker"][0] == "systemctl daemon-reload"
    assert commands["Docker"][-1].startswith("timeout 150 systemctl restart docker.service")
    image = plan.settings.triton_image
    assert commands["Triton's image"][0].startswith(f"{pulled(image)} ||")
    assert any(text.startswith("docker run --rm --network host -v /opt/triton/venvs/")
               and f":/opt/oceanid/env {image} sh -c" in text
               for text in commands["Triton's Python environment"])  # fmt: skip


def test_an_existing_docker_is_used_not_replaced(make_plan) -> None:  # noqa: F811
    plan = make_plan()
    names = [name for name, _ in _plan_role(plan, _fresh(plan, engine="/usr/bin/dockerd"))]
    assert "Docker engine package" not in names
    assert "Docker" in names


def _converged(plan, archive_state: dict) -> dict:
    """The role's fact on the lab's Docker host after a first converge."""
    role = gpu_host.declare(plan).desired
    paths: dict = {
        d.path: PathState("directory", d.mode, d.user, d.group) for d in role.directories
    }
    for f in role.files:
        paths[f.path] = PathState("file", f.mode.zfill(4), f.user, f.group, f.sha256)
    for b in role.binaries:
        paths[b.path] = PathState("file", b.mode.zfill(4), "root", "root", b.sha256["amd64"])
    return {
        **empty_state(),
        "arch": "amd64",
        "paths": paths,
        "packages": dict.fromkeys(role.packages, "1"),
        "users": {
            "triton": Account(999, 999, "/nonexistent", "/usr/sbin/nologin", ("triton",)),
            ml_backend.USER: Account(998, 998, "/nonexistent", "/usr/sbin/nologin", ()),
        },
        "contents": {triton.STAMP: triton.stamp(plan), ml_backend.STAMP: ml_backend.stamp()},
        "record": (json.dumps(role.declared(), indent=1, sort_keys=True) + "\n").encode(),
        "units": dict.fromkeys(role.units, {"enabled": "enabled", "active": "active"}),
        "probes": archive_state,
    }


def test_the_labs_docker_host_converges_then_a_second_run_changes_nothing(make_plan, data) -> None:  # noqa: F811
    """The lab's data: container runtime without a GPU, the image by ID from an archive,
    memlock as the lab's machine allows."""
    data["triton_image"] = IMAGE_ID
    data["triton_image_archive"] = {"url": "http://10.77.0.1/triton.tar", "sha256": "a" * 64}
    plan = make_plan(
        gpu={"require_gpu": False, "gpus": None, "service": {"kind": "triton", "memlock": 8388608}}
    )
    first = dict(_plan_role(plan, _fresh(plan)))
    assert "NVIDIA container toolkit" not in first and "Docker's NVIDIA runtime" not in first
    assert first["Triton's image"][-2].startswith("docker load -q -i /var/tmp/oceanid-images/")
    probes = {
        docker_ops.ENGINE_PROBE: ["/usr/bin/dockerd"],
        f"docker image {IMAGE_ID}": [f"{IMAGE_ID} "],
    }
    second = _plan_role(plan, _converged(plan, probes))
    assert [(name, commands) for name, commands in second if commands] == []
