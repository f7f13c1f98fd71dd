"""Secret sources: ESC through its CLI, environment variables, SECRETS_FILE, in that order."""

import json
import os
import stat

import pytest

from oceanid import secrets
from oceanid.secrets import SecretsError


def fake_esc(tmp_path, *, stdout="", stderr="", rc=0):
    """A stand-in `esc` executable on PATH (the real CLI needs Pulumi Cloud)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "out.json").write_text(stdout)
    (bindir / "err.txt").write_text(stderr)
    script = bindir / "esc"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > "{bindir}/argv"\n'
        f'cat "{bindir}/out.json"; cat "{bindir}/err.txt" >&2; exit {rc}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bindir


@pytest.fixture
def esc_path(monkeypatch, tmp_path):
    def install(**kwargs):
        bindir = fake_esc(tmp_path, **kwargs)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        return bindir

    return install


def test_esc_values_in_both_spellings(esc_path):
    bindir = esc_path(
        stdout=json.dumps(
            {
                "pulumiConfig": {
                    "oceanid-cluster:cloudflareApiToken": "s3cr3t-value",
                    "oceanid-cluster:k3s_token": "K10abc",
                    "oceanid-cluster:cloudflare_zone_id": "zone",
                },
                "environmentVariables": {},
            }
        )
    )
    found = secrets.load(sources=["esc"], esc_environment="default/oceanid-cluster", environ={})
    assert found["cloudflareApiToken"] == "s3cr3t-value"
    assert found["cloudflareZoneId"] == "zone"
    assert found["k3s_token"] == "K10abc" and found["k3sToken"] == "K10abc"
    assert (bindir / "argv").read_text().split() == [
        "env",
        "open",
        "default/oceanid-cluster",
        "--format",
        "json",
    ]
    assert "s3cr3t-value" not in repr(found)


def test_esc_missing_binary_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SecretsError, match="Pulumi ESC CLI `esc` is not on PATH"):
        secrets.load(sources=["esc"], esc_environment="default/oceanid-cluster", environ={})


def test_esc_failed_login_is_a_clear_error(esc_path):
    esc_path(stderr="error: no credentials. Please run `esc login`\n", rc=255)
    with pytest.raises(SecretsError) as err:
        secrets.load(sources=["esc"], esc_environment="default/oceanid-cluster", environ={})
    assert "failed with exit 255" in str(err.value)
    assert "run `esc login` first" in str(err.value)


def test_esc_without_pulumi_config(esc_path):
    esc_path(stdout=json.dumps({"environmentVariables": {}}))
    with pytest.raises(SecretsError, match="has no pulumiConfig object"):
        secrets.load(sources=["esc"], esc_environment="a/b", environ={})


def test_sources_in_order_first_wins(esc_path, tmp_path):
    esc_path(stdout=json.dumps({"pulumiConfig": {"oceanid-cluster:cloudflareZoneId": "from-esc"}}))
    file = tmp_path / "secrets.yaml"
    file.touch(mode=0o600)
    file.write_text(
        "cloudflareZoneId: from-file\ncloudflare_account_id: acct-file\nhfAccessToken: hf-file\n"
    )
    environ = {
        "SECRETS_FILE": str(file),
        "CLOUDFLARE_ACCOUNT_ID": "acct-env",
        "CLOUDFLARE_ZONE_ID": "zone-env",
    }
    found = secrets.load(sources=["esc", "env", "file"], esc_environment="a/b", environ=environ)
    assert found["cloudflareZoneId"] == "from-esc"
    assert found["cloudflareAccountId"] == "acct-env"
    assert found["hfAccessToken"] == "hf-file"
    assert (found.origin("cloudflareZoneId"), found.origin("hfAccessToken")) == ("esc", "file")


def test_exact_key_name_in_environment():
    found = secrets.read_env(
        ["k3s_token", "cloudflareApiToken"], {"k3s_token": "a", "CLOUDFLARE_API_TOKEN": "b"}
    )
    assert found == {"k3stoken": "a", "cloudflareapitoken": "b"}


def test_json_file_and_esc_shaped_file(tmp_path):
    plain = tmp_path / "s.json"
    plain.write_text(json.dumps({"cloudflareApiToken": "x"}))
    plain.chmod(0o600)
    assert secrets.read_file(plain) == {"cloudflareapitoken": "x"}
    shaped = tmp_path / "esc.yaml"
    shaped.write_text("pulumiConfig:\n  oceanid-cluster:cloudflareApiToken: y\n")
    shaped.chmod(0o600)
    assert secrets.read_file(shaped) == {"cloudflareapitoken": "y"}


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("a: [1, 2", "is not YAML or JSON at line"),
        ("- a\n- b\n", "must hold a mapping"),
        ("cloudflareApiToken: [x]\n", "holds a list; secrets are strings"),
    ],
)
def test_bad_files(tmp_path, content, expect):
    file = tmp_path / "s.yaml"
    file.write_text(content)
    file.chmod(0o600)
    with pytest.raises(SecretsError, match=expect.replace("[", r"\[")):
        secrets.read_file(file)


def test_unreadable_file(tmp_path):
    with pytest.raises(SecretsError, match="cannot be read"):
        secrets.read_file(tmp_path / "absent.yaml")


def test_env_names():
    assert secrets.env_name("cloudflareNodeTunnelToken") == "CLOUDFLARE_NODE_TUNNEL_TOKEN"
    assert secrets.env_name("k3s_token") == "K3S_TOKEN"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_secrets_file_others_can_read_is_refused(tmp_path, mode):
    file = tmp_path / "s.yaml"
    file.write_text("cloudflareApiToken: s3cr3t-value\n")
    file.chmod(mode)
    with pytest.raises(SecretsError) as err:
        secrets.read_file(file)
    assert f"is mode {mode:04o}, readable by others; run `chmod 600 {file}`" in str(err.value)
    assert "s3cr3t-value" not in str(err.value)


def test_esc_shared_with_the_stack_passes_over_its_flags_and_lists(esc_path):
    """The stack's own config sits beside the secrets; `esc env open` prints it as JSON."""
    esc_path(
        stdout=json.dumps(
            {
                "pulumiConfig": {
                    "oceanid-cluster:enableNodeProvisioning": True,
                    "oceanid-cluster:nodeCount": 3,
                    "oceanid-cluster:sshAllowedCidrs": ["10.0.0.0/8"],
                    "oceanid-cluster:nodes": {"tethys": {"ip": "192.0.2.1"}},
                    "oceanid-cluster:cloudflareApiToken": "s3cr3t-value",
                },
                "environmentVariables": {"PULUMI_CONFIG_PASSPHRASE": "x"},
            }
        )
    )
    found = secrets.load(sources=["esc"], esc_environment="a/b", environ={})
    assert found["cloudflareApiToken"] == "s3cr3t-value"
    assert "enableNodeProvisioning" not in found and "sshAllowedCidrs" not in found


@pytest.mark.parametrize(
    ("value", "kind"), [(True, "bool"), (["a", "b"], "list"), ({"value": "x"}, "dict")]
)
def test_esc_key_the_deploy_reads_must_be_a_string(esc_path, value, kind):
    esc_path(stdout=json.dumps({"pulumiConfig": {"oceanid-cluster:k3s_token": value}}))
    with pytest.raises(SecretsError) as err:
        secrets.load(sources=["esc"], esc_environment="a/b", environ={})
    assert str(err.value) == (
        f"ESC a/b: key k3s_token holds a {kind}; secrets are strings: store it as a quoted string"
    )


def test_a_key_named_by_a_host_is_read_as_a_string_too(esc_path):
    """Keys outside KNOWN_KEYS that a host's settings name (a second GPU host's tunnel)."""
    esc_path(stdout=json.dumps({"pulumiConfig": {"oceanid-cluster:node2Token": False}}))
    with pytest.raises(SecretsError, match="key node2Token holds a bool"):
        secrets.load(sources=["esc"], esc_environment="a/b", environ={}, keys=["node2Token"])


def test_file_shaped_like_esc_passes_over_the_stacks_flags(tmp_path):
    file = tmp_path / "esc.yaml"
    file.write_text(
        "pulumiConfig:\n  oceanid-cluster:enableControlPlaneLb: false\n"
        "  oceanid-cluster:cloudflareZoneId: zone\n"
    )
    file.chmod(0o600)
    assert secrets.read_file(file) == {"cloudflarezoneid": "zone"}


def test_secrets_file_setting_is_read_when_the_variable_is_unset(tmp_path):
    named = tmp_path / "site.yaml"
    named.write_text("cloudflareZoneId: from-setting\n")
    named.chmod(0o600)
    found = secrets.load(
        sources=["file"], esc_environment="a/b", environ={}, secrets_file=str(named)
    )
    assert (found["cloudflareZoneId"], found.origin("cloudflareZoneId")) == ("from-setting", "file")


def test_secrets_file_variable_wins_over_the_setting(tmp_path):
    named, chosen = tmp_path / "site.yaml", tmp_path / "chosen.yaml"
    named.write_text("cloudflareZoneId: from-setting\n")
    chosen.write_text("cloudflareZoneId: from-variable\n")
    for file in (named, chosen):
        file.chmod(0o600)
    environ = {"SECRETS_FILE": str(chosen)}
    found = secrets.load(
        sources=["file"], esc_environment="a/b", environ=environ, secrets_file=str(named)
    )
    assert found["cloudflareZoneId"] == "from-variable"


def test_secrets_file_setting_others_can_read_is_refused(tmp_path):
    named = tmp_path / "site.yaml"
    named.write_text("cloudflareApiToken: s3cr3t-value\n")
    named.chmod(0o644)
    with pytest.raises(SecretsError) as err:
        secrets.load(sources=["file"], esc_environment="a/b", environ={}, secrets_file=str(named))
    assert str(err.value).startswith(f"secrets: secrets_file {named} is mode 0644")
    assert "s3cr3t-value" not in str(err.value)


# ---- a secret copied into a file or a Secret is one line


def test_a_yaml_block_with_its_final_newline_is_refused_naming_key_and_source(tmp_path):
    """`key: |` keeps the final newline: a token "abc\\n" would reach the Secret as it is."""
    file = tmp_path / "s.yaml"
    file.write_text("labelStudioApiToken: |\n  abc123secret\nk3s_token: 'K10abc'\n")
    file.chmod(0o600)
    found = secrets.load(
        sources=["file"], esc_environment="x/y", environ={"SECRETS_FILE": str(file)}
    )
    assert found["labelStudioApiToken"] == "abc123secret\n"  # read as stored, never altered
    assert found.line_problems(secrets.KNOWN_KEYS) == [
        "labelStudioApiToken: ends in a newline (from the secrets file); a secret the deploy "
        "copies into files and Secrets must be one line without control characters: store it "
        "without (in YAML: a quoted string, or |- rather than |)"
    ]


@pytest.mark.parametrize("value", ["abc\n", "a\rb", "x\x00", "a\nb", "tab\there", "x\u2028y"])
def test_a_control_character_in_any_secret_is_refused_without_echoing_it(value):
    found = secrets.load(
        sources=["env"], esc_environment="x/y", environ={"CLOUDFLARE_API_TOKEN": value}
    )
    (problem,) = found.line_problems(secrets.KNOWN_KEYS)
    assert problem.startswith("cloudflareApiToken: ")
    assert "(from the environment)" in problem
    assert "must be one line without control characters" in problem
    assert value.strip() not in problem and repr(value) not in problem


def test_tunnel_credentials_may_span_lines_and_each_key_is_reported_once():
    found = secrets.Secrets(
        values={
            "cloudflarenodetunneltoken": "wrapped\nbase64\n",
            "cloudflarenode2tunneltoken": "{\n}\n",
            "k3stoken": "t\n",
        },
        origins={"k3stoken": "esc"},
    )
    keys = [*secrets.KNOWN_KEYS, "k3sToken", "cloudflareNode2TunnelToken"]
    assert found.line_problems(keys, multiline=["cloudflareNode2TunnelToken"]) == [
        "k3s_token: ends in a newline (from ESC); a secret the deploy copies into files and "
        "Secrets must be one line without control characters: store it without"
    ]


def test_an_environment_variable_overrides_esc_with_the_default_order(esc_path, data):
    """Issue 23: a value set in the environment for one run wins over ESC's (the shipped
    order is env, esc, file), and the override is said by name, never by value."""
    order = data["secret_sources"]  # group_data/all.py as shipped
    assert order.index("env") < order.index("esc") < order.index("file")
    esc_path(
        stdout=json.dumps(
            {
                "pulumiConfig": {
                    "oceanid-cluster:cloudflareApiToken": "esc-token",
                    "oceanid-cluster:cloudflareZoneId": "same",
                }
            }
        )
    )
    environ = {"CLOUDFLARE_API_TOKEN": "env-token", "CLOUDFLARE_ZONE_ID": "same"}
    found = secrets.load(sources=order, esc_environment="a/b", environ=environ)
    assert found["cloudflareApiToken"] == "env-token"
    assert found.origin("cloudflareApiToken") == "env"
    lines = secrets.override_lines(found, ["cloudflareApiToken", "cloudflareZoneId"])
    assert lines == [
        "cloudflareApiToken: the value from the environment (CLOUDFLARE_API_TOKEN) wins over ESC's"
    ]
    assert "env-token" not in lines[0] and "esc-token" not in lines[0]


def test_the_database_url_parts_never_show_the_password():
    """`make check` and Label Studio's env read the same parts; a repr of them (a log line, a
    traceback) names the host and the user, never the password."""
    db = secrets.database_url("postgresql://ls:p%40ss-w0rd@db.example:6543/label%20studio")
    assert (db.host, db.port, db.name, db.user, db.password) == (
        "db.example",
        6543,
        "label studio",
        "ls",
        "p@ss-w0rd",
    )
    assert "p@ss-w0rd" not in repr(db) and "p%40ss" not in repr(db)
    assert "db.example" in repr(db)
    with pytest.raises(ValueError, match="labelStudioDbUrl: no password") as raised:
        secrets.database_url("postgresql://ls@db.example/ls")
    assert "db.example" not in str(raised.value)
