"""A third-party apt repository whose signing key is pinned by fingerprint.

The key is downloaded, its fingerprint checked with `gpg --show-keys` before it is
trusted, and only then written (dearmored) to its keyring; a key with another
fingerprint fails the run and leaves the old keyring and sources alone.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from operations.managed import Manifest


@operation()
def signed_repository(
    manifest: Manifest,
    key_url: str,
    fingerprint: str,
    keyring: str,
    sources_list: str,
):
    """
    Trust a repository's key (by fingerprint) and refresh apt when its sources file is new.

    + manifest: the role's Manifest (declares `keyring`, and `sources_list` as a file)
    + key_url: where the ASCII-armoured public key is published
    + fingerprint: the 40-hex-digit fingerprint the key must have
    + keyring: the dearmored keyring the sources file's `signed-by` names
    + sources_list: the managed sources file (written by the files operation)
    """
    have_key = manifest.state()["paths"].get(keyring) is not None
    if have_key and not manifest.will_change([sources_list]):
        host.noop(f"repository key {fingerprint[-16:]} trusted and sources in place")
        return
    if not have_key:
        tmp = QuoteString(f"{keyring}.oceanid-new")
        yield StringCommand(
            "key=$(mktemp)",
            "&&",
            "curl",
            "-fsSL",
            "-o",
            '"$key"',
            QuoteString(key_url),
            "&&",
            "got=$(gpg",
            "--show-keys",
            "--with-colons",
            '"$key"',
            "|",
            "awk",
            "-F:",
            "'$1==\"fpr\"{print $10; exit}')",
            "&&",
            "if",
            "[",
            '"$got"',
            "!=",
            fingerprint,
            "];",
            "then",
            "rm",
            "-f",
            '"$key";',
            "echo",
            QuoteString(f"{key_url}: expected key {fingerprint},"),
            '"got $got"',
            ">&2;",
            "exit",
            "1;",
            "fi",
            "&&",
            "gpg",
            "--dearmor",
            "--yes",
            "-o",
            tmp,
            '"$key"',
            "&&",
            "chmod",
            "0644",
            tmp,
            "&&",
            "mv",
            "-f",
            tmp,
            QuoteString(keyring),
            "&&",
            "rm",
            "-f",
            '"$key"',
        )
    yield StringCommand("DEBIAN_FRONTEND=noninteractive", "apt-get", "update", "-qq")
