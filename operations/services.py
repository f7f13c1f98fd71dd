"""A systemd unit brought to its wanted state, restarted only when its inputs changed.

The unit's state (enabled, active) comes from the role's batched fact; whether its unit
file, binary, config or credentials change comes from the same desired state, decided before
anything runs. After a start or restart the unit must still be active a moment later,
otherwise the run fails with the unit's last log lines instead of reporting success.

A `Type=notify` unit with `TimeoutStartSec=0` (cloudflared's: started means connected to
the edge) may stay "activating" for as long as the network is down; systemd keeps trying,
but the deploy waits at most START_WAIT for it and then fails with the unit's log.

A restart is owed from the moment a file the unit reads is renamed into place (the files and
binaries operations leave a marker in that same command, for the units `unit` declared as
reading it) until the restart succeeds and removes the marker; a run killed in between
leaves it, and the next run restarts the unit although its files are already in place.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, operation

from operations import managed, progress
from operations._desired import OWED_DIR
from operations.managed import DesiredState

SETTLE = 2  # seconds a started unit must stay active
START_WAIT = 150  # seconds the deploy waits for a unit to finish starting
HEALTH_WAIT = 120  # seconds a started unit's own health check may take to pass


def _started_and_alive(
    verb: str,
    unit: str,
    health: str | None = None,
    rollback: list[str] | None = None,
    settle: bool = False,
) -> StringCommand:
    """`systemctl <verb>`, checked; `settle`: then remove the unit's owed-restart marker
    (only after the unit came up: a failed restart stays owed to the next run)."""
    healthy: list = []
    if health:
        # the service's own check, retried for at most HEALTH_WAIT seconds
        loop = f"until {health}; do sleep {SETTLE}; done"
        check = ["timeout", str(HEALTH_WAIT), "sh", "-c", QuoteString(loop)]
        waited = progress.watch(f"{unit} to become healthy", HEALTH_WAIT, *check)
        healthy = ["&&", "{", *waited, ";", "}"]
    back: list = []
    if rollback:
        for path in rollback:
            previous = QuoteString(f"{path}.previous")
            back += ["if", "[", "-f", previous, "];", "then", "mv", "-f", previous]
            back += [QuoteString(path), ";", "fi;"]
        again = ["timeout", str(START_WAIT), "systemctl", "restart", unit]
        back += progress.watch(f"{unit} to restart on its previous binary", START_WAIT, *again)
        back += [";"]
        back += [
            "echo",
            QuoteString(
                f"{unit} was not healthy on its new binary: the previous binary "
                f"({', '.join(rollback)}) was put back and {unit} restarted on it; "
                "this run failed"
            ),
            ">&2;",
        ]
    what = "become healthy" if health else "become active"
    # each wait says what it waits for every progress.EVERY seconds, shown as it comes
    return progress.Shown(
        *progress.watch(
            f"{unit} to {verb}", START_WAIT, "timeout", str(START_WAIT), "systemctl", verb, unit
        ),
        "&&",
        "sleep",
        str(SETTLE),
        "&&",
        "systemctl",
        "is-active",
        "--quiet",
        unit,
        *healthy,
        "||",
        "{",
        "echo",
        f"'{unit} did not {what} within {START_WAIT}s or did not stay active; its last log lines:'",
        ">&2;",
        "journalctl",
        "-u",
        unit,
        "-n",
        "25",
        "--no-pager",
        ">&2;",
        *back,
        "exit",
        "1;",
        "}",
        *(["&&", "rm", "-f", QuoteString(f"{OWED_DIR}/{unit}")] if settle else []),
    )


def actions(
    desired: DesiredState,
    name: str,
    unit_file: str | None,
    inputs: list[str],
    *,
    restart: bool = False,
) -> list[str]:
    """What `unit` will do: any of daemon-reload, enable, start, restart; decided up front.

    When something the unit reads changes, it is restarted even if it was not running when
    the state was read: a package installed in the same run (haproxy, docker.io) starts its
    service from the files it ships, before ours replace them, so a plain start would be a
    no-op on a service still running the old configuration. `restart` starts a stopped unit.

    A unit that an earlier run owes a restart (it replaced a file the unit reads and was killed
    before the restart: the marker in `OWED_DIR`) is reloaded and restarted, although its
    files are in place now.
    """
    current = desired.state()["units"].get(name, {"enabled": "not-found", "active": "unknown"})
    owed = bool(current.get("owed"))
    reload = unit_file is not None and (owed or desired.will_change([unit_file]))
    todo = []
    if reload or current["enabled"] == "not-found":
        todo.append("daemon-reload")
    if current["enabled"] != "enabled":
        todo.append("enable")
    if reload or restart or owed or desired.will_change(inputs):
        todo.append("restart")
    elif current["active"] != "active":
        todo.append("start")
    return todo


@operation()
def unit_operation(
    desired: DesiredState,
    unit_name: str,
    unit_file: str | None,
    inputs: list[str],
    *,
    restart: bool = False,
    health: str | None = None,
    rollback: list[str] | None = None,
    around: tuple[FunctionCommand, FunctionCommand] | None = None,
):
    """
    Keep a systemd unit enabled and running; restart it when something it reads changed.

    + desired: the role's DesiredState (its units include `unit_name`)
    + unit_name: the unit, e.g. ``cloudflared-node.service``
    + unit_file: the unit file's path in the desired state (a change means daemon-reload), or
      None for a unit a package ships
    + inputs: the desired state's paths the service reads (binary, config, credentials)
    + restart: restart for a change the desired state's files do not show (a rebuilt environment)
    + health: a shell check of the service's own health after a (re)start (k3s: its API's
      /readyz), retried for at most HEALTH_WAIT seconds; default: active is healthy
    + rollback: binaries of the desired state whose replacement in this run is undone (their
      ``.previous`` put back, the unit restarted, the run failed) when the unit is not
      healthy after the (re)start
    + around: two commands run before and after the (re)start when one of `rollback`'s
      binaries that was there is replaced in this run (an upgrade): the first may stop the
      operation (k3s servers: one at a time, none after one that failed;
      `operations.k3s.server_turn`)
    """
    todo = actions(desired, unit_name, unit_file, inputs, restart=restart)
    if not todo:
        host.noop(f"{unit_name} is enabled and active, and nothing it reads changed")
        return
    current = desired.state()["paths"]
    replaced = [  # only a binary this run replaces, and that existed before, can go back
        path
        for path in rollback or []
        if current.get(path) is not None and desired.will_change([path])
    ]
    if "daemon-reload" in todo:
        yield "systemctl daemon-reload"
    if "enable" in todo:
        yield StringCommand("systemctl", "enable", unit_name)
    # a marker is there (an earlier run's), or this run's files and binaries write one
    owed = desired.state()["units"].get(unit_name, {}).get("owed") or any(
        desired.will_change([path]) for path in desired.restarts.get(unit_name, [])
    )
    upgrade = around is not None and bool(replaced)  # an upgrade: not a first install
    for verb in ("start", "restart"):
        if verb in todo:
            if upgrade:
                yield around[0]
            yield _started_and_alive(verb, unit_name, health, replaced, settle=bool(owed))
            if upgrade:
                yield around[1]
            break


def unit(
    *,
    desired: DesiredState,
    unit_name: str,
    unit_file: str | None,
    inputs: list[str],
    **arguments,
):
    """`unit_operation`, with what the unit reads declared in `desired` first (`reads`).

    Declared when the deploy file calls this, before any operation runs: the files and
    binaries operations, which run earlier, then leave the unit's owed-restart marker in the
    command that replaces what it reads, so a run killed before the restart leaves it owed.
    """
    desired.reads(unit_name, [path for path in (unit_file, *inputs) if path])
    return unit_operation(
        desired=desired, unit_name=unit_name, unit_file=unit_file, inputs=inputs, **arguments
    )


unit._inner = unit_operation._inner  # the operation's body, as pyinfra-testing calls it


def binary_service(
    desired: DesiredState,
    *,
    name: str,
    unit_name: str,
    unit_file: str | None,
    inputs: list[str],
    health: str | None = None,
    restart: bool = False,
    around: tuple[FunctionCommand, FunctionCommand] | None = None,
    serial: bool = False,
) -> None:
    """
    A service run from the desired state's pinned binaries: upgrades, and their rollback.

    + desired: the role's DesiredState; its binaries are the service's
    + name: the operations' name (``k3s``, ``cloudflared-node``)
    + unit_name, unit_file, inputs, health, restart: as for `unit`; `inputs` include the
      binaries
    + around: as for `unit_operation`
    + serial: restart the unit host by host (pyinfra's ``_serial``), not on all at once

    A new version replaces the binary (verified, then renamed; the old one kept as
    ``<path>.previous``) and restarts the unit once; the same version restarts nothing. If
    the unit is not healthy within the bounded wait after that restart, the previous binary
    is put back and the unit restarted on it, and the run fails saying so: an upgrade that
    breaks the service never leaves it broken.
    """
    managed.binaries(
        name=f"{name} binary (pinned, SHA-256 verified)", desired=desired, keep_previous=True
    )
    unit(
        name=name,
        desired=desired,
        unit_name=unit_name,
        unit_file=unit_file,
        inputs=inputs,
        restart=restart,
        health=health,
        rollback=[binary.path for binary in desired.binaries],
        around=around,
        _serial=serial,
    )
