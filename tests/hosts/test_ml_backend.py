"""testinfra checks of the ML backend on a GPU host serving Triton (deploys/gpu_host/ml_backend).

Which hosts: the inventory's GPU hosts whose data says Triton (see conftest.py): each runs the
adapter, unprivileged, on 127.0.0.1:9090 only, its basic auth in a 0600 file of its own user.
"""

import json

from deploys.gpu_host import ml_backend
from oceanid.ingress import ML_BACKEND_PORT
from tests.hosts.test_gpu import listening


def test_unit_enabled_and_active(host):
    service = host.service(ml_backend.UNIT)
    assert service.is_enabled and service.is_running


def test_runs_as_its_own_unprivileged_user(host):
    pid = host.check_output(f"systemctl show -p MainPID --value {ml_backend.UNIT}")
    assert int(pid) > 0
    assert host.check_output(f"ps -o user= -p {pid}") == ml_backend.USER
    assert host.user(ml_backend.USER).shell == "/usr/sbin/nologin"


def test_listens_on_loopback_only(host):
    ports = listening(host)
    assert ports.get(ML_BACKEND_PORT) == {"127.0.0.1"}, ports.get(ML_BACKEND_PORT)


def test_credentials_file_is_0600_and_its_users(host):
    credentials = host.file(ml_backend.CREDENTIALS)
    assert credentials.is_file and credentials.mode == 0o600
    assert (credentials.user, credentials.group) == (ml_backend.USER, ml_backend.USER)


def test_the_password_is_only_in_its_file(host):
    """Not in the unit, the config, or the process's arguments and environment."""
    password = json.loads(host.file(ml_backend.CREDENTIALS).content_string)["password"]
    for path in (ml_backend.UNIT_FILE, ml_backend.CONFIG):
        assert password not in host.file(path).content_string, path
    pid = host.check_output(f"systemctl show -p MainPID --value {ml_backend.UNIT}")
    for proc in ("cmdline", "environ"):
        seen = host.run(f"tr '\\0' ' ' < /proc/{pid}/{proc}").stdout
        assert password not in seen, proc


def test_refuses_a_request_without_credentials(host):
    code = host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{ML_BACKEND_PORT}/health"
    )
    assert code == "401"
