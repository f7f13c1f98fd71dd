"""testinfra checks of a GPU host serving Triton (its `service.kind` "triton"), either runtime.

Which hosts: the inventory's GPU hosts whose data says Triton (see conftest.py).
"""

import json

from tests.hosts.test_gpu import listening


def test_unit_enabled_and_active(host):
    service = host.service("tritonserver.service")
    assert service.is_enabled and service.is_running


def test_grpc_and_metrics_listen_on_localhost_only(host):
    ports = listening(host)
    for port in (8001, 8002):
        assert ports.get(port) == {"127.0.0.1"}, f"{port} listens on {ports.get(port)}"


def test_ready_and_serving_the_models(host):
    code = host.check_output(
        "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v2/health/ready"
    )
    assert code == "200"
    index = json.loads(
        host.check_output("curl -s -X POST http://127.0.0.1:8000/v2/repository/index")
    )
    states = {model["name"]: model.get("state") for model in index}
    assert states.get("docling_granite_python") == "READY", states
