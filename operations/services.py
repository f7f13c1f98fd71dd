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
from pyinfra.api import StringCommand, operation

from operations.managed import Manifest

SETTLE = 2  # seconds a started unit must stay active
START_WAIT = 150  # seconds the deploy waits for a unit to finish starting


def _started_and_alive(verb: str, unit: str) -> StringCommand:
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
        "||",
        "{",
        "echo",
        f"'{unit} did not become active within {START_WAIT}s or did not stay active;"
        " its last log lines:'",
        ">&2;",
        "journalctl",
        "-u",
        unit,
        "-n",
        "25",
        "--no-pager",
        ">&2;",
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
    """What `unit` will do: any of daemon-reload, enable, start, restart; decided up front."""
    current = manifest.state()["units"].get(name, {"enabled": "not-found", "active": "unknown"})
    reload = unit_file is not None and manifest.will_change([unit_file])
    todo = []
    if reload or current["enabled"] == "not-found":
        todo.append("daemon-reload")
    if current["enabled"] != "enabled":
        todo.append("enable")
    if current["active"] != "active":
        todo.append("start")
    elif reload or restart or manifest.will_change(inputs):
        todo.append("restart")
    return todo


@operation()
def unit(
    manifest: Manifest,
    unit_name: str,
    unit_file: str | None,
    inputs: list[str],
    restart: bool = False,
):
    """
    Keep a systemd unit enabled and running; restart it when something it reads changed.

    + manifest: the role's Manifest (its units include `unit_name`)
    + unit_name: the unit, e.g. ``cloudflared-node.service``
    + unit_file: the unit file's path in the manifest (a change means daemon-reload), or
      None for a unit a package ships
    + inputs: the manifest paths the service reads (binary, config, credentials)
    + restart: restart for a change the manifest's files do not show (a rebuilt environment)
    """
    todo = actions(manifest, unit_name, unit_file, inputs, restart)
    if not todo:
        host.noop(f"{unit_name} is enabled and active, and nothing it reads changed")
        return
    if "daemon-reload" in todo:
        yield "systemctl daemon-reload"
    if "enable" in todo:
        yield StringCommand("systemctl", "enable", unit_name)
    if "start" in todo:
        yield _started_and_alive("start", unit_name)
    elif "restart" in todo:
        yield _started_and_alive("restart", unit_name)
