"""`make bench`: what a converge costs on the lab, against a bare `exec -- true`.

Boots the lab (reusing the cached rootfs), converges the site twice, then runs a bare
`pyinfra inventories/lab.py exec -- true` in the same run, and prints the no-op/bare
ratio. The target for the whole site, the k3s roles and the cluster apps included, is 2.5 or
less (issue 10): each role reads its state in one batched fact instead of one command per file.
"""

from __future__ import annotations

import statistics
import sys
import time

from lab import __main__ as lab_cli
from lab.converge import pyinfra

TARGET = 2.5


def main() -> int:
    started = time.monotonic()
    lab_cli.boot()
    boot = time.monotonic() - started
    first = pyinfra("deploys/site.py")
    if first.returncode != 0:
        print(first.output[-4000:], file=sys.stderr)
        return 1
    noops = [pyinfra("deploys/site.py") for _ in range(3)]
    bares = [pyinfra("exec", "--", "true", json_output=False) for _ in range(3)]
    if any(r.returncode != 0 for r in noops + bares):
        return 1
    changed = [r.totals.get("success", 0) for r in noops]
    noop = statistics.median(r.seconds for r in noops)
    bare = statistics.median(r.seconds for r in bares)
    ratio = noop / bare
    rows = [
        ("measure", "seconds"),
        ("lab boot, all (rootfs cached)", f"{boot:.1f}"),
        ("  host root filesystems copied", f"{lab_cli.TIMINGS.get('rootfs', 0):.1f}"),
        ("  network and lab services", f"{lab_cli.TIMINGS.get('network', 0):.1f}"),
        ("  hosts booted to systemd ready", f"{lab_cli.TIMINGS.get('boot', 0):.1f}"),
        ("first converge", f"{first.seconds:.2f}"),
        ("no-op converge (median of 3)", f"{noop:.2f}"),
        ("bare exec -- true (median of 3)", f"{bare:.2f}"),
        ("ratio no-op / bare", f"{ratio:.2f} (target <= {TARGET})"),
        ("changes in the no-op runs", ", ".join(map(str, changed))),
    ]
    lab_cli.print_table(rows)
    return 0 if ratio <= TARGET and not any(changed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
