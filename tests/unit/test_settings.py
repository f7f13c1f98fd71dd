"""Settings validation: every problem at once, each naming its key."""

import pytest

from oceanid.settings import SettingsError, from_data


def problems(data) -> list[str]:
    with pytest.raises(SettingsError) as err:
        from_data(data)
    return err.value.problems


def test_shipped_defaults_validate(data):
    settings = from_data(data)
    assert settings.base_domain == "boathou.se"
    assert settings.k3s.version == "v1.33.4+k3s1"
    assert settings.enable_node_provisioning is False
    assert settings.enable_control_plane_lb is False
    assert settings.esc_environment == "default/oceanid-cluster"
    assert settings.host("calypso").gpu.require_gpu is True
    assert settings.host("styx").gpu is None


def test_pyinfra_keys_are_not_ours(data):
    data.update(ssh_user="oceanid", _sudo=True, ssh_config_file="/x")
    assert from_data(data).admin_user == "oceanid"


def test_unknown_key_suggests_the_right_one(data):
    data["enable_node_provisoning"] = True
    assert problems(data) == [
        "enable_node_provisoning: unknown setting; did you mean enable_node_provisioning?"
    ]


def test_every_problem_is_reported_at_once(data):
    data["base_domain"] = "Not A Domain"
    data["tunnel_protocol"] = "udp"
    data["cloudflared"]["sha256"]["amd64"] = "abc"
    data["k3s"]["url"] = "ftp://example/{version}"
    del data["manage_dns"]
    found = problems(data)
    assert len(found) == 5, found
    joined = "\n".join(found)
    assert "base_domain: must be a lower-case DNS name" in joined
    assert "tunnel_protocol:" in joined and "'udp'" in joined
    assert "cloudflared.sha256.amd64: must be 64 lower-case hex digits" in joined
    assert "k3s.url: must be an http(s) URL template" in joined
    assert "manage_dns: missing; set it in group_data/all.py" in joined


def test_flags_must_be_booleans_not_strings(data):
    data["enable_node_provisioning"] = "false"
    assert problems(data)[0].startswith("enable_node_provisioning: Input should be a valid boolean")


def test_lb_without_provisioning_is_refused(data):
    data["enable_control_plane_lb"] = True
    assert "enable_control_plane_lb needs enable_node_provisioning" in problems(data)[0]


def test_host_data_is_checked_by_path(data):
    data["hosts"]["calypso"]["gpu"]["public_name"] = "GPU.x"
    data["hosts"]["calypso"]["gpu"]["service"]["runtime"] = "podman"
    data["hosts"]["calypso"]["gpu"]["colour"] = "green"
    joined = "\n".join(problems(data))
    assert "hosts.calypso.gpu.public_name: must be one DNS label" in joined
    assert "hosts.calypso.gpu.service.runtime:" in joined
    assert "hosts.calypso.gpu.colour: unknown setting" in joined


def test_http_service_needs_an_image(data):
    data["hosts"]["calypso"]["gpu"]["service"] = {"kind": "http", "port": 5001}
    assert "kind http needs an image" in problems(data)[0]


def test_artifact_url_renders(data):
    url = from_data(data).cloudflared.url_for("amd64")
    assert url.endswith("/2025.8.1/cloudflared-linux-amd64")


def test_admin_keys_must_be_public_keys(data):
    data["admin_ssh_keys"] = ["-----BEGIN OPENSSH PRIVATE KEY-----"]
    assert "admin_ssh_keys: item 0 is not an OpenSSH public key line" in problems(data)[0]


def test_cloudflare_settings_are_checked(data):
    data["cloudflare_api_base_url"] = "api.cloudflare.com/client/v4"
    data["cloudflare_takeover_records"] = ["gpu.boathou.se", "Not A Name"]
    joined = "\n".join(problems(data))
    assert "cloudflare_api_base_url: must be an http(s) URL" in joined
    assert "cloudflare_takeover_records.1: must be a lower-case DNS name" in joined


def test_calypso_is_reached_as_oceanid_with_sudo(data):
    calypso = from_data(data).host("calypso")
    assert (calypso.ssh_user, calypso.sudo) == ("oceanid", True)
    assert (from_data(data).host("tethys").ssh_user, from_data(data).host("tethys").sudo) == (
        None,
        False,
    )


def test_host_login_is_checked_by_path(data):
    data["hosts"]["calypso"].update(ssh_user="Oceanid Admin", sudo="yes")
    joined = "\n".join(problems(data))
    assert "hosts.calypso.ssh_user: must be a Unix user name: up to 32 lower-case" in joined
    assert "pattern" not in joined and "[a-z" not in joined  # words, not the regex
    assert "hosts.calypso.sudo: Input should be a valid boolean (got 'yes')" in joined


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must be the path of a YAML or JSON file"),
        ("  ", "must be the path of a YAML or JSON file"),
        (5, "Input should be a valid string"),
    ],
)
def test_secrets_file_must_be_a_path(data, value, message):
    data["secrets_file"] = value
    assert problems(data) == [f"secrets_file: {message} (got {value!r})"]


# ---- input that reaches a unit file, an env file or a command: one line, fully matched

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@x"


def _set(data: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


ONE_LINE_KEYS = [
    # (key as reported, a valid value it takes)
    ("hosts.calypso.gpu.granite_model_dir", "/srv/granite"),
    ("hosts.calypso.gpu.service.environment.TOKEN", "lab-token"),
    ("admin_ssh_keys.0", KEY),
    ("k3s.url", "https://mirror.example/k3s/{version}/k3s"),
    ("k3s.version", "v1.33.4+k3s1"),
    ("triton_wheel.version", "0.7.0"),
    ("cloudflare_api_base_url", "https://api.cloudflare.com/client/v4"),
    ("cluster_apps.ml_backend.url", "https://gpu.boathou.se"),
    ("cluster_apps.ml_backend.title", "oceanid-gpu"),
    ("hosts.calypso.gpu.tunnel_credential_key", "cloudflareNodeTunnelToken"),
    ("secrets_file", "/etc/oceanid/secrets.yaml"),
]


@pytest.mark.parametrize("bad", ["{}\n", "{}\r", "{}\x00", "a\r{}", "{}\u2028x"])
@pytest.mark.parametrize(("key", "good"), ONE_LINE_KEYS, ids=[k for k, _ in ONE_LINE_KEYS])
def test_a_value_that_reaches_a_file_or_command_must_be_one_line(data, key, good, bad):
    if key.startswith("admin_ssh_keys"):
        data["admin_ssh_keys"] = [KEY]
    _set(data, key, good)
    from_data(data)  # the good value is taken
    _set(data, key, bad.format(good))
    (found,) = problems(data)
    assert found.startswith(f"{key}: must be one line without control characters (got ")
    assert "\n" not in found and "\r" not in found and "\x00" not in found  # one line


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("base_domain", "boathou.se\n", "must be a lower-case DNS name"),
        ("hosts.calypso.gpu.public_name", "gpu\n", "must be one DNS label"),
        ("cloudflared.sha256.amd64", "a" * 64 + "\n", "must be 64 lower-case hex digits"),
        ("triton_image", "nvcr.io/nvidia/tritonserver:25.08-py3\n", "must be an image reference"),
        (
            "cluster_apps.label_studio.image",
            "heartexlabs/label-studio:1.23.2\n",
            "must be an image",
        ),
        ("cluster_apps.label_studio.memory_limit", "3Gi\n", "must be a Kubernetes quantity"),
        ("cloudflare_takeover_records.0", "gpu.boathou.se\n", "must be a lower-case DNS name"),
        ("admin_ssh_keys.0", KEY + "\n", "must be one line without control characters"),
        ("admin_user", "oceanid\n", "must be a Unix user name"),
        ("base_packages.0", "curl\n", "must be a Debian package name"),
        ("hosts.calypso.gpu.service.docker_package", "docker.io\n", "must be a Debian package"),
        ("esc_environment", "default/oceanid-cluster\n", "must be an ESC environment"),
        ("cluster_apps.ml_backend.schedule", "0 * * * *\n", "must be a cron schedule"),
        ("hosts.calypso.k3s.node_ip", "10.0.0.1\n", "must be one IPv4 or IPv6 address"),
        ("hosts.calypso.k3s.address", "calypso\n", "must be a host name or an IP address"),
        ("hosts.calypso.k3s.flannel_iface", "wg0\n", "must be a network interface name"),
        ("nvidia_container_key_fingerprint", "A" * 40 + "\n", "must be an OpenPGP fingerprint"),
        ("cloudflared_metrics_address", "127.0.0.1:2200\n", "must be a loopback address"),
        ("hosts.calypso.k3s.labels.a", "b\n", "not a Kubernetes label value"),
        ("hosts.calypso.k3s.taints.0", "a=b:NoSchedule\n", "must be key[=value]:Effect"),
    ],
)
def test_a_trailing_newline_never_passes_a_pattern_and_the_words_say_why(data, key, value, words):
    """`re.match(…$)` matched before a final newline; every check is a full match, and what
    is wrong is said in words, never as the regex."""
    if key.startswith("admin_ssh_keys"):
        data["admin_ssh_keys"] = [KEY]
    if key.startswith("cloudflare_takeover_records"):
        data["cloudflare_takeover_records"] = ["gpu.boathou.se"]
    if key == "hosts.calypso.k3s.taints.0":
        data["hosts"]["calypso"]["k3s"]["taints"] = ["a=b:NoSchedule"]
    _set(data, key, value.rstrip("\n"))
    from_data(data)
    _set(data, key, value)
    (found,) = problems(data)
    reported = key.rsplit(".", 1)[0] if ".k3s.labels." in key or ".k3s.taints." in key else key
    assert found.startswith(f"{reported}: ")  # labels and taints are checked as a whole
    assert words in found
    assert "pattern" not in found and "^" not in found and "$'" not in found


def test_environment_names_are_variable_names(data):
    service = data["hosts"]["calypso"]["gpu"]["service"]
    service["environment"] = {"A=B": "x", "OK_1": "y"}
    assert problems(data) == [
        "hosts.calypso.gpu.service.environment.A=B: the name must be letters, digits and _, "
        "not starting with a digit (a variable's name) (got 'A=B')"
    ]


def test_granite_model_dir_is_an_absolute_path_docker_can_mount(data):
    data["hosts"]["calypso"]["gpu"]["granite_model_dir"] = "models/granite"
    assert "must be an absolute path without ':'" in problems(data)[0]
    data["hosts"]["calypso"]["gpu"]["granite_model_dir"] = "/srv/a:b"
    assert "must be an absolute path without ':'" in problems(data)[0]
