"""Races between runs (issue 19, items 7 and 8): one deploy per host at a time, a restart a
dead run owed, and the operators' keys in authorized_keys.

Each test breaks the converged lab on purpose and leaves it converged again.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest

from deploys.gpu_host import cloudflared_node
from lab.converge import lab_env, pyinfra
from lab.topology import REPO
from operations._desired import OWED_DIR
from operations._lock import LOCK
from tests.lab import ssh

pytestmark = pytest.mark.lab

OWED = f"{OWED_DIR}/{cloudflared_node.UNIT}"
# first in sudo's secure_path, before /usr/bin
FAKE_SYSTEMCTL = "/usr/local/sbin/systemctl"


def invocation(name: str, unit: str) -> str:
    """systemd's id of the unit's current run: a new one after every (re)start."""
    done = ssh(name, f"systemctl show -p InvocationID --value {unit}")
    return done.stdout.strip()


def test_a_restart_a_dead_run_owed_is_done_by_the_next_run(converged):
    """calypso's tunnel config drifts; the converge that puts it back dies before it restarts
    cloudflared-node (a `systemctl` first in sudo's PATH refuses that restart, as if the run
    were killed there; the unit runs on, on its old config). The config is in place from
    then on, yet the next converge restarts the unit, since the marker written with the file
    says the restart is owed; then nothing changes. (Masking the unit is no such fault: inside
    the lab's systemd a restart of a running, masked unit succeeds.)"""
    unit = cloudflared_node.UNIT
    config = cloudflared_node.CONFIG
    assert ssh("calypso", f"echo '# drift' | sudo tee -a {config} >/dev/null").returncode == 0
    before = invocation("calypso", unit)
    refuse = f"restart {unit}"
    wrapper = (
        "#!/bin/sh\n"
        f'case "$*" in *{shlex.quote(refuse)}*) echo "lab: {refuse} refused" >&2; exit 1;; esac\n'
        'exec /usr/bin/systemctl "$@"\n'
    )
    put = f"printf %s {shlex.quote(wrapper)} | sudo tee {FAKE_SYSTEMCTL} >/dev/null"
    assert ssh("calypso", f"{put} && sudo chmod 0755 {FAKE_SYSTEMCTL}").returncode == 0
    try:
        died = pyinfra("deploys/gpu.py", "--limit", "calypso")
    finally:
        ssh("calypso", f"sudo rm -f {FAKE_SYSTEMCTL}")
    assert died.returncode != 0, "the run whose restart could not happen exited 0"
    assert "# drift" not in ssh("calypso", f"sudo cat {config}").stdout, "config not replaced"
    assert ssh("calypso", f"sudo test -e {OWED}").returncode == 0, "no owed-restart marker"
    assert invocation("calypso", unit) == before, "the unit was restarted after all"
    owed = pyinfra("deploys/gpu.py", "--limit", "calypso")
    assert owed.returncode == 0, owed.output[-4000:]
    assert invocation("calypso", unit) != before, "the owed restart was not done"
    assert ssh("calypso", f"sudo test -e {OWED}").returncode == 1, "the marker stayed"
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed


def test_a_second_deploy_at_once_is_refused_naming_the_first(converged):
    """A run waiting at pyinfra's "Press enter to execute" holds calypso's lock (its
    connection is open); a second run fails at once naming it, and changes nothing; once the
    first has gone, the next converge runs and changes nothing."""
    first = subprocess.Popen(
        [str(REPO / ".venv/bin/pyinfra"), "inventories/lab.py", "deploys/gpu.py", "--limit",
         "calypso"],
        cwd=REPO, env=lab_env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert first.stderr is not None
        seen = ""
        deadline = time.monotonic() + 300
        while "Press enter to execute" not in seen and time.monotonic() < deadline:
            seen += first.stderr.read(1) or ""
            assert first.poll() is None or "Press enter" in seen, seen[-3000:]
        assert "Press enter to execute" in seen, seen[-3000:]
        holder = ssh("calypso", f"cat {LOCK}").stdout
        assert f"pid={first.pid}\n" in holder, holder
        second = pyinfra("deploys/gpu.py", "--limit", "calypso")
        assert second.returncode != 0
        # refused while its deploy file loads, its only host failed, pyinfra stops there
        # ("No hosts remaining!") with no JSON results: the failure is read from its words
        assert "No hosts remaining!" in second.output, second.output[-3000:]
        assert "calypso: another deploy is running here: " in second.output
        assert f"(pyinfra pid {first.pid}, run " in second.output, second.output[-3000:]
        assert f"sudo rm -f {LOCK}" in second.output
        assert second.changed == {}
        assert ssh("calypso", f"cat {LOCK}").stdout == holder  # still the first's
    finally:
        if first.stdin is not None:
            first.stdin.close()  # no answer: the first run ends without executing
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed


def test_a_key_removed_from_admin_ssh_keys_goes_and_a_hand_added_one_stays(converged, tmp_path):
    """A second operator's key is declared, then no longer: it is removed from calypso's
    authorized_keys; a key added there by hand stays throughout; the lab's own key (still
    declared) stays; the converge after that changes nothing."""
    keys = {}
    for name in ("declared", "by-hand"):
        path = tmp_path / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                        str(path)], check=True)  # fmt: skip
        keys[name] = path.with_suffix(".pub").read_text().strip()
    authorized = "/home/oceanid/.ssh/authorized_keys"
    lab_keys = json.loads(
        subprocess.run([str(REPO / ".venv/bin/python"), "-c",
                        "import runpy, json; print(json.dumps(runpy.run_path("
                        "'inventories/group_data/all.py')['admin_ssh_keys']))"],
                       cwd=REPO, capture_output=True, text=True, check=True).stdout
    )  # fmt: skip
    add = f"echo {keys['by-hand']!r} | sudo tee -a {authorized} >/dev/null"
    assert ssh("calypso", add).returncode == 0
    try:
        declared = json.dumps([*lab_keys, keys["declared"]])
        added = pyinfra("deploys/gpu.py", "--limit", "calypso", f"--data=admin_ssh_keys={declared}")
        assert added.returncode == 0, added.output[-4000:]
        lines = ssh("calypso", f"sudo cat {authorized}").stdout
        assert keys["declared"] in lines and keys["by-hand"] in lines
        removed = pyinfra("deploys/gpu.py", "--limit", "calypso")
        assert removed.returncode == 0, removed.output[-4000:]
        lines = ssh("calypso", f"sudo cat {authorized}").stdout
        assert keys["declared"].split()[1] not in lines, "the key no longer declared stayed"
        assert keys["by-hand"] in lines, "the key added by hand was removed"
        for key in lab_keys:
            assert key.split()[1] in lines
        again = pyinfra("deploys/site.py")
        assert again.returncode == 0 and again.changed == {}, again.changed
    finally:
        ssh("calypso", f"sudo sed -i '/ by-hand$/d' {authorized}")
