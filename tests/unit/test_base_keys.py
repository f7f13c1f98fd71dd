"""The operators' authorized_keys (deploys/base): what the deploy declared and declares no
more is removed, what it never declared stays, and a second converge changes nothing.

The base's own functions on the state its fact reads (`ManagedState`'s shape), then the
files operation on the result, through the same fake host as tests/unit/test_operations.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pyinfra.context import ctx_host, ctx_state
from pyinfra_testing.util import FakeHost, FakeState

from deploys import base
from facts.managed import ManagedState, PathState
from operations import _desired

KEYS = "/home/oceanid/.ssh/authorized_keys"
RECORD = base.keys_record("oceanid")
OLD = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOldOldOldOldOldOldOldOldOldOldOldOldOld ann@old-laptop"
KEEP = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeepKeepKeepKeepKeepKeepKeepKeepKeepKe carl@desk"
NEW = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAINewNewNewNewNewNew= dana@new"
HAND = 'from="10.0.0.1" ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQHandHandHand bob@added-by-hand'


def plan(*keys: str) -> SimpleNamespace:
    """What the base reads of a host's plan (oceanid.model.HostPlan)."""
    settings = SimpleNamespace(admin_user="oceanid", admin_ssh_keys=list(keys), base_packages=[])
    return SimpleNamespace(name="calypso", settings=settings)


@pytest.fixture(autouse=True)
def _fresh_state_cache():
    _desired.STATE_CACHE.clear()
    yield
    _desired.STATE_CACHE.clear()


def converge(keys: list[str], authorized: bytes | None, record: bytes | None) -> dict:
    """The base's key files (path -> ManagedFile) for the keys declared, on a host whose
    authorized_keys and key record are as given."""
    _desired.STATE_CACHE.clear()  # each converge is a run of its own
    host_plan = plan(*keys)
    desired = base.declare(host_plan)
    present = {}
    for path, content in ((KEYS, authorized), (RECORD, record)):
        if content is not None:
            present[path] = PathState("file", "0600" if path == KEYS else "0644", "", "", "")
    state = {
        "arch": "amd64",
        "python": "3.11",
        "paths": present,
        "packages": {},
        "users": {},
        "contents": {KEYS: authorized, RECORD: record},
        "units": {},
        "trees": {},
    }
    host = FakeHost(FakeState(), "calypso", facts={}, data={})
    host.get_fact = lambda cls, *a, **k: {ManagedState: state}[cls]  # type: ignore[method-assign]
    with ctx_state.use(FakeState()), ctx_host.use(host):
        files = {f.path: f for f in base.authorized_keys(host_plan, desired)}
    return files


def test_a_key_declared_no_more_goes_and_one_added_by_hand_stays() -> None:
    before = "\n".join([OLD, HAND, KEEP]) + "\n"
    record = "".join(f"{base.key_of(k)}\n" for k in sorted([OLD, KEEP])).encode()
    files = converge([KEEP, NEW], before.encode(), record)
    assert files[KEYS].content.decode().splitlines() == [HAND, KEEP, NEW]
    assert files[KEYS].shared and files[KEYS].mode == "0600"
    assert files[RECORD].content.decode().splitlines() == sorted(
        [base.key_of(KEEP), base.key_of(NEW)]
    )
    # the next converge reads what this one wrote: the same files, so nothing changes
    again = converge([KEEP, NEW], files[KEYS].content, files[RECORD].content)
    assert again[KEYS].content == files[KEYS].content
    assert again[RECORD].content == files[RECORD].content


def test_a_key_is_known_by_its_material_whatever_its_line_became() -> None:
    """An operator edited the deployed line (an option, another comment): still the deploy's."""
    edited = "no-pty ssh-ed25519 " + OLD.split()[1] + " renamed by hand\n"
    files = converge([KEEP], (edited + KEEP + "\n").encode(), f"{base.key_of(OLD)}\n".encode())
    assert files[KEYS].content.decode() == KEEP + "\n"


def test_no_keys_declared_any_more_removes_them_all_and_the_record_is_swept() -> None:
    before = "\n".join([HAND, KEEP, NEW]) + "\n"
    record = "".join(f"{base.key_of(k)}\n" for k in (KEEP, NEW)).encode()
    files = converge([], before.encode(), record)
    assert files[KEYS].content.decode() == HAND + "\n"
    assert RECORD not in files  # not declared: the base's sweep removes it, after the file
    assert converge([], files[KEYS].content, None) == {}  # then nothing is touched


def test_a_key_there_before_the_deploy_declared_it_is_the_deploys_from_then_on() -> None:
    files = converge([KEEP], (HAND + "\n" + KEEP + "\n").encode(), None)
    assert files[KEYS].content.decode().splitlines() == [HAND, KEEP]  # not added twice
    assert files[RECORD].content.decode() == f"{base.key_of(KEEP)}\n"


def test_no_keys_ever_touches_nothing() -> None:
    assert converge([], (HAND + "\n").encode(), None) == {}
    assert converge([], None, None) == {}


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (KEEP, " ".join(KEEP.split()[:2])),
        (HAND, " ".join(HAND.split()[1:3])),
        (
            'command="echo a b" sk-ssh-ed25519@openssh.com AAAAGnNr x',
            "sk-ssh-ed25519@openssh.com AAAAGnNr",
        ),
        ("# ssh-ed25519 is the type I use", None),
        ("", None),
    ],
)
def test_the_key_of_a_line(line: str, key: str | None) -> None:
    assert base.key_of(line) == key
