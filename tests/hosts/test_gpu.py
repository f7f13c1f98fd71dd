"""testinfra checks of a GPU host (the `gpu_hosts` group): its node tunnel connector, and that
its service answers on localhost only. What the service is has modules of its own:
test_triton (and test_triton_host, test_triton_container) and test_gpu_http.

Which hosts: the inventory's `gpu_hosts` (see conftest.py).
"""

import json


def test_connector_enabled_and_active(host):
    service = host.service("cloudflared-node.service")
    assert service.is_enabled and service.is_running


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


def listening(host) -> dict[int, set[str]]:
    """Every listening TCP port and the addresses it listens on; an IPv4 address a socket
    took as IPv6 (gRPC's `[::ffff:127.0.0.1]`) is written as the IPv4 address it is."""
    found: dict[int, set[str]] = {}
    for line in host.check_output("ss -ltnH").splitlines():
        address, _, port = line.split()[3].rpartition(":")
        address = address.strip("[]").removeprefix("::ffff:")
        found.setdefault(int(port), set()).add(address)
    return found


def test_service_and_metrics_listen_on_localhost_only(host):
    ports = listening(host)
    for port in (8000, 2200):  # the service (the lab's port) and the connector's metrics
        assert ports.get(port) == {"127.0.0.1"}, f"{port} listens on {ports.get(port)}"


def test_connector_ready(host):
    ready = json.loads(host.check_output("curl -s http://127.0.0.1:2200/ready"))
    assert ready["status"] == 200 and ready["readyConnections"] >= 1
