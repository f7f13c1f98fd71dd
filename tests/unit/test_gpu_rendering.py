"""
What the GPU host role renders, from a plan built the way the deploy builds it.

Each plan comes from `oceanid.preflight.check` over `group_data/all.py` and a secrets file, so
the settings and the tunnel credential are validated and parsed exactly as in a run; the tests
then read the files, units and manifest entries that `deploys/gpu_host/` declares.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shlex
import shutil
import textwrap

import pytest
import yaml

from deploys.gpu_host import cloudflared_node, docker, http_service, triton
from oceanid import triton_repo
from oceanid.model import HostPlan, HostView
from oceanid.preflight import PreflightError, check
from operations import docker as docker_ops
from operations import triton as triton_ops
from operations.managed import DesiredState

TUNNEL_SECRET = base64.b64encode(b"tunnel secret: 32 bytes exactly!").decode()
HF_TOKEN = "hf_unit-test-token-that-must-stay-in-the-env-file"


def _token(account: str, tunnel: str) -> str:
    payload = json.dumps({"a": account, "t": tunnel, "s": TUNNEL_SECRET}, separators=(",", ":"))
    return base64.b64encode(payload.encode()).decode()


def _credentials_json(account: str, tunnel: str) -> str:
    return json.dumps({"AccountTag": account, "TunnelSecret": TUNNEL_SECRET, "TunnelID": tunnel})


def _credentials_base64_wrapped(account: str, tunnel: str) -> str:
    encoded = base64.b64encode(_credentials_json(account, tunnel).encode()).decode()
    return "\n".join(textwrap.wrap(encoded, 76)) + "\n"


SHAPES = {
    "token": _token,
    "credentials-base64": _credentials_base64_wrapped,
    "credentials-json": _credentials_json,
}


@pytest.fixture
def make_plan(data, lab_secrets, tmp_path):
    """A calypso HostPlan through preflight, with gpu settings and credential shape chosen."""

    def make(gpu: dict | None = None, shape: str = "credentials-base64") -> HostPlan:
        data["secret_sources"] = ["file"]
        data["hosts"]["calypso"]["gpu"].update(gpu or {})
        secrets = dict(lab_secrets)
        secrets["cloudflareNodeTunnelToken"] = SHAPES[shape](
            secrets["cloudflareAccountId"], secrets["cloudflareNodeTunnelId"]
        )
        path = tmp_path / "secrets.yaml"
        path.write_text(yaml.safe_dump(secrets))
        path.chmod(0o600)
        view = HostView("calypso", frozenset({"k3s_agents", "gpu_hosts"}), data)
        plan = check([view], environ={"SECRETS_FILE": str(path)}).hosts["calypso"]
        assert plan.node_credential.shape == shape  # the shape we meant to test was recognised
        return plan

    return make


def _secret_fragments(plan: HostPlan, credential_text: str) -> list[str]:
    """Everything that would leak the credential: its secret, and the value as it arrived."""
    fragments = [TUNNEL_SECRET, credential_text.strip(), plan.node_credential.token()]
    fragments += [line for line in credential_text.splitlines() if len(line) > 16]
    return fragments


# ---- cloudflared_node


@pytest.mark.parametrize("shape", list(SHAPES))
def test_cloudflared_config_and_unit_for_each_credential_shape(make_plan, lab_secrets, shape):
    plan = make_plan(shape=shape)
    tunnel_id = lab_secrets["cloudflareNodeTunnelId"]
    desired = DesiredState(name="gpu host calypso")
    inputs = cloudflared_node.add_to(desired, plan)

    token_shape = shape == "token"
    credential_path = (
        "/etc/cloudflared/token" if token_shape else f"/etc/cloudflared/{tunnel_id}.json"
    )
    assert inputs == ["/usr/local/bin/cloudflared", "/etc/cloudflared/config.yaml", credential_path]

    config_text = desired.file("/etc/cloudflared/config.yaml").content.decode()
    config = yaml.safe_load(config_text)
    assert config["tunnel"] == tunnel_id
    assert config["no-autoupdate"] is True
    assert config["protocol"] == plan.settings.tunnel_protocol == "auto"
    assert config["metrics"] == plan.settings.cloudflared_metrics_address == "127.0.0.1:2200"
    # Triton's inference plane only (oceanid/ingress.py; routing in test_cloudflared_node.py)
    # the GPU name's rules, then the ML-backend adapter's name (deploys/gpu_host/ml_backend)
    assert {rule["hostname"] for rule in config["ingress"][:-2]} == {"gpu.boathou.se"}
    assert config["ingress"][-2] == {
        "hostname": "ml.boathou.se",
        "service": "http://localhost:9090",
    }
    assert {rule["service"] for rule in config["ingress"][1:-2]} == {"http://localhost:8000"}
    assert all(rule["path"].startswith("^") for rule in config["ingress"][:-2])
    assert config["ingress"][-1] == {"service": "http_status:404"}
    if token_shape:
        assert "credentials-file" not in config
    else:
        assert config["credentials-file"] == credential_path

    unit = desired.file(cloudflared_node.UNIT_FILE).content.decode()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[:4] == [
        "/usr/local/bin/cloudflared",
        "--no-autoupdate",
        "--config",
        "/etc/cloudflared/config.yaml",
    ]
    assert argv[4:6] == ["tunnel", "run"]
    assert argv[6:] == (["--token-file", "/etc/cloudflared/token"] if token_shape else [])
    assert "Description=Cloudflare Tunnel node connector for gpu.boathou.se" in unit

    credential = desired.file(credential_path)
    assert (credential.mode, credential.user, credential.group) == ("0600", "root", "root")
    assert credential.secret is True
    if token_shape:
        decoded = json.loads(base64.b64decode(credential.content.decode().strip()))
        assert decoded == {
            "a": lab_secrets["cloudflareAccountId"],
            "t": tunnel_id,
            "s": TUNNEL_SECRET,
        }
    else:
        assert json.loads(credential.content) == {
            "AccountTag": lab_secrets["cloudflareAccountId"],
            "TunnelSecret": TUNNEL_SECRET,
            "TunnelID": tunnel_id,
        }

    credential_text = SHAPES[shape](lab_secrets["cloudflareAccountId"], tunnel_id)
    fragments = _secret_fragments(plan, credential_text)
    for managed in desired.files:
        if managed.secret:
            continue
        text = managed.content.decode()
        for fragment in fragments:
            assert fragment not in text, f"{managed.path} holds the credential"
    assert [f.path for f in desired.files if f.secret] == [credential_path]
    for fragment in fragments:
        assert fragment not in repr(desired) and fragment not in repr(plan)


def test_cloudflared_binary_is_the_pinned_one(make_plan):
    plan = make_plan()
    desired = DesiredState(name="gpu host calypso")
    cloudflared_node.add_to(desired, plan)
    [binary] = desired.binaries
    assert binary.path == "/usr/local/bin/cloudflared"
    assert binary.pin("amd64") == (
        "https://github.com/cloudflare/cloudflared/releases/download/2025.8.1/"
        "cloudflared-linux-amd64",
        "a66353004197ee4c1fcb68549203824882bba62378ad4d00d234bdb8251f1114",
    )
    assert desired.units == ["cloudflared-node.service"]


def test_cloudflared_ingress_follows_public_name_port_and_settings(make_plan, data):
    data["tunnel_protocol"] = "http2"
    data["cloudflared_metrics_address"] = "127.0.0.1:2300"
    plan = make_plan(gpu={"public_name": "gpu2", "service": {"kind": "triton", "port": 8010}})
    config = cloudflared_node.config(plan)
    assert config["ingress"][1] == {
        "hostname": "gpu2.boathou.se",
        "path": "^/v2/health/(live|ready)$",
        "service": "http://localhost:8010",
    }
    assert (config["protocol"], config["metrics"]) == ("http2", "127.0.0.1:2300")


# ---- Triton


def _configs(files: dict[str, bytes]) -> dict[str, str]:
    return {path: data.decode() for path, data in files.items() if path.endswith("config.pbtxt")}


def test_model_files_render_kind_cpu_without_require_gpu(make_plan):
    plan = make_plan(gpu={"require_gpu": False, "gpus": None})
    configs = _configs(triton.model_files(plan))
    assert configs
    for text in configs.values():
        assert "kind: KIND_CPU" in text
        assert "KIND_GPU" not in text.split("instance_group", 1)[1]
        assert "gpus:" not in text


def test_model_files_render_kind_gpu_on_the_configured_gpus(make_plan):
    plan = make_plan(gpu={"require_gpu": True, "gpus": [0, 1]})
    configs = _configs(triton.model_files(plan))
    assert configs
    for text in configs.values():
        group = text[text.rindex("instance_group") :]
        assert "kind: KIND_GPU" in group
        assert "gpus: [ 0, 1 ]" in group
        assert "KIND_CPU" not in group
        assert text.count("instance_group [") == 1


def test_model_files_use_the_gpu_when_required_and_gpus_unset(make_plan):
    plan = make_plan(gpu={"require_gpu": True, "gpus": None})
    for text in _configs(triton.model_files(plan)).values():
        assert "kind: KIND_GPU" in text


def _exec_start(unit: str) -> list[str]:
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


HOST_RUNTIME = {"service": {"kind": "triton", "runtime": "host", "port": 8000}}


def test_host_unit_runs_tritonserver_locally_with_explicit_model_control(make_plan):
    unit = triton.host_unit(make_plan(gpu=HOST_RUNTIME))
    argv = _exec_start(unit)
    assert argv[0] == "/opt/triton/venv/dist/pytriton/tritonserver/bin/tritonserver"
    for flag in [
        "--model-repository=/opt/triton/models",
        "--backend-directory=/opt/triton/venv/backends",
        "--model-control-mode=explicit",
        "--load-model=*",
        "--http-address=127.0.0.1",
        "--http-port=8000",
        "--grpc-address=127.0.0.1",
        "--grpc-port=8001",
        "--metrics-address=127.0.0.1",
        "--metrics-port=8002",
    ]:
        assert flag in argv, flag
    assert "User=triton" in unit.splitlines()
    assert "Environment=LD_LIBRARY_PATH=/opt/triton/venv/dist/nvidia_pytriton.libs" in unit


def test_every_environment_path_of_the_units_goes_through_the_stable_link(make_plan):
    """A new environment takes effect only when Triton restarts on the switched link."""
    host = triton.host_unit(make_plan(gpu=HOST_RUNTIME))
    container = triton.container_unit(make_plan())
    for unit in (host, container):
        assert "/opt/triton/venvs" not in unit and "/opt/triton/dist" not in unit
    assert "Environment=PATH=/opt/triton/venv/bin:" in host


def _volumes(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-v"]


def test_the_container_sees_the_environment_it_was_built_with(make_plan):
    """The environment is mounted (read-only) at the path the image built it at, and the
    PATH the build wrote (its venv's bin/ first, which is how Triton's Python stub finds the
    packages) comes from the environment itself; no host path is named inside."""
    argv = _exec_start(triton.container_unit(make_plan()))
    assert f"/opt/triton/venv:{triton_ops.IMAGE_MOUNT}:ro" in _volumes(argv)
    assert triton.CONTAINER_ENV == triton_ops.IMAGE_MOUNT  # built and run at one path
    assert argv[argv.index("--env-file") + 1] == f"/opt/triton/venv/{triton_ops.IMAGE_ENV_FILE}"
    assert "-e" not in argv and not any("PYTHONPATH" in arg for arg in argv)


def test_granite_model_dir_is_mounted_read_only_at_its_own_path(make_plan):
    without = _volumes(_exec_start(triton.container_unit(make_plan())))
    assert not any("granite" in volume for volume in without)
    argv = _exec_start(triton.container_unit(make_plan(gpu={"granite_model_dir": "/srv/granite"})))
    assert _volumes(argv) == [*without, "/srv/granite:/srv/granite:ro"]


def test_each_build_gets_a_new_environment_folder_named_after_its_inputs(make_plan):
    """A rebuild with unchanged inputs (the stamp removed by hand) must not build over the
    environment Triton runs on, which has the same inputs."""
    plan = make_plan(gpu=HOST_RUNTIME)
    first, second = triton.environment_path(plan), triton.environment_path(plan)
    assert first != second
    prefix = hashlib.sha256(triton.stamp(plan)).hexdigest()[:12]
    for path in (first, second):
        assert path.startswith(f"/opt/triton/venvs/{prefix}-")
        assert "/" not in path.removeprefix("/opt/triton/venvs/")


@pytest.mark.parametrize("runtime", ["host", "container"])
def test_triton_ports_follow_the_service_port(make_plan, runtime):
    plan = make_plan(gpu={"service": {"kind": "triton", "runtime": runtime, "port": 9000}})
    assert triton.ports(plan) == (9000, 9001, 9002)
    unit = triton.host_unit(plan) if runtime == "host" else triton.container_unit(plan)
    argv = _exec_start(unit)
    for flag in ["--http-port=9000", "--grpc-port=9001", "--metrics-port=9002"]:
        assert flag in argv, flag
    assert "8000" not in unit and "8001" not in unit and "8002" not in unit
    if runtime == "container":
        ports = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-p"]
        assert ports == ["127.0.0.1:9000:9000", "127.0.0.1:9001:9001", "127.0.0.1:9002:9002"]
    assert cloudflared_node.config(plan)["ingress"][1]["service"] == "http://localhost:9000"


@pytest.mark.parametrize(("gpus", "device"), [([0], "'\"device=0\"'"), (None, "all")])
def test_container_unit_passes_the_gpu_ports_models_and_pinned_image(make_plan, gpus, device):
    plan = make_plan(gpu={"gpus": gpus})
    unit = triton.container_unit(plan)
    assert f"--gpus {device} " in unit
    argv = _exec_start(unit)
    assert argv[:2] == ["/usr/bin/docker", "run"]
    assert "--shm-size=1g" in argv
    ports = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-p"]
    assert ports == ["127.0.0.1:8000:8000", "127.0.0.1:8001:8001", "127.0.0.1:8002:8002"]
    volumes = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-v"]
    assert "/opt/triton/models:/models:ro" in volumes
    image = "nvcr.io/nvidia/tritonserver:25.08-py3"
    assert plan.settings.triton_image == image
    assert argv[argv.index(image) + 1 :][:3] == [
        "tritonserver",
        "--model-repository=/models",
        "--model-control-mode=explicit",
    ]
    assert "docker pull" not in unit  # the image is on disk before the unit starts


def _docker_gpu_fields(unit: str) -> list[str]:
    """The --gpus value as docker parses it (CSV), after systemd removed the unit's quotes."""
    argv = _exec_start(unit)
    return next(csv.reader([argv[argv.index("--gpus") + 1]]))


def test_one_gpu_reaches_docker_as_one_device_request(make_plan):
    assert _docker_gpu_fields(triton.container_unit(make_plan(gpu={"gpus": [0]})))[0] == (
        "device=0"
    )


def test_two_gpus_reach_docker_as_one_device_request(make_plan):
    assert _docker_gpu_fields(triton.container_unit(make_plan(gpu={"gpus": [0, 1]}))) == [
        "device=0,1"
    ]


@pytest.mark.parametrize(
    ("gpus", "device", "inside"), [([1], "device=1", [0]), ([1, 3], "device=1,3", [0, 1])]
)
def test_container_gpus_are_passed_by_host_index_and_named_from_0_inside(
    make_plan, gpus, device, inside
):
    plan = make_plan(gpu={"gpus": gpus})
    assert _docker_gpu_fields(triton.container_unit(plan)) == [device]
    wanted = f"gpus: [ {', '.join(map(str, inside))} ]"
    for text in _configs(triton.model_files(plan)).values():
        assert wanted in text[text.rindex("instance_group") :]


def test_the_host_runtime_names_the_hosts_gpu_indexes(make_plan):
    plan = make_plan(gpu={"gpus": [1, 3], **HOST_RUNTIME})
    for text in _configs(triton.model_files(plan)).values():
        assert "gpus: [ 1, 3 ]" in text[text.rindex("instance_group") :]


def test_without_a_gpu_the_container_gets_no_gpus_and_runs_on_the_cpu(make_plan):
    plan = make_plan(gpu={"require_gpu": False, "gpus": None})
    assert "--gpus" not in _exec_start(triton.container_unit(plan))
    for text in _configs(triton.model_files(plan)).values():
        assert "kind: KIND_CPU" in text


@pytest.mark.parametrize(
    ("memlock", "flag"), [("unlimited", "memlock=-1"), (8388608, "memlock=8388608")]
)
def test_the_containers_memlock_follows_the_setting(make_plan, memlock, flag):
    plan = make_plan(gpu={"service": {"kind": "triton", "memlock": memlock}})
    argv = _exec_start(triton.container_unit(plan))
    limits = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--ulimit"]
    assert limits == [flag, "stack=67108864"]


def test_an_image_pinned_by_id_is_what_the_unit_runs(make_plan, data):
    image_id = "sha256:" + "b3" * 32
    data["triton_image"] = image_id
    argv = _exec_start(triton.container_unit(make_plan()))
    assert argv[argv.index(image_id) + 1] == "tritonserver"


def test_the_container_environment_is_rebuilt_for_a_new_image_or_requirements(
    make_plan, data, monkeypatch
):
    first = triton.stamp(make_plan())
    data["triton_image"] = "sha256:" + "b3" * 32
    new_image = triton.stamp(make_plan())
    monkeypatch.setattr(triton, "requirements", lambda: ["numpy<2", "pillow"])
    new_requirements = triton.stamp(make_plan())
    assert len({first, new_image, new_requirements}) == 3


def test_the_host_runtimes_stamp_does_not_follow_the_image(make_plan, data):
    """The host runtime's environment (proven in the lab) is not rebuilt for a new image."""
    before = triton.stamp(make_plan(gpu=HOST_RUNTIME))
    data["triton_image"] = "sha256:" + "b3" * 32
    assert triton.stamp(make_plan(gpu=HOST_RUNTIME)) == before
    assert before.startswith(b"0.7.0 ")


def test_triton_add_to_declares_models_stamp_and_unit(make_plan):
    plan = make_plan()
    desired = DesiredState(name="gpu host calypso")
    declared = triton.add_to(desired, plan)
    restart_on, by_model = declared.restart_on, declared.by_model
    # the container runtime restarts when the models' environment pins change
    assert restart_on == [triton.MODEL_REQUIREMENTS]
    assert set(by_model) == {"docling_granite_python"}
    paths = {f.path for f in desired.files}
    assert "/opt/triton/models/docling_granite_python/config.pbtxt" in paths
    assert "/opt/triton/models/docling_granite_python/1/model.py" in paths
    assert triton.STAMP in desired.read and triton.MODELS in desired.trees
    assert desired.file(triton.UNIT_FILE).content.decode() == triton.container_unit(plan)
    wheel = desired.file(triton.WHEEL_REQUIREMENTS).content.decode()
    assert wheel.startswith("nvidia-pytriton==0.7.0 --hash=sha256:21f063ff93bb426d")
    # the image is read in the role's one fact; Docker itself is the Docker role's, and the
    # environment is built by the image, not by the host's python3-venv
    image = plan.settings.triton_image
    assert desired.probes == {
        f"docker image {image}": f"{docker_ops.INSPECT} {image} 2>/dev/null || echo -"
    }
    assert desired.packages == []


def test_renamed_model_folder_is_refused_by_name(tmp_path):
    src = tmp_path / "models"
    shutil.copytree(triton.MODEL_SOURCE, src)
    (src / "docling_granite_python").rename(src / "docling_renamed")
    with pytest.raises(ValueError) as err:
        triton_repo.render_repository(src, instance_kind="KIND_CPU", gpus=None)
    message = str(err.value)
    assert "model 'docling_renamed'" in message
    assert "name: 'docling_granite_python'" in message
    assert "equal the folder name 'docling_renamed'" in message


def test_a_triton_port_without_room_for_grpc_and_metrics_is_refused(make_plan):
    with pytest.raises(PreflightError) as err:
        make_plan(gpu={"service": {"kind": "triton", "port": 65534}})
    assert "kind triton uses port, port+1 and port+2: at most 65533 (got 65534)" in str(err.value)
    assert "hosts.calypso.gpu.service" in str(err.value)


# ---- the generic HTTP service


def test_http_service_environment_is_only_in_the_0600_env_file(make_plan):
    plan = make_plan(
        gpu={
            "gpus": [0],
            "service": {
                "kind": "http",
                "image": "ghcr.io/example/docling-granite:1.0",
                "port": 8080,
                "environment": {"HF_TOKEN": HF_TOKEN, "MODEL": "granite"},
            },
        }
    )
    desired = DesiredState(name="gpu host calypso")
    inputs = http_service.add_to(desired, plan)
    assert inputs == [http_service.ENV_FILE]

    env = desired.file(http_service.ENV_FILE)
    assert (env.mode, env.user, env.group, env.secret) == ("0600", "root", "root", True)
    assert env.content.decode() == f"HF_TOKEN={HF_TOKEN}\nMODEL=granite\n"

    unit = desired.file(http_service.UNIT_FILE).content.decode()
    assert HF_TOKEN not in unit and "granite\n" not in unit.replace("docling-granite", "")
    argv = _exec_start(unit)
    assert argv[argv.index("--env-file") + 1] == http_service.ENV_FILE
    assert argv[argv.index("-p") + 1] == "127.0.0.1:8080:8080"
    assert argv[-1] == "ghcr.io/example/docling-granite:1.0"
    for managed in desired.files:
        if not managed.secret:
            assert HF_TOKEN.encode() not in managed.content


@pytest.mark.parametrize("require_gpu", [True, False])
def test_http_service_image_is_on_disk_before_start_and_gpus_only_where_required(
    make_plan, require_gpu
):
    image = "ghcr.io/example/docling-granite:1.0"
    plan = make_plan(
        gpu={
            "require_gpu": require_gpu,
            "gpus": [1],
            "service": {"kind": "http", "image": image, "port": 8080},
        }
    )
    desired = DesiredState(name="gpu host calypso")
    http_service.add_to(desired, plan)
    unit = desired.file(http_service.UNIT_FILE).content.decode()
    assert "docker pull" not in unit
    assert f"docker image {image}" in desired.probes
    assert desired.packages == []  # Docker is the Docker role's: an existing one is kept
    argv = _exec_start(unit)
    if require_gpu:
        assert argv[argv.index("--gpus") + 1] == '"device=1"'
    else:
        assert "--gpus" not in argv


def test_host_runtime_restarts_for_new_wheel_or_model_pins(make_plan):
    plan = make_plan(gpu={"service": {"kind": "triton", "runtime": "host", "port": 8000}})
    restart_on = triton.add_to(DesiredState(name="gpu host calypso"), plan).restart_on
    assert restart_on == [triton.WHEEL_REQUIREMENTS, triton.MODEL_REQUIREMENTS]


def test_nvidia_sources_list_is_written_only_by_the_verified_repository_step(make_plan):
    """The sources list is no managed file (which would be written before the key is
    checked); the role reads it and the keyring each run for the repository step."""
    desired = DesiredState(name="gpu host calypso")
    docker.add_to(desired, make_plan())
    assert docker.NVIDIA_SOURCES not in [f.path for f in desired.files]
    assert {docker.NVIDIA_KEYRING, docker.NVIDIA_SOURCES} <= set(desired.read)
