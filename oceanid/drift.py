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
state is unknown, which is not the same as "no drift". Both of pyinfra's signs of a failure
count: its exit status (1 once any host failed, ``pyinfra_cli/cli.py`` ``_exit``), and each
host it reports as failed on stderr (``Could not connect``, a fact or operation error), which
is named; a dry run's ``--json`` has no ``failed_hosts`` (``prints.py`` ``print_run_json``),
and the plan of the hosts that did connect says nothing of the one that did not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oceanid import exitcodes

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEPLOY = "deploys/site.py"
NO_DRIFT, ERROR, DRIFT = exitcodes.OK, exitcodes.FAILED, exitcodes.DRIFT

ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
# pyinfra's per-host log line: four spaces, "[host] ", the message. Diff bodies are indented
# further and never start with "[".
HOST_LINE_RE = re.compile(r"^ {4}\[(?P<host>[^\]]+)\] (?P<message>.+)$")
# Progress messages, not findings: per host, and pyinfra's steps.
PROGRESS = ("Connected", "Ready: ", "Loading: ")
PROGRESS_STEPS = ("--> Loading", "--> Connecting", "--> Preparing", "--> Disconnecting")
# How pyinfra says a host failed: a connection it could not open (``connectors/ssh.py``
# raise_connect_error, logged by ``api/host.py`` connect), a command that broke
# (``api/util.py`` log_host_command_error), a Python callback that raised (``api/operations.py``).
HOST_FAILURES = (
    "Could not connect",
    "Could not resolve hostname",
    "SSH error",
    "EOF error",
    "Command timed out",
    "Command socket/SSH error",
    "Command IO error",
    "Unexpected error",
)


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
    failed_hosts: dict[str, str] = field(default_factory=dict)  # host -> pyinfra's reason

    @property
    def code(self) -> int:
        if self.failed:
            return ERROR
        return DRIFT if self.changes else NO_DRIFT

    def records(self) -> list[dict[str, object]]:
        """`--json`: one object per finding (JSON lines), for monitoring: each operation that
        would change hosts ("drift", with the hosts' messages), each error and each host not
        read ("failed"); a clean run is one object of status "ok"."""
        out: list[dict[str, object]] = []
        for change in self.changes:
            hosts = [*change.hosts, *change.conditional]
            out.append(
                {
                    "status": "drift",
                    "check": change.name,
                    "hosts": list(change.hosts),
                    "maybe": list(change.conditional),
                    "detail": [f"[{h}] {m}" for h in hosts for m in self.messages.get(h, [])],
                }
            )
        out += [{"status": "failed", "check": "dry run", "detail": line} for line in self.errors]
        out += [
            {"status": "failed", "check": f"host {host}", "hosts": [host], "detail": reason}
            for host, reason in sorted(self.failed_hosts.items())
        ]
        if not out:
            out.append({"status": "ok", "check": "drift", "detail": self.lines()[-1]})
        return out

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
        out += [f"FAILED {host}: {reason}" for host, reason in sorted(self.failed_hosts.items())]
        hosts = sorted({h for change in self.changes for h in change.hosts + change.conditional})
        if self.failed_hosts:
            names = ", ".join(sorted(self.failed_hosts))
            out.append(f"drift: the dry run failed on {names}; the hosts' state is unknown")
        elif self.failed:
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
    failed_hosts: dict[str, str] = {}
    for raw in stderr.splitlines():
        line = ANSI_RE.sub("", raw).rstrip()
        match = HOST_LINE_RE.match(line)
        if match:
            # pyinfra pads the host column to the longest name: "[@local]         Connected"
            message = match["message"].strip()
            if message.startswith(HOST_FAILURES):
                failed_hosts.setdefault(match["host"], message)
            elif not message.startswith(PROGRESS):
                messages.setdefault(match["host"], []).append(message)
        elif line.startswith("--> ") and "error" in line.lower():
            errors.append(line[4:])
    failed = returncode != 0 or not plan_read or bool(failed_hosts)
    if failed and not errors and not messages and not failed_hosts:  # e.g. a bad inventory
        lines = [ANSI_RE.sub("", line).strip() for line in stderr.splitlines()]
        lines = [line for line in lines if line and not line.startswith(PROGRESS_STEPS)]
        errors = lines[-3:] or [f"pyinfra exited {returncode}"]
    if not failed:
        # A host that changes nothing has nothing to say here.
        changed = {h for change in changes for h in change.hosts + change.conditional}
        messages = {host: lines for host, lines in messages.items() if host in changed}
    return Verdict(changes, messages, failed, errors, failed_hosts)


def pyinfra_argv(inventory: str, deploy: str) -> list[str]:
    """The dry run: no ``-y`` (it would skip change detection), ``--json`` for the plan."""
    pyinfra = Path(sys.executable).with_name("pyinfra")
    return [str(pyinfra), "--dry", "--diff", "--json", inventory, deploy]


def main(argv: Sequence[str] | None = None) -> int:
    parser = exitcodes.inventory_parser(
        prog="python -m oceanid.drift",
        description="The dry run as a check: exit 0 no drift, 2 drift, 1 error, 3 bad arguments.",
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per finding (JSON lines)"
    )
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
    if args.json:
        for record in verdict.records():
            print(json.dumps(record))
    else:
        for line in verdict.lines():
            print(line)
    return verdict.code


if __name__ == "__main__":
    raise SystemExit(main())
