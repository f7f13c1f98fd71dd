"""`make bench-scale N=8`: what the site's GPU hosts cost as they grow from one to N.

The site grows by GPU hosts, one inventory line and two ESC keys each. This boots N + 2 extra
GPU hosts beside the lab's services (lab/topology.SCALE_HOSTS: calypso4 …, each a real lab
host with its own tunnel and name, gpu4.<base> …; inventories/scale/lab.py), and measures, in
one run, `deploys/gpu.py` on them:

1. the first converge of one host while the package cache may still be cold (calypso4): what
   the first host of a new site costs, and what fills the cache;
2. the first converge of one host on the warm cache (calypso5), and its no-op converge;
3. the first converge of N hosts together (calypso6 …), and their no-op converge.

Every host gets its packages from this machine, as a site with many GPU hosts gets them from a
local mirror: Debian's through the lab's package cache (lab/apt_cache.py), the Triton wheel and
the models' requirements from the lab's wheelhouse, cloudflared from the lab's artifact mirror.
The bench counts what the cache still fetched from Debian in each step.

Targets (issue 14): N hosts' no-op within `NOOP_TARGET` × one host's, their first converge
within `FIRST_TARGET` ×. The exit status is 1 when a target is missed, a run failed or a no-op
changed anything. There is one lab per machine: a lab that is up is taken down first. Everything
it started is gone afterwards, also when interrupted (`--keep` leaves the hosts up for a look;
`make lab-down` removes them).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lab import __main__ as lab_cli
from lab import docker_host, roundtrips
from lab.bench import Timed, received_bytes
from lab.converge import Run, pyinfra
from lab.topology import LOG_DIR, SCALE_HOSTS, SCALE_MAX, LabHost

NOOP_TARGET = 1.5
FIRST_TARGET = 2.0
RUNS = 5  # no-ops are short and the lab is noisy: the median of five
INVENTORY = "inventories/scale/lab.py"
DEPLOY = "deploys/gpu.py"
APT_LOG = LOG_DIR / "apt-cache.log"  # lab/apt_cache.py's, kept by lab/processes.py


def converge(lab_hosts: tuple[LabHost, ...], **kwargs) -> Run:
    """`deploys/gpu.py` on these bench-scale hosts only."""
    limits = [arg for h in lab_hosts for arg in ("--limit", h.name)]
    return pyinfra(DEPLOY, *limits, inventory=INVENTORY, **kwargs)


def busy_seconds() -> float:
    """CPU time this machine has spent busy (all cores, everything on it), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def hosts_cpu(lab_hosts: tuple[LabHost, ...]) -> float:
    return sum(docker_host.cpu_seconds(h.name) for h in lab_hosts)


def apt_log_size() -> int:
    return APT_LOG.stat().st_size if APT_LOG.exists() else 0


def apt_fetched(since: int) -> tuple[int, int]:
    """(files the package cache fetched from Debian and kept, their bytes) since its log was
    `since` long: its MISS lines (lab/apt_cache.py); release files passed through are not
    counted, a few KiB each."""
    if not APT_LOG.exists():
        return 0, 0
    with APT_LOG.open("rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    sizes = [line.split()[1] for line in lines if line.startswith("MISS ")]
    return len(sizes), sum(int(size) for size in sizes if size.isdigit())


class Step(Timed):
    """One measured step on some hosts: a first converge (`noops=0`), or the median of `noops`
    no-op converges, with each host's round trips, what the package cache fetched from Debian,
    pyinfra's peak memory and, with `received`, the bytes one host received meanwhile."""

    def __init__(
        self,
        label: str,
        lab_hosts: tuple[LabHost, ...],
        *,
        noops: int = 0,
        received: Callable[[], int] | None = None,
    ):
        self.label, self.hosts = label, lab_hosts
        before_bytes = received() if received else 0
        before_apt = apt_log_size()
        self.runs: list[Run] = []
        cpu_hosts = cpu_all = 0.0
        for _ in range(noops or 1):  # each host's round trips: those of the last run
            marks = roundtrips.cursors(lab_hosts)
            hosts_before, busy_before = hosts_cpu(lab_hosts), busy_seconds()
            # a first converge reads pyinfra's peak memory in its own run, through a small
            # Python parent whose start-up is in its time: a few hundredths of a second
            self.runs.append(converge(lab_hosts, memory=not noops))
            cpu_hosts += hosts_cpu(lab_hosts) - hosts_before
            cpu_all += busy_seconds() - busy_before
            self.counts = roundtrips.since(marks, lab_hosts)
        self.apt_files, self.apt_bytes = apt_fetched(before_apt)
        # per run, as the time is (the median of the no-ops): the hosts' own CPU time, and the
        # CPU time this machine spent on everything (hosts, pyinfra, the lab's services)
        self.cpu_hosts, self.cpu_all = cpu_hosts / len(self.runs), cpu_all / len(self.runs)
        self.received = (received() - before_bytes) if received else 0
        # a no-op's peak memory is read in one more run, which is not timed
        self.memory = converge(lab_hosts, memory=True) if noops else self.runs[0]

    @property
    def failed(self) -> bool:
        """A run failed, or one of the hosts was never reached (a run of no host is no run)."""
        unreached = [n for n, count in self.counts.items() if not count.connections]
        return bool(unreached) or any(r.returncode != 0 for r in [*self.runs, self.memory])


def interrupted(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # the `finally` below takes the hosts down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench-scale", description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=int(os.environ.get("N") or 8))
    parser.add_argument("--keep", action="store_true", help="leave the hosts up afterwards")
    args = parser.parse_args(argv)
    if not 2 <= args.hosts <= SCALE_MAX:
        print(f"bench-scale: N={args.hosts}: give 2 to {SCALE_MAX} GPU hosts", file=sys.stderr)
        return 2
    warm, one, many = SCALE_HOSTS[0], SCALE_HOSTS[1], SCALE_HOSTS[2 : 2 + args.hosts]
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    try:
        started = time.monotonic()
        lab_cli.boot((warm, one, *many))
        boot = time.monotonic() - started
        steps = [Step("first converge, 1 host, package cache as found", (warm,))]
        if steps[0].failed:
            print(steps[0].runs[0].output[-4000:], file=sys.stderr)
            return 1
        steps.append(
            Step("first converge, 1 host", (one,), received=lambda: received_bytes(one.name))
        )
        steps.append(Step("no-op converge, 1 host", (one,), noops=RUNS))
        steps.append(Step(f"first converge, {len(many)} hosts", many))
        steps.append(Step(f"no-op converge, {len(many)} hosts", many, noops=RUNS))
        return report(boot, steps, one)
    finally:
        if args.keep:
            lab_cli.log("bench-scale: --keep: the hosts stay up; `make lab-down` removes them")
        else:
            lab_cli.down(quiet=True)


def report(boot: float, steps: list[Step], one: LabHost) -> int:
    _, first_one, noop_one, first_many, noop_many = steps
    noop_ratio = noop_many.seconds / noop_one.seconds
    first_ratio = first_many.seconds / first_one.seconds
    cores = os.cpu_count() or 1
    rows = [("measure", "seconds", "CPU s: hosts", "pyinfra", "all", "from Debian", "pyinfra peak")]
    booted = 2 + len(first_many.hosts)
    rows.append((f"lab boot: services and {booted} hosts", f"{boot:.1f}", "", "", "", "", ""))
    for step in steps:
        label = step.label + (f" (median of {len(step.runs)})" if len(step.runs) > 1 else "")
        rows.append(
            (
                label,
                f"{step.seconds:.2f}",
                f"{step.cpu_hosts:.1f}",
                f"{step.memory.cpu_s:.1f}",
                f"{step.cpu_all:.1f}",
                f"{step.apt_files} files, {step.apt_bytes / 2**20:.1f} MiB",
                f"{step.memory.peak_mib:.0f} MiB",
            )
        )
    rows.append(
        (f"  bytes {one.name} received in its first converge",
         f"{first_one.received / 2**20:.1f} MiB", "", "", "", "", "")
    )  # fmt: skip
    rows.append(
        (f"ratio N/1, no-op (target <= {NOOP_TARGET})", f"{noop_ratio:.2f}", "", "", "", "", "")
    )
    rows.append(
        (f"ratio N/1, first converge (target <= {FIRST_TARGET})", f"{first_ratio:.2f}",
         "", "", "", "", "")
    )  # fmt: skip
    print(
        f"this machine: {cores} CPU cores, which every lab host shares (a real GPU host has its "
        f"own); no step can take less than its CPU time (`all`: hosts, pyinfra, the lab's "
        f"services) / {cores}.\nFirst converges are timed with pyinfra's memory and CPU read (a "
        "small Python parent, a few hundredths of a second); a no-op's are read in one more, "
        "untimed run. `from Debian`: what the package cache fetched upstream."
    )
    lab_cli.print_table(rows)
    names = [h.name for h in noop_many.hosts]
    trips = {f"{noop_many.counts[n].connections}+{noop_many.counts[n].commands}" for n in names}
    print(
        f"\nround trips per host in the last no-op of {len(names)} hosts (host's sshd, "
        f"connections+commands): {', '.join(sorted(trips))}"
    )

    status = 0
    for step in steps:
        if step.failed:
            print(f"bench-scale: {step.label}: a run failed or missed a host", file=sys.stderr)
            print(max(step.runs, key=lambda r: r.returncode).output[-3000:], file=sys.stderr)
            status = 1
    for step in (noop_one, noop_many):
        if any(step.changes):
            print(f"bench-scale: {step.label} changed something: {step.changes}", file=sys.stderr)
            status = 1
    if noop_ratio > NOOP_TARGET:
        print(f"bench-scale: target missed: no-op N/1 {noop_ratio:.2f} > {NOOP_TARGET}",
              file=sys.stderr)  # fmt: skip
        status = 1
    if first_ratio > FIRST_TARGET:
        print(f"bench-scale: target missed: first converge N/1 {first_ratio:.2f} > "
              f"{FIRST_TARGET}", file=sys.stderr)  # fmt: skip
        status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
