"""A systemd unit brought to its wanted state, restarted only when its inputs changed.

The unit's state (enabled, active) comes from the role's batched fact; whether its unit
file, binary, config or credentials change comes from the same manifest, decided before
anything runs. After a start or restart the unit must still be active a moment later,
otherwise the run fails with the unit's last log lines instead of reporting success.

A `Type=notify` unit with `TimeoutStartSec=0` (cloudflared's: started means connected to
the edge) may stay "activating" for as long as the network is down; systemd keeps trying,
but the deploy waits at most START_WAIT for it and then fails with the unit's log.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from operations import managed
from operations.managed import Manifest

SETTLE = 2  # seconds a started unit must stay active
START_WAIT = 150  # seconds the deploy waits for a unit to finish starting
HEALTH_WAIT = 120  # seconds a started unit's own health check may take to pass


def _started_and_alive(
    verb: str, unit: str, health: str | None = None, rollback: list[str] | None = None
) -> StringCommand:
    healthy: list = []
    if health:
        # the service's own check, retried for at most HEALTH_WAIT seconds
        loop = f"until {health}; do sleep {SETTLE}; done"
        healthy = ["&&", "timeout", str(HEALTH_WAIT), "sh", "-c", QuoteString(loop)]
    back: list = []
    if rollback:
        for path in rollback:
            previous = QuoteString(f"{path}.previous")
            back += ["if", "[", "-f", previous, "];", "then", "mv", "-f", previous]
            back += [QuoteString(path), ";", "fi;"]
        back += ["timeout", str(START_WAIT), "systemctl", "restart", unit, ";"]
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
    return StringCommand(
        "timeout",
        str(START_WAIT),
        "systemctl",
        verb,
        unit,
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
    )


def actions(
    manifest: Manifest,
    name: str,
    unit_file: str | None,
    inputs: list[str],
    restart: bool = False,
) -> list[str]:
    """What `unit` will do: any of daemon-reload, enable, start, restart; decided up front.

    When something the unit reads changes, it is restarted even if it was not running when
    the state was read: a package installed in the same run (haproxy, docker.io) starts its
    service from the files it ships, before ours replace them, so a plain start would be a
    no-op on a service still running the old configuration. `restart` starts a stopped unit.
    """
    current = manifest.state()["units"].get(name, {"enabled": "not-found", "active": "unknown"})
    reload = unit_file is not None and manifest.will_change([unit_file])
    todo = []
    if reload or current["enabled"] == "not-found":
        todo.append("daemon-reload")
    if current["enabled"] != "enabled":
        todo.append("enable")
    if reload or restart or manifest.will_change(inputs):
        todo.append("restart")
    elif current["active"] != "active":
        todo.append("start")
    return todo


@operation()
def unit(
    manifest: Manifest,
    unit_name: str,
    unit_file: str | None,
    inputs: list[str],
    restart: bool = False,
    health: str | None = None,
    rollback: list[str] | None = None,
):
    """
    Keep a systemd unit enabled and running; restart it when something it reads changed.

    + manifest: the role's Manifest (its units include `unit_name`)
    + unit_name: the unit, e.g. ``cloudflared-node.service``
    + unit_file: the unit file's path in the manifest (a change means daemon-reload), or
      None for a unit a package ships
    + inputs: the manifest paths the service reads (binary, config, credentials)
    + restart: restart for a change the manifest's files do not show (a rebuilt environment)
    + health: a shell check of the service's own health after a (re)start (k3s: its API's
      /readyz), retried for at most HEALTH_WAIT seconds; default: active is healthy
    + rollback: binaries of the manifest whose replacement in this run is undone (their
      ``.previous`` put back, the unit restarted, the run failed) when the unit is not
      healthy after the (re)start
    """
    todo = actions(manifest, unit_name, unit_file, inputs, restart)
    if not todo:
        host.noop(f"{unit_name} is enabled and active, and nothing it reads changed")
        return
    current = manifest.state()["paths"]
    replaced = [  # only a binary this run replaces, and that existed before, can go back
        path
        for path in rollback or []
        if current.get(path) is not None and manifest.will_change([path])
    ]
    if "daemon-reload" in todo:
        yield "systemctl daemon-reload"
    if "enable" in todo:
        yield StringCommand("systemctl", "enable", unit_name)
    for verb in ("start", "restart"):
        if verb in todo:
            yield _started_and_alive(verb, unit_name, health, replaced)
            break


def binary_service(
    manifest: Manifest,
    *,
    name: str,
    unit_name: str,
    unit_file: str | None,
    inputs: list[str],
    health: str | None = None,
) -> None:
    """
    A service run from the manifest's pinned binaries: upgrades, and their rollback.

    + manifest: the role's Manifest; its binaries are the service's
    + name: the operations' name (``k3s``, ``cloudflared-node``)
    + unit_name, unit_file, inputs, health: as for `unit`; `inputs` include the binaries

    A new version replaces the binary (verified, then renamed; the old one kept as
    ``<path>.previous``) and restarts the unit once; the same version restarts nothing. If
    the unit is not healthy within the bounded wait after that restart, the previous binary
    is put back and the unit restarted on it, and the run fails saying so: an upgrade that
    breaks the service never leaves it broken.
    """
    managed.binaries(
        name=f"{name} binary (pinned, SHA-256 verified)", manifest=manifest, keep_previous=True
    )
    unit(
        name=name,
        manifest=manifest,
        unit_name=unit_name,
        unit_file=unit_file,
        inputs=inputs,
        health=health,
        rollback=[binary.path for binary in manifest.binaries],
    )
