"""The ML backend on calypso (deploys/gpu_host/ml_backend), proven on the lab's hosts.

calypso (Triton's `host` runtime) runs the real adapter as oceanid-ml-backend.service from its
hash-pinned venv (installed from the lab's wheelhouse: the hosts have no PyPI), on
127.0.0.1:9090, published by its node tunnel at `ml.boathou.se`. The tests reach it as Label
Studio would: through the connector's edge (tests/lab `edges`, the public name as the Host
header), with the basic auth of the lab's secrets file, and ask it for a prediction of the PDF
on the lab's file server (lab/files.py, 10.77.0.1 on this machine's side of the bridge), as
from an operator's file server. `make smoke` checks the same, and `make verify` the unit, its
loopback-only port and its 0600 credentials file (tests/hosts/test_ml_backend.py).
"""

from __future__ import annotations

import pytest
import requests
import yaml

from lab.files import SAMPLE_SENTENCE, SAMPLE_URL
from lab.topology import SECRETS_FILE
from oceanid.smoke import SMOKE_LABEL_CONFIG, SMOKE_PDF_FIELD
from tests.lab import edges, ssh
from tests.lab.test_lab_commands import edge_sees, failed, heal, smoke

pytestmark = pytest.mark.lab

ML = "ml.boathou.se"


def auth() -> tuple[str, str]:
    values = yaml.safe_load(SECRETS_FILE.read_text())
    return values["mlBackendUser"], values["mlBackendPassword"]


def call(edge: str, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(
        method, edge + path, headers={"Host": ML}, timeout=120, allow_redirects=False, **kwargs
    )


def test_the_adapter_answers_through_its_name_with_credentials_and_refuses_without(converged):
    with edges("calypso") as urls:
        edge = urls["calypso"]
        healthy = call(edge, "GET", "/health", auth=auth())
        assert healthy.status_code == 200, healthy.text[:300]
        assert healthy.json()["model_version"].startswith("docling_granite_python@")
        for method, path in (("GET", "/health"), ("POST", "/predict"), ("POST", "/setup")):
            refused = call(edge, method, path, json={})
            assert refused.status_code == 401, f"{method} {path}: {refused.status_code}"
        wrong = call(edge, "GET", "/health", auth=(auth()[0], "not-the-password"))
        assert wrong.status_code == 401


def test_a_prediction_of_a_pdf_from_the_operators_file_server(converged):
    body = {
        "tasks": [{"id": 7, "data": {SMOKE_PDF_FIELD: SAMPLE_URL}}],
        "project": "lab",
        "label_config": SMOKE_LABEL_CONFIG,
        "params": {},
    }
    with edges("calypso") as urls:
        answer = call(urls["calypso"], "POST", "/predict", json=body, auth=auth())
    assert answer.status_code == 200, answer.text[:300]
    (prediction,) = answer.json()["results"]
    (result,) = prediction["result"]
    assert (result["type"], result["from_name"], result["to_name"]) == (
        "textarea",
        "text",
        "document",
    )
    assert SAMPLE_SENTENCE in result["value"]["text"][0]


def test_the_port_is_on_loopback_only(converged):
    listening = ssh("calypso", "ss -ltnH 'sport = :9090'").stdout.split()
    assert listening and listening[3] == "127.0.0.1:9090", listening


def test_smoke_checks_the_ml_name_and_turns_red_when_the_adapter_stops(converged):
    edge_sees("calypso")
    with edges("calypso") as urls:
        args = ["--only", "ml", "--url", f"{ML}={urls['calypso']}"]
        done = smoke(*args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"PASS {ML} ML backend — " in done.stdout
        assert f"PASS {ML} ML backend refuses no credentials — " in done.stdout
        (line,) = [x for x in done.stdout.splitlines() if x.startswith(f"PASS {ML} ML backend pr")]
        assert SAMPLE_SENTENCE[:40] in line
        assert auth()[1] not in done.stdout + done.stderr
        try:
            assert ssh("calypso", "sudo systemctl stop oceanid-ml-backend.service").returncode == 0
            done = smoke(*args)
            assert done.returncode == 1, done.stdout
            assert any(x.startswith(f"FAIL {ML} ML backend — ") for x in failed(done.stdout))
        finally:
            heal("calypso")  # the converge starts it again
