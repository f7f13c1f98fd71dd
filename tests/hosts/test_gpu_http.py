"""testinfra checks of a GPU host's `http` service: any HTTP model server from its image.

Which hosts: the GPU hosts whose data says `service.kind` "http" (see conftest.py).
"""

ENV_FILE = "/etc/oceanid/gpu-http.env"


def test_unit_enabled_and_active(host):
    service = host.service("gpu-http.service")
    assert service.is_enabled and service.is_running


def test_answers(host):
    code = host.check_output("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/")
    assert int(code) < 500, code


def test_environment_is_private_and_never_an_argument(host):
    with host.sudo():
        env = host.file(ENV_FILE)
        assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
        values = [line.partition("=")[2] for line in env.content_string.splitlines() if "=" in line]
        unit = host.file("/etc/systemd/system/gpu-http.service").content_string
        processes = host.check_output("ps -eo args")
    assert "docker pull" not in unit
    secrets = [v for v in values if len(v) > 8]
    # Booleans first: pytest's assertion messages would print the values compared.
    in_unit = any(v in unit for v in secrets)
    in_args = any(v in processes for v in secrets)
    assert secrets, "no value in the environment file to look for"
    assert not in_unit, "an environment value is in the unit file"
    assert not in_args, "an environment value is in a process's arguments"
