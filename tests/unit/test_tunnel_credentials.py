"""Every tunnel credential shape of design.md §3, good and bad, and the tunnel-ID check."""

import base64
import json
import textwrap

import pytest

from oceanid.tunnel_credentials import CredentialError, parse, parse_for_tunnel

ACCOUNT = "0123456789abcdef0123456789abcdef"
TUNNEL = "6ff42ae2-765d-4adf-8112-31c55c1551ef"
OTHER = "11111111-2222-4333-8444-555555555555"
SECRET = base64.b64encode(b"s" * 32).decode()


def token(tunnel=TUNNEL, **extra):
    body = {"a": ACCOUNT, "t": tunnel, "s": SECRET, **extra}
    return base64.b64encode(json.dumps(body).encode()).decode()


def credentials_json(tunnel=TUNNEL):
    return json.dumps({"AccountTag": ACCOUNT, "TunnelSecret": SECRET, "TunnelID": tunnel})


def test_raw_connector_token():
    cred = parse(token(), key="k")
    assert (cred.shape, cred.kind, cred.tunnel_id, cred.account_tag) == (
        "token",
        "token",
        TUNNEL,
        ACCOUNT,
    )
    assert json.loads(base64.b64decode(cred.token())) == {"a": ACCOUNT, "t": TUNNEL, "s": SECRET}


def test_base64_credentials_json_wrapped_at_76_columns():
    encoded = base64.b64encode(credentials_json().encode()).decode()
    wrapped = "\n".join(textwrap.wrap(encoded, 76)) + "\n"
    assert "\n" in wrapped.strip()
    cred = parse(wrapped, key="k")
    assert (cred.shape, cred.kind, cred.tunnel_id) == (
        "credentials-base64",
        "credentials-file",
        TUNNEL,
    )
    assert json.loads(cred.file_content()) == json.loads(credentials_json())


def test_base64_unpadded_and_urlsafe():
    encoded = base64.urlsafe_b64encode(credentials_json().encode()).decode().rstrip("=")
    assert parse(encoded, key="k").tunnel_id == TUNNEL


def test_credentials_json_text():
    cred = parse("  " + credentials_json() + "\n", key="k")
    assert cred.shape == "credentials-json"
    assert cred.kind == "credentials-file"


def test_uppercase_tunnel_id_is_normalised():
    assert parse(token(TUNNEL.upper()), key="k").tunnel_id == TUNNEL


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ("", "empty"),
        ("not a token at all!", "not base64 and not JSON"),
        (base64.b64encode(b"plain text").decode(), "base64 that does not decode to JSON"),
        ('{"AccountTag": "x",', "looks like JSON but does not parse"),
        (json.dumps({"foo": 1}), "JSON credential has keys [foo]"),
        (json.dumps(["a"]), "JSON is not an object"),
        (token("not-a-uuid"), "tunnel ID inside is not a UUID"),
        (json.dumps({"a": ACCOUNT, "t": TUNNEL, "s": ""}), "empty or not a string"),
        # `re.match(…$)` took a UUID followed by a newline
        (token(TUNNEL + "\n"), "holds a newline or a control character"),
        (json.dumps({"a": ACCOUNT, "t": TUNNEL, "s": SECRET + "\r"}), "holds a newline"),
        (json.dumps({"a": ACCOUNT + "\x00", "t": TUNNEL, "s": SECRET}), "holds a newline"),
    ],
)
def test_bad_shapes_are_refused_with_the_key_name(value, expect):
    with pytest.raises(CredentialError) as err:
        parse(value, key="cloudflareNodeTunnelToken")
    message = str(err.value)
    assert message.startswith("cloudflareNodeTunnelToken: ")
    assert expect in message
    assert SECRET not in message


def test_tunnel_id_mismatch_names_both_keys_and_hides_the_secret():
    with pytest.raises(CredentialError) as err:
        parse_for_tunnel(
            token(OTHER),
            key="cloudflareNodeTunnelToken",
            tunnel_id=TUNNEL,
            id_key="cloudflareNodeTunnelId",
        )
    message = str(err.value)
    assert "cloudflareNodeTunnelId" in message and OTHER in message and TUNNEL in message
    assert "Invalid tunnel secret" in message
    assert SECRET not in message and token(OTHER) not in message


def test_repr_never_shows_the_secret():
    cred = parse(token(), key="k")
    assert SECRET not in repr(cred)
    assert SECRET not in str(cred)


def test_a_credential_spanning_lines_is_read_and_written_as_one_line():
    """The shapes that span lines (wrapped base64, a credentials.json text with a final
    newline) are read; what the connector gets is the parsed credential, not the value."""
    wrapped = "\n".join(textwrap.wrap(base64.b64encode(credentials_json().encode()).decode(), 76))
    for value in (wrapped + "\n", credentials_json() + "\n", token() + "\n"):
        cred = parse(value, key="k")
        assert cred.tunnel_id == TUNNEL
        assert cred.file_content().count("\n") in (1, 5)  # the token's one line, or the JSON
        assert "\n\n" not in cred.file_content()
