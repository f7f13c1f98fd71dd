"""A third-party apt repository whose signing key is pinned by fingerprint.

The installed keyring is checked against the pin on every run, from its bytes in the
role's fact: a keyring that was replaced, or one a failed earlier run left behind, must not
stay trusted just because it exists. A missing or wrong keyring is replaced by the
published key, and only once that key carries the pinned fingerprint (checked with
`gpg --show-keys` on the host); a key with another fingerprint fails the run and leaves
the old keyring and the sources alone. The sources file is written after that check, in
the same operation, so apt never points at a keyring that is missing or unverified.
"""

from __future__ import annotations

import hashlib

from pyinfra import host
from pyinfra.api import OperationValueError, QuoteString, StringCommand, operation
from pyinfra.api.command import make_formatted_string_command

from operations import progress
from operations._desired import attributes_differ
from operations._shell import fail, replace_commands
from operations.managed import DesiredState, ManagedFile

# The key's download gives up rather than hold the run: KEY_CONNECT_WAIT seconds to connect,
# KEY_WAIT for one try (a key is a few kB), and no new try after KEY_RETRY_WAIT seconds.
KEY_CONNECT_WAIT = 10
KEY_WAIT = 60
KEY_RETRY_WAIT = 120

# The primary key of a v4 OpenPGP public key packet (RFC 4880 section 12.2); subkeys (tag
# 14) are bound to it and signed by it, so only primaries decide whom apt trusts.
_PUBLIC_KEY_TAG = 6


def primary_fingerprints(keyring: bytes) -> list[str]:
    """The fingerprints of the primary keys in a binary (dearmored) OpenPGP keyring.

    A v4 fingerprint is SHA-1 over 0x99, the packet body's two-byte length, and the body
    (RFC 4880 section 12.2). Anything this cannot read (ASCII armour, a v5/v6 key, a cut
    packet) raises ValueError: such a keyring is not the pinned one, and is replaced.
    """
    found = []
    position = 0
    while position < len(keyring):
        header = keyring[position]
        if not header & 0x80:
            raise ValueError(f"no OpenPGP packet at byte {position}")
        if header & 0x40:  # new format: tag in 6 bits, 1-, 2- or 5-octet length
            tag = header & 0x3F
            first = keyring[position + 1] if position + 1 < len(keyring) else 0
            if first < 192:
                length, start = first, position + 2
            elif first < 224:
                second = keyring[position + 2] if position + 2 < len(keyring) else 0
                length, start = ((first - 192) << 8) + second + 192, position + 3
            elif first == 255:
                length = int.from_bytes(keyring[position + 2 : position + 6], "big")
                start = position + 6
            else:
                raise ValueError(f"partial body length at byte {position}: not a keyring")
        else:  # old format: tag in 4 bits, length of 1, 2 or 4 octets
            tag = (header >> 2) & 0x0F
            size = {0: 1, 1: 2, 2: 4}.get(header & 0x03)
            if size is None:
                raise ValueError(f"indeterminate length at byte {position}: not a keyring")
            length = int.from_bytes(keyring[position + 1 : position + 1 + size], "big")
            start = position + 1 + size
        body = keyring[start : start + length]
        if len(body) != length:
            raise ValueError(f"packet at byte {position} is cut short")
        if tag == _PUBLIC_KEY_TAG:
            if body[:1] != b"\x04":
                raise ValueError(f"key packet at byte {position} is not version 4")
            digest = hashlib.sha1(b"\x99" + length.to_bytes(2, "big") + body, usedforsecurity=False)
            found.append(digest.hexdigest().upper())
        position = start + length
    return found


def _holds_only(keyring: bytes | None, fingerprint: str) -> bool:
    if keyring is None:
        return False
    try:
        return primary_fingerprints(keyring) == [fingerprint]
    except ValueError:
        return False


def _fetch_and_verify(key_url: str, fingerprint: str, keyring: str) -> StringCommand:
    """Download the key into a private temporary folder, refuse it unless it is exactly one
    primary key with the pinned fingerprint, then dearmor it beside the keyring and rename."""
    # awk: the fingerprint of the one primary key (`pub`) the file holds, nothing if several
    single_primary = '$1=="pub"{n++; p=1; next} p&&$1=="fpr"{f=$10} {p=0} END{if(n==1)print f}'
    refused = StringCommand(
        QuoteString(f"{key_url}: expected the single key {fingerprint},"),
        '"got ${got:-none or several};"',
        QuoteString(f"{keyring} was left as it was"),
    )
    fetch = make_formatted_string_command(
        "curl -fsSL --retry 3 --connect-timeout {connect_wait} --max-time {wait} "
        "--retry-max-time {retry_wait} -o {key} {url}",
        connect_wait=KEY_CONNECT_WAIT,
        wait=KEY_WAIT,
        retry_wait=KEY_RETRY_WAIT,
        key='"$d/key"',
        url=QuoteString(key_url),
    )
    # a key is a few kB: a stalled download says what it waits for every progress.EVERY s
    limit = KEY_RETRY_WAIT + KEY_WAIT
    command = make_formatted_string_command(
        "d=$(mktemp -d) && trap {cleanup} EXIT && {{ {fetch} ; }} && "
        "got=$(gpg --homedir {d} --show-keys --with-colons {key} | awk -F: {single_primary}) && "
        "if [ {got} != {fingerprint} ]; then {refuse} fi && "
        "gpg --homedir {d} --dearmor --yes -o {new} {key} && "
        "chmod 0644 {new} && mv -f {new} {keyring}",
        cleanup=QuoteString('rm -rf "$d"'),
        fetch=StringCommand(*progress.watch(f"the key {key_url}", limit, fetch)),
        d='"$d"',
        key='"$d/key"',
        single_primary=QuoteString(single_primary),
        got='"$got"',
        fingerprint=QuoteString(fingerprint),
        refuse=fail(refused),
        new=QuoteString(f"{keyring}.oceanid-new"),
        keyring=QuoteString(keyring),
    )
    return progress.Shown(command)


@operation()
def signed_repository(
    desired: DesiredState,
    *,
    key_url: str,
    fingerprint: str,
    keyring: str,
    sources_list: str,
    repository: str,
):
    """
    Trust a repository's key (by fingerprint), then point apt at it and refresh apt.

    + desired: the role's DesiredState; its `read` lists `keyring` and `sources_list`, so each
      run sees both in the role's one fact
    + key_url: where the ASCII-armoured public key is published
    + fingerprint: the 40-hex-digit fingerprint the key must have
    + keyring: the dearmored keyring the sources file's `signed-by` names
    + sources_list: the repository's sources file
    + repository: the `URI suite [components]` of its deb line; this operation writes
      `deb [signed-by=<keyring>] <repository>` to `sources_list`, only after the key is
      verified, so apt never points at a keyring that is missing or wrong

    The keyring passes when it holds exactly one primary key, the pinned one; anything
    else (missing, another key, an extra key, unreadable) is replaced by the verified
    download, or the run fails and apt is left as it was.
    """
    fingerprint = fingerprint.upper()
    missing = [path for path in (keyring, sources_list) if path not in desired.read]
    if missing:
        raise OperationValueError(
            f"{', '.join(missing)}: add to the `read` list of manifest {desired} so each run "
            "can check it (apt_repo.signed_repository)"
        )
    current = desired.state()
    key_ok = _holds_only(current["contents"].get(keyring), fingerprint)
    sources = ManagedFile(sources_list, f"deb [signed-by={keyring}] {repository}\n".encode())
    now = current["paths"].get(sources_list)
    sources_ok = (
        now is not None
        and now.sha256 == sources.sha256
        and not attributes_differ(now, sources.mode, sources.user, sources.group)
    )
    if key_ok and sources_ok:
        host.noop(f"{keyring} holds only key {fingerprint}, and {sources_list} is in place")
        return
    if not key_ok:
        yield _fetch_and_verify(key_url, fingerprint, keyring)
    if not sources_ok:
        yield from replace_commands(sources)
    yield StringCommand("DEBIAN_FRONTEND=noninteractive", "apt-get", "update", "-qq")
