"""testinfra checks of a GPU host (the `gpu_hosts` group): its node tunnel connector and Triton.

Which hosts: the inventory's `gpu_hosts` (see conftest.py).
"""

import json

UNITS = ("cloudflared-node.service", "tritonserver.service")


def test_units_enabled_and_active(host):
    for unit in UNITS:
        service = host.service(unit)
        assert service.is_enabled, unit
        assert service.is_running, unit


def test_credentials_are_private(host):
    with host.sudo():
        creds = host.check_output(
            "ls /etc/cloudflared/token /etc/cloudflared/*.json 2>/dev/null || true"
        ).split()
        assert len(creds) == 1, creds
        credential = host.file(creds[0])
        assert (credential.user, credential.group, credential.mode) == ("root", "root", 0o600)


def test_no_secret_in_unit_or_process_arguments(host):
    with host.sudo():
        secret = host.check_output(
            "cat /etc/cloudflared/token 2>/dev/null || "
            "python3 -c 'import json,glob; print(json.load(open(glob.glob("
            '"/etc/cloudflared/*.json")[0]))["TunnelSecret"])\''
        ).strip()
        unit = host.file("/etc/systemd/system/cloudflared-node.service").content_string
        processes = host.check_output("ps -eo args")
    # Booleans first: pytest's assertion messages would print the values compared.
    long_enough, in_unit, in_args = len(secret) > 20, secret in unit, secret in processes
    assert long_enough, "no tunnel secret found"
    assert not in_unit, "the tunnel secret is in the unit file"
    assert not in_args, "the tunnel secret is in a process's arguments"
    assert "--token " not in unit


def test_connector_config(host):
    config = host.file("/etc/cloudflared/config.yaml")
    assert config.mode == 0o644
    text = config.content_string
    assert "no-autoupdate: true" in text
    assert "metrics: 127.0.0.1:2200" in text
    assert text.rstrip().endswith("- service: http_status:404")


def test_ports_listen_on_localhost_only(host):
    listening = {}
    for line in host.check_output("ss -ltnH").splitlines():
        address = line.split()[3]
        listening[int(address.rsplit(":", 1)[1])] = address.rsplit(":", 1)[0]
    for port in (8000, 8001, 8002, 2200):
        assert port in listening, f"nothing listens on {port}"
        assert "127.0.0.1" in listening[port], f"{port} listens on {listening[port]}"


def test_triton_ready_and_serving_the_models(host):
    code = host.check_output(
        "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v2/health/ready"
    )
    assert code == "200"
    index = json.loads(
        host.check_output("curl -s -X POST http://127.0.0.1:8000/v2/repository/index")
    )
    states = {model["name"]: model.get("state") for model in index}
    assert states.get("docling_granite_python") == "READY", states


def test_connector_ready(host):
    ready = json.loads(host.check_output("curl -s http://127.0.0.1:2200/ready"))
    assert ready["status"] == 200 and ready["readyConnections"] >= 1


def test_triton_runs_unprivileged(host):
    assert host.process.get(comm="tritonserver").user == "triton"
