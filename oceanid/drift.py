"""`make drift`: the dry run as a check, with an exit status a timer or CI can act on.

pyinfra has no `plan -detailed-exitcode`: a dry run exits 0 whether or not a converge would
change anything. This runs the real CLI, ``pyinfra --dry --diff --json INVENTORY deploys/site.py``,
and reads its verdict:

- without ``-y``: ``-y`` skips pyinfra's change detection, and a dry run is nothing but that;
- ``--json`` puts pyinfra's plan on stdout: every operation with the hosts it would change;
- ``--diff`` makes our operations name each planned change on stderr (``[calypso]
  /etc/cloudflared/config.yaml: changes``); only those headlines are kept, never the diff
  bodies under them, so what is printed is what pyinfra prints anyway, with less in it (a secret
  file is named, its content never shown, by the operations themselves).

Exit 0 when a converge would change nothing, 2 with the operations and hosts that would change,
1 when the dry run itself failed (a host unreachable or refused, a preflight problem): then the
state is unknown, which is not the same as "no drift".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEPLOY = "deploys/site.py"
NO_DRIFT, ERROR, DRIFT = 0, 1, 2

ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
# pyinfra's per-host log line: four spaces, "[host] ", the message. Diff bodies are indented
# further and never start with "[".
HOST_LINE_RE = re.compile(r"^ {4}\[(?P<host>[^\]]+)\] (?P<message>.+)$")
# Progress messages, not findings: per host, and pyinfra's steps.
PROGRESS = ("Connected", "Ready: ", "Loading: ")
PROGRESS_STEPS = ("--> Loading", "--> Connecting", "--> Preparing", "--> Disconnecting")


@dataclass(frozen=True)
class Change:
    """One operation a converge would run, and the hosts it would change."""

    name: str
    hosts: tuple[str, ...]
    conditional: tuple[str, ...] = ()


@dataclass
class Verdict:
    """What one dry run said: the changes, the per-host messages, and whether it failed."""

    changes: list[Change]
    messages: dict[str, list[str]]
    failed: bool
    errors: list[str]

    @property
    def code(self) -> int:
        if self.failed:
            return ERROR
        return DRIFT if self.changes else NO_DRIFT

    def lines(self) -> list[str]:
        """The report, one finding per line, changed hosts' messages under their operation."""
        out: list[str] = []
        for change in self.changes:
            hosts = ", ".join(change.hosts)
            if change.conditional:
                hosts = ", ".join(filter(None, [hosts, f"maybe {', '.join(change.conditional)}"]))
            out.append(f"CHANGE {change.name} — {hosts}")
        for host, messages in sorted(self.messages.items()):
            out += [f"  [{host}] {message}" for message in messages]
        out += [f"ERROR {line}" for line in self.errors]
        hosts = sorted({h for change in self.changes for h in change.hosts + change.conditional})
        if self.failed:
            out.append("drift: the dry run failed; the hosts' state is unknown")
        elif self.changes:
            out.append(f"drift: {len(self.changes)} operation(s) would change {', '.join(hosts)}")
        else:
            out.append("drift: none; a converge would change nothing")
        return out


def parse(returncode: int, stdout: str, stderr: str) -> Verdict:
    """Read one ``pyinfra --dry --diff --json`` run: its plan (stdout) and its log (stderr)."""
    changes: list[Change] = []
    plan_read = False
    text = stdout.strip()
    if text.startswith("{"):
        try:
            plan = json.loads(text).get("plan") or []
            plan_read = True
        except ValueError:
            plan = []
        for op in plan:
            hosts = tuple(op.get("hosts_with_change") or ())
            maybe = tuple(op.get("hosts_with_conditional_change") or ())
            if hosts or maybe:
                changes.append(Change(str(op.get("name") or op.get("op_hash")), hosts, maybe))

    messages: dict[str, list[str]] = {}
    errors: list[str] = []
    for raw in stderr.splitlines():
        line = ANSI_RE.sub("", raw).rstrip()
        match = HOST_LINE_RE.match(line)
        if match:
            message = match["message"]
            if not message.startswith(PROGRESS):
                messages.setdefault(match["host"], []).append(message)
        elif line.startswith("--> ") and "error" in line.lower():
            errors.append(line[4:])
    failed = returncode != 0 or not plan_read
    if failed and not errors and not messages:  # e.g. an inventory that refuses to load
        lines = [ANSI_RE.sub("", line).strip() for line in stderr.splitlines()]
        lines = [line for line in lines if line and not line.startswith(PROGRESS_STEPS)]
        errors = lines[-3:] or [f"pyinfra exited {returncode}"]
    if not failed:
        # A host that changes nothing has nothing to say here.
        changed = {h for change in changes for h in change.hosts + change.conditional}
        messages = {host: lines for host, lines in messages.items() if host in changed}
    return Verdict(changes, messages, failed, errors)


def pyinfra_argv(inventory: str, deploy: str) -> list[str]:
    """The dry run: no ``-y`` (it would skip change detection), ``--json`` for the plan."""
    pyinfra = Path(sys.executable).with_name("pyinfra")
    return [str(pyinfra), "--dry", "--diff", "--json", inventory, deploy]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m oceanid.drift",
        description="The dry run as a check: exit 0 no drift, 2 drift, 1 error.",
    )
    parser.add_argument("inventory", nargs="?", default="inventory.py")
    parser.add_argument(
        "--deploy", default=DEFAULT_DEPLOY, help=f"deploy file (default {DEFAULT_DEPLOY})"
    )
    args = parser.parse_args(argv)
    env = {**os.environ, "PYINFRA_PROGRESS": "off"}
    try:
        done = subprocess.run(
            pyinfra_argv(args.inventory, args.deploy),
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except OSError as error:
        print(f"drift: cannot run pyinfra: {error}", file=sys.stderr)
        return ERROR
    verdict = parse(done.returncode, done.stdout, done.stderr)
    for line in verdict.lines():
        print(line)
    return verdict.code


if __name__ == "__main__":
    raise SystemExit(main())
