"""Counting a host's round trips from its sshd log (lab/roundtrips.py), on real log lines."""

from __future__ import annotations

from lab.roundtrips import Count, parse

LOG = """\
Accepted key ED25519 SHA256:h4t found at /root/.ssh/authorized_keys:1
Accepted publickey for root from 10.77.0.1 port 53952 ssh2: ED25519 SHA256:h4t
pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)
Starting session: command for root from 10.77.0.1 port 53952 id 0
Starting session: subsystem 'sftp' for root from 10.77.0.1 port 53952 id 1
Accepted publickey for oceanid from 10.77.0.1 port 41000 ssh2: ED25519 SHA256:h4t
Starting session: command for oceanid from 10.77.0.1 port 41000 id 0
pam_unix(sshd:session): session closed for user root
Accepted publickey for root from 10.77.0.1 port 60001 ssh2: ED25519 SHA256:h4t
Starting session: command for root from 10.77.0.1 port 60001 id 0
"""


def test_commands_are_counted_per_connection_less_the_readers_own():
    assert parse(LOG.splitlines()) == Count(connections=2, commands=3)


def test_nothing_but_the_reader_is_nothing():
    reader = LOG.splitlines()[-2:]
    assert parse(reader) == Count(0, 0)
    assert parse([]) == Count(0, 0)
