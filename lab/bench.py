"""`make bench [LATENCY=50ms]`: what a converge costs on the lab, against a bare `exec -- true`.

Boots the lab (reusing the cached rootfs) and converges the whole site once. Then, in the same
run and through the same SSH path, it measures (median of `RUNS`):

- a bare `pyinfra inventories/lab.py exec -- true`: connecting and one command per host;
- the site's no-op converge (`deploys/site.py`, the k3s roles and cluster apps included);
- its dry run (`--dry --diff`, without `-y`, so pyinfra detects changes);
- the reference: the same declared state through pyinfra's own built-in operations
  (lab/reference_deploy.py, derived from the roles' manifests at run time), no-op too.

Each host's connections and commands are counted from its own sshd log (lab/roundtrips.py),
and the pyinfra process's peak memory is read from the kernel. With `LATENCY`, every round
trip to every lab host is delayed that much by a TCP relay per host (lab/relay.py: this
kernel has no netem); the first converge is made without it.

Targets: without added latency the no-op is within `TARGET` × the bare exec (issue 10); with
it, within `WAN_TARGET` × and at least `REFERENCE_FACTOR` × faster than the reference
(issue 14). The exit status is 1 when a target is missed or a no-op run changed anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lab import __main__ as lab_cli
from lab import relay, roundtrips
from lab.converge import Run, pyinfra
from lab.hosts import ssh_argv
from lab.topology import HOSTS, LAB_DIR, REPO, SSH_DIR, host

TARGET = 2.5
WAN_TARGET = 1.75
REFERENCE_FACTOR = 5.0
RUNS = 5  # the no-ops are short and the lab is noisy: the median of five
REFERENCE = "lab/reference_deploy.py"
# the GPU host without k3s: what one more GPU host costs (issue 14, bytes downloaded)
ONE_GPU_HOST = "calypso2"


def received_bytes(name: str) -> int:
    """Bytes the host has received on its network interfaces (not loopback), from its
    own network namespace's counters."""
    done = subprocess.run(
        ssh_argv(host(name), "cat", "/proc/net/dev"),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    total = 0
    for line in done.stdout.splitlines()[2:]:
        iface, _, counters = line.partition(":")
        if iface.strip() != "lo" and counters.split():
            total += int(counters.split()[0])
    return total


class Timed:
    """Runs of one measured command: their median time, and what each run changed."""

    runs: list[Run]

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def changes(self) -> list[int]:
        return [r.totals.get("success", 0) for r in self.runs]


class Measure(Timed):
    """One measured command: its timed runs, each host's round trips in the last of them, and
    pyinfra's peak memory from one more run (not timed: reading it costs a Python start-up)."""

    def __init__(self, label: str, run: Callable[..., Run]):
        self.label = label
        self.runs: list[Run] = []
        self.counts: dict[str, roundtrips.Count] = {}
        for _ in range(RUNS):
            marks = roundtrips.cursors()
            self.runs.append(run())
            self.counts = roundtrips.since(marks)
        self.memory = run(memory=True)

    @property
    def ok(self) -> bool:
        return all(r.returncode == 0 for r in [*self.runs, self.memory])

    @property
    def peak_mib(self) -> float:
        return self.memory.peak_mib


def relayed_ssh(delay: float, ports: dict[str, int]) -> Path:
    """An SSH config (and known_hosts) that sends every lab host through its relay."""
    folder = LAB_DIR / "run" / "bench-ssh"
    folder.mkdir(parents=True, exist_ok=True)
    known = folder / "known_hosts"
    known.write_text(relay.known_hosts((SSH_DIR / "known_hosts").read_text(), ports))
    config = folder / "config"
    config.write_text(relay.ssh_config((SSH_DIR / "config").read_text(), ports, str(known)))
    return config


def measure_all(env: dict[str, str]) -> tuple[dict[str, Measure], int]:
    """The measures, and how many changes the reference's first (unmeasured) run made."""
    found = {
        "site": Measure(
            "site no-op converge", lambda **kw: pyinfra("deploys/site.py", env=env, **kw)
        ),
        "dry": Measure(
            "site dry run (--dry --diff)",
            lambda **kw: pyinfra("deploys/site.py", "--dry", "--diff", yes=False, env=env, **kw),
        ),
        "bare": Measure(
            "bare exec -- true",
            lambda **kw: pyinfra("exec", "--", "true", json_output=False, env=env, **kw),
        ),
    }
    settled = 0
    if (REPO / REFERENCE).exists():
        settled = pyinfra(REFERENCE, env=env).totals.get("success", 0)
        found["reference"] = Measure(
            "reference (built-in operations) no-op",
            lambda **kw: pyinfra(REFERENCE, env=env, **kw),
        )
    return found, settled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--latency", default=os.environ.get("LATENCY") or "0")
    args = parser.parse_args(argv)
    try:
        delay = relay.parse_delay(args.latency)
    except ValueError as error:
        print(f"bench: LATENCY: {error}", file=sys.stderr)
        return 2

    started = time.monotonic()
    lab_cli.boot()
    boot = time.monotonic() - started
    before = received_bytes(ONE_GPU_HOST)
    first = pyinfra("deploys/site.py")
    downloaded = received_bytes(ONE_GPU_HOST) - before
    if first.returncode != 0:
        print(first.output[-4000:], file=sys.stderr)
        return 1

    if delay > 0:
        targets = {h.name: (h.address, 22) for h in HOSTS}
        with relay.running(targets, delay) as ports:
            env = {"OCEANID_LAB_SSH_CONFIG": str(relayed_ssh(delay, ports))}
            found, settled = measure_all(env)
    else:
        found, settled = measure_all({})
    site, bare = found["site"], found["bare"]
    reference = found.get("reference")
    if settled:
        pyinfra("deploys/site.py")  # put back whatever the reference changed

    failures = [m.label for m in found.values() if not m.ok]
    ratio = site.seconds / bare.seconds
    limit = WAN_TARGET if delay > 0 else TARGET
    rows = [
        ("measure", "seconds"),
        ("lab boot, all (rootfs cached)", f"{boot:.1f}"),
        ("  host root filesystems copied", f"{lab_cli.TIMINGS.get('rootfs', 0):.1f}"),
        ("  network and lab services", f"{lab_cli.TIMINGS.get('network', 0):.1f}"),
        ("  hosts booted to systemd ready", f"{lab_cli.TIMINGS.get('boot', 0):.1f}"),
        ("first converge (no added latency)", f"{first.seconds:.2f}"),
        (f"  bytes {ONE_GPU_HOST} received", f"{downloaded / 2**20:.1f} MiB"),
    ]
    rows += [(f"{m.label} (median of {RUNS})", f"{m.seconds:.2f}") for m in found.values()]
    rows.append(("ratio no-op / bare", f"{ratio:.2f} (target <= {limit})"))
    missed = [] if ratio <= limit else [f"no-op / bare {ratio:.2f} > {limit}"]
    if reference is not None:
        factor = reference.seconds / site.seconds
        rows.append(("reference / no-op", f"{factor:.2f}"))
        rows.append(("  changes in the reference's first run", str(settled)))
        if delay > 0 and factor < REFERENCE_FACTOR:
            missed.append(f"reference / no-op {factor:.2f} < {REFERENCE_FACTOR}")
    rows.append(("changes in the no-op runs", ", ".join(map(str, site.changes))))
    rows += [(f"pyinfra peak memory, {m.label}", f"{m.peak_mib:.0f} MiB") for m in found.values()]
    rows += [(f"pyinfra CPU time, {m.label}", f"{m.memory.cpu_s:.2f} s") for m in found.values()]
    print(relay.describe(delay) if delay > 0 else "latency: the lab's bridge, none added")
    lab_cli.print_table(rows)

    names = [h.name for h in HOSTS]
    table = [("round trips per host (host's sshd)", *names)]
    for m in found.values():
        table.append(
            (m.label, *(f"{m.counts[n].connections}+{m.counts[n].commands}" for n in names))
        )
    print("\nconnections+commands each host received in one run")
    lab_cli.print_table(table)

    if reference is None:
        print(f"\nbench: {REFERENCE} is missing: no reference measured", file=sys.stderr)
    for label in failures:
        print(f"bench: {label}: a run failed", file=sys.stderr)
    for line in missed:
        print(f"bench: target missed: {line}", file=sys.stderr)
    if any(site.changes):
        print("bench: the no-op converge changed something", file=sys.stderr)
    return 1 if failures or missed or any(site.changes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
