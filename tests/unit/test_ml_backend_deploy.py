"""The ML-backend adapter's deploy (issue 21 item 2): where it runs, what it reads, when it
restarts, and that its credentials stay in their 0600 file. The GPU role is planned on a real
pyinfra State with the role's one fact answered from values (tests/unit/test_docker_ops.py's
harness); no host is contacted."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml
from pyinfra.api import FileUploadCommand

from deploys import dns, gpu_host
from deploys.gpu_host import cloudflared_node, ml_backend
from facts.managed import Account, PathState
from oceanid.ingress import node_ingress
from oceanid.model import HostView
from oceanid.names import ml_hostname, ml_label
from oceanid.preflight import PreflightError, check
from oceanid.settings import GpuService
from tests.unit.test_docker_ops import _converged, _fresh, _plan_role
from tests.unit.test_gpu_rendering import make_plan  # noqa: F401 - a fixture

HOST_RUNTIME = {
    "require_gpu": False,
    "gpus": None,
    "service": {"kind": "triton", "runtime": "host"},
}


@pytest.fixture
def lab_plan(make_plan):  # noqa: F811 - the imported fixture
    """calypso as the lab runs it: Triton from the wheel on the CPU (runtime host)."""
    return make_plan(gpu=HOST_RUNTIME)


def _converged_host(plan) -> dict:
    """The role's fact on calypso after a first converge (host runtime: no image probe)."""
    state = _converged(plan, {})
    state["users"][ml_backend.USER] = Account(998, 998, "/nonexistent", "/usr/sbin/nologin", ())
    return state


def _password(plan) -> str:
    return plan.ml_backend_auth[1]


# ---- names: ml beside gpu, on the same tunnel, before the catch-all


def test_the_ml_name_beside_each_gpu_name() -> None:
    assert [ml_label(n) for n in ("gpu", "gpu2", "gpu17", "vision")] == [
        "ml",
        "ml2",
        "ml17",
        "ml-vision",
    ]
    assert ml_hostname("gpu3.boathou.se") == "ml3.boathou.se"


def test_the_node_tunnel_routes_the_ml_name_to_the_adapter_before_the_catch_all() -> None:
    rules = node_ingress("gpu2.boathou.se", GpuService(port=8000))
    assert rules[-2:] == [
        {"hostname": "ml2.boathou.se", "service": "http://localhost:9090"},
        {"service": "http_status:404"},
    ]
    http = GpuService(kind="http", image="ghcr.io/example/x:1", port=8080)
    assert all("ml" not in r.get("hostname", "") for r in node_ingress("gpu.boathou.se", http))


def test_dns_gives_the_ml_name_the_gpu_names_tunnel(lab_plan, data) -> None:
    from oceanid.cloudflare_dns import tunnel_target

    site = type("S", (), {"cluster_tunnel_id": None})()
    wanted, ingress = dns.records(lab_plan, site)
    target = tunnel_target(lab_plan.node_tunnel_id)
    assert {(r.name, r.content) for r in wanted} == {
        ("gpu.boathou.se", target),
        ("ml.boathou.se", target),
    }
    assert ingress[lab_plan.node_tunnel_id][-2]["hostname"] == "ml.boathou.se"
    assert "ml.boathou.se" in dns.site_names(lab_plan)


# ---- what is declared: files, modes, owner; no secret outside its file


def test_the_adapter_listens_on_loopback_and_its_secret_is_only_in_its_0600_file(lab_plan) -> None:
    role = gpu_host.declare(lab_plan)
    desired = role.desired
    config = json.loads(desired.file(ml_backend.CONFIG).content)
    assert (config["listen_host"], config["listen_port"]) == ("127.0.0.1", 9090)
    assert config["triton_url"] == "http://127.0.0.1:8000"
    assert config["credentials_file"] == ml_backend.CREDENTIALS
    credentials = desired.file(ml_backend.CREDENTIALS)
    assert (credentials.mode, credentials.user, credentials.secret) == (
        "0600",
        ml_backend.USER,
        True,
    )
    user, password = lab_plan.ml_backend_auth
    assert json.loads(credentials.content) == {"user": user, "password": password}
    for f in desired.files:
        if f.path != ml_backend.CREDENTIALS:
            assert password.encode() not in f.content, f.path
    unit = desired.file(ml_backend.UNIT_FILE).content.decode()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert shlex.split(exec_start.removeprefix("ExecStart=")) == [
        "/opt/oceanid-ml-backend/venv/bin/python",
        "/opt/oceanid-ml-backend/adapter.py",
        "--config",
        ml_backend.CONFIG,
    ]
    assert f"User={ml_backend.USER}" in unit and "User=root" not in unit
    assert desired.file(ml_backend.CODE).content == (ml_backend.HERE / "adapter.py").read_bytes()
    assert ml_backend.UNIT in desired.units and ml_backend.USER in desired.users
    assert role.ml_inputs == [
        ml_backend.CODE,
        ml_backend.CONFIG,
        ml_backend.CREDENTIALS,
        ml_backend.REQUIREMENTS,
    ]


def test_an_http_gpu_host_runs_no_adapter(make_plan) -> None:  # noqa: F811
    plan = make_plan(gpu={"service": {"kind": "http", "image": "ghcr.io/example/x:1"}})
    role = gpu_host.declare(plan)
    assert role.ml_inputs is None
    assert all(not f.path.startswith(ml_backend.ROOT) for f in role.desired.files)
    assert ml_backend.UNIT not in role.desired.units


def test_every_dependency_is_pinned_by_version_and_hash() -> None:
    text = ml_backend.requirements().decode()
    entries = re.split(r"\n(?=[a-z])", "\n".join(
        line for line in text.splitlines() if not line.startswith("#")
    ))  # fmt: skip
    assert len(entries) == len(ml_backend.pins()) >= 2
    for entry in entries:
        assert re.fullmatch(r"[a-z0-9-]+==\S+ \\\n    --hash=sha256:[0-9a-f]{64}\n?", entry), entry
    names = {pin.split("==")[0] for pin in ml_backend.pins()}
    assert {"tritonclient", "numpy", "geventhttpclient"} <= names  # the adapter's imports


# ---- the plan: first converge, second converge, what restarts it


def _secret_free(order, password: str) -> None:
    for _, commands in order:
        assert all(password not in command for command in commands)


def test_a_fresh_host_gets_the_account_before_its_file_then_the_venv_then_the_unit(
    lab_plan,
) -> None:
    order = _plan_role(lab_plan, _fresh(lab_plan))
    names = [name for name, _ in order]
    account, files = names.index("ML backend's service account"), names.index("GPU host files")
    venv, unit = names.index("ML backend's Python environment"), names.index("oceanid-ml-backend")
    assert account < files < venv < unit
    commands = dict(order)
    assert commands["ML backend's service account"] == [
        f"useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "
        f"{ml_backend.USER}"
    ]
    pip = [c for c in commands["ML backend's Python environment"] if "/bin/pip " in c]
    assert pip == [
        f"/opt/oceanid-ml-backend/venvs/{pip[0].split('/venvs/')[1].split('/')[0]}/bin/pip "
        "install -q --disable-pip-version-check --no-deps --require-hashes "
        f"-r {ml_backend.REQUIREMENTS}"
    ]
    started = commands["oceanid-ml-backend"]
    assert started[:2] == ["systemctl daemon-reload", f"systemctl enable {ml_backend.UNIT}"]
    # a new venv: (re)started on it (`restart` starts a stopped unit)
    assert started[2].startswith(f"timeout 150 systemctl restart {ml_backend.UNIT}")
    assert "/health" in started[2] and "= 401" in started[2]  # up, and refusing without auth
    _secret_free(order, _password(lab_plan))


def test_a_second_converge_changes_nothing(lab_plan) -> None:
    order = _plan_role(lab_plan, _converged_host(lab_plan))
    assert [(name, commands) for name, commands in order if commands] == []


@pytest.mark.parametrize(
    "changed, rebuilt",
    [
        (ml_backend.CREDENTIALS, False),  # a rotated password
        (ml_backend.CODE, False),
        (ml_backend.CONFIG, False),
        (ml_backend.REQUIREMENTS, True),  # new pins: a new venv
    ],
)
def test_what_restarts_the_adapter_and_nothing_else(lab_plan, changed, rebuilt) -> None:
    state = _converged_host(lab_plan)
    state["paths"][changed] = PathState("file", "0644", "root", "root", "0" * 64)
    if rebuilt:
        state["contents"][ml_backend.STAMP] = b"older pins\n"
    order = dict((name, c) for name, c in _plan_role(lab_plan, state) if c)
    assert set(order) == {"GPU host files", "oceanid-ml-backend"} | (
        {"ML backend's Python environment", "Older ML backend environments"} if rebuilt else set()
    )  # Triton and the tunnel connector keep running
    assert any(f"systemctl restart {ml_backend.UNIT}" in c for c in order["oceanid-ml-backend"])
    uploads = [c for c in order["GPU host files"] if "upload" in c.lower() or "mv" in c]
    assert uploads  # the changed file replaced
    _secret_free(order.items(), _password(lab_plan))


def test_the_unchanged_adapter_is_not_restarted_by_a_triton_change(lab_plan) -> None:
    state = _converged_host(lab_plan)
    model_file = next(p for p in state["paths"] if p.endswith("/config.pbtxt"))
    state["paths"][model_file] = PathState("file", "0644", "root", "root", "0" * 64)
    order = dict((name, c) for name, c in _plan_role(lab_plan, state) if c)
    assert "Load changed models" in order  # the model is loaded again, without restarts
    assert "oceanid-ml-backend" not in order


def test_the_credentials_file_is_uploaded_never_echoed(lab_plan) -> None:
    """The password reaches the host in an upload (its staging is private), never in a
    command's text: `ps` on the host, or pyinfra's -v output, never shows it."""
    import io

    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.state import StateStage
    from pyinfra.context import ctx_host, ctx_state

    from facts.managed import ManagedState
    from operations import _desired

    inventory = Inventory((["calypso"], {}), gpu_hosts=(["calypso"], {}))
    _desired.STATE_CACHE.clear()
    state = State(inventory, Config())
    state.current_deploy_filename = __file__
    state.current_op_file_number = 0
    state.set_stage(StateStage.Prepare)
    host = inventory.get_host("calypso")
    fact = _fresh(lab_plan)
    host.get_fact = lambda cls, *args, **kwargs: {ManagedState: fact}[cls]
    state.activate_host(host)
    with ctx_state.use(state), ctx_host.use(host):
        gpu_host.deploy(lab_plan, gpu_host.declare(lab_plan))
    password = _password(lab_plan)
    uploaded = []
    for op_hash in state.get_op_order():
        meta = state.get_op_meta(op_hash)
        assert all(password not in str(arg) for arg in meta.args)
        with ctx_state.use(state), ctx_host.use(host):
            host.current_op_hash = op_hash
            for command in state.ops[host][op_hash].command_generator():
                if isinstance(command, FileUploadCommand) and isinstance(command.src, io.BytesIO):
                    if password in command.src.getvalue().decode(errors="replace"):
                        uploaded.append(command.dest)
                else:
                    assert password not in str(command)
    assert len(uploaded) == 1


# ---- preflight: the keys a `triton` host needs, checked before any host is touched


def _check(data, tmp_path, secrets, gpu=None):
    data["secret_sources"] = ["file"]
    data["hosts"]["calypso"]["gpu"].update(gpu or HOST_RUNTIME)
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(secrets))
    path.chmod(0o600)
    view = HostView("calypso", frozenset({"gpu_hosts"}), data)
    return check([view], environ={"SECRETS_FILE": str(path)})


def test_a_triton_host_needs_the_ml_backend_keys(data, tmp_path, lab_secrets) -> None:
    del lab_secrets["mlBackendPassword"]
    with pytest.raises(PreflightError) as err:
        _check(data, tmp_path, lab_secrets)
    assert any(p.startswith("mlBackendPassword: missing") for p in err.value.problems)


def test_an_http_host_does_not(data, tmp_path, lab_secrets) -> None:
    del lab_secrets["mlBackendPassword"], lab_secrets["mlBackendUser"]
    http = {"service": {"kind": "http", "image": "ghcr.io/example/x:1"}}
    site = _check(data, tmp_path, lab_secrets, http)
    assert site.hosts["calypso"].ml_backend_auth is None


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("mlBackendUser", "label:studio", "without ':'"),
        ("mlBackendPassword", "tiny-pw", "shorter than 16"),
    ],
)
def test_bad_credentials_are_refused_without_echoing_them(
    data, tmp_path, lab_secrets, key, value, words
) -> None:
    lab_secrets[key] = value
    with pytest.raises(PreflightError) as err:
        _check(data, tmp_path, lab_secrets)
    (line,) = [p for p in err.value.problems if p.startswith(f"{key}:")]
    assert words in line and value not in line


def test_the_plan_keeps_the_password_out_of_its_repr(lab_plan) -> None:
    assert _password(lab_plan) not in repr(lab_plan)


def test_the_tunnel_connector_config_names_the_adapter(lab_plan) -> None:
    ingress = cloudflared_node.config(lab_plan)["ingress"]
    assert {"hostname": "ml.boathou.se", "service": "http://localhost:9090"} in ingress


def test_the_connector_routes_the_ml_name_to_the_adapter_and_nothing_else(lab_plan, tmp_path):
    """Through the cloudflared stand-in's `ingress rule` (cloudflared's matching): every path of
    the ml name reaches 127.0.0.1:9090; the adapter's paths on the GPU name get the 404."""
    from tests.unit.test_cloudflared_node import _rule_for, _write_config

    config = _write_config(lab_plan, tmp_path)
    for path in ("/health", "/setup", "/predict", "/webhook"):
        assert _rule_for(config, f"https://ml.boathou.se{path}") == "http://localhost:9090"
        assert _rule_for(config, f"https://gpu.boathou.se{path}") == "http_status:404"
    assert _rule_for(config, "https://ml2.boathou.se/health") == "http_status:404"
