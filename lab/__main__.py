"""`python -m lab up|down|status`: the local lab of real Debian hosts.

`up` clears whatever an earlier run left, builds (or reuses) the rootfs and the container
images, boots tethys, styx, calypso, calypso2 and calypso3 under systemd-nspawn on the lab
bridge, deploys the site into them with the real pyinfra CLI, verifies them with testinfra,
and prints a table. `down` removes every process, namespace, link and cgroup the lab made.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager

from lab import (
    docker_host,
    fake_secrets,
    hosts,
    images,
    keys,
    mirror,
    network,
    processes,
    rootfs,
    services,
    wheelhouse,
)
from lab.converge import lab_env, pyinfra, verify_argv
from lab.topology import ALL_HOSTS, HOSTS, HOSTS_DIR, LAB_DIR, REPO, LabHost

TIMINGS: dict[str, float] = {}


def log(message: str) -> None:
    print(f"lab: {message}", flush=True)


@contextmanager
def step(name: str):
    started = time.monotonic()
    yield
    TIMINGS[name] = time.monotonic() - started
    log(f"{name}: {TIMINGS[name]:.1f}s")


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("lab: needs root (network namespaces, bridges and nspawn)")
    missing = [
        t for t in ("systemd-nspawn", "mmdebstrap", "tinyproxy", "ssh") if not shutil.which(t)
    ]
    if missing:
        sys.exit(f"lab: missing {', '.join(missing)}; run `make lab-deps` (apt) first")


def down(*, quiet: bool = False) -> list[str]:
    """Stop everything the lab started and remove what it created (the bench-scale hosts too)."""
    removed = [f"host {name}" for name in hosts.stop(list(ALL_HOSTS))]
    for lab_host in ALL_HOSTS:
        if docker_host.remove_cgroups(lab_host.name):
            removed.append(f"cgroups of {lab_host.name}")
    services.stop()
    for name in processes.names():
        if processes.stop(name):
            removed.append(f"process {name}")
    unrecorded = processes.lab_owned()  # started by a run killed before it wrote the record
    processes.terminate(unrecorded)
    removed += [f"unrecorded process {pid}" for pid in unrecorded]
    removed += network.destroy_all()
    shutil.rmtree(HOSTS_DIR, ignore_errors=True)
    shutil.rmtree(LAB_DIR / "run", ignore_errors=True)
    if not quiet:
        log("down: " + (", ".join(removed) if removed else "nothing was up"))
    return removed


def testinfra() -> int:
    return subprocess.run(verify_argv(), cwd=REPO, env=lab_env(), check=False).returncode


def boot(lab_hosts: tuple[LabHost, ...] = HOSTS) -> None:
    """Everything up to booted, reachable hosts (the lab's, or `lab_hosts`); no deploy."""
    require_root()
    with step("cleanup"):
        down(quiet=True)
    with step("rootfs"):
        keys.ensure()
        fake_secrets.ensure()
        tarball = rootfs.build_base(log)
        wheels = wheelhouse.ensure(log)
        mirror.populate()
        images.publish(tarball, log)  # after populate, which starts the mirror afresh
        wheelhouse.publish(wheels)
        for lab_host in lab_hosts:
            rootfs.prepare_host(lab_host, tarball)
    with step("network"):
        network.create_bridge()
        for lab_host in lab_hosts:
            network.create_host_netns(lab_host)
        services.start()
    with step("boot"):
        for lab_host in lab_hosts:
            hosts.boot(lab_host)
        for lab_host in lab_hosts:
            hosts.wait_ready(lab_host)


def status() -> int:
    up = 0
    rows = [("host", "address", "role", "state")]
    for lab_host in HOSTS:
        pid = processes.running(hosts.record_name(lab_host))
        state = "down"
        if pid:
            done = subprocess.run(
                hosts.ssh_argv(lab_host, "systemctl", "is-system-running"),
                capture_output=True,
                text=True,
                check=False,
                timeout=15,
            )
            state = f"up ({done.stdout.strip() or 'unreachable'})"
            up += 1
        rows.append((lab_host.name, lab_host.address, lab_host.role, state))
    for name in (
        services.PROXY,
        services.APT_CACHE,
        services.MIRROR,
        services.CLOUDFLARE,
        services.S3,
    ):
        rows.append((name, "-", "lab service", "up" if processes.running(name) else "down"))
    print_table(rows)
    left = network.leftovers()
    if not up and (left["netns"] or left["links"]):
        log(f"leftovers from an earlier run: {left}; `make lab-down` removes them")
    return 0 if up == len(HOSTS) else 1


def print_table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def running_services(lab_host) -> str:
    done = subprocess.run(
        hosts.ssh_argv(
            lab_host,
            "systemctl",
            "list-units",
            "--type=service",
            "--state=running",
            "--no-legend",
            "--plain",
            "oceanid*",
            "cloudflared*",
            "tritonserver*",
            "k3s*",
            "ssh*",
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=15,
    )
    return (
        ", ".join(
            line.split()[0].removesuffix(".service")
            for line in done.stdout.splitlines()
            if line.strip()
        )
        or "-"
    )


def up(deploy: bool) -> int:
    with step("lab total"):
        boot()
        if deploy:
            with step("deploy"):
                if pyinfra("deploys/site.py", json_output=False).returncode != 0:
                    log(
                        "deploy failed; the hosts stay up for a look (`make lab-down` removes them)"
                    )
                    return 1
            with step("verify"):
                if testinfra() != 0:
                    log("testinfra checks failed")
                    return 1
    rows = [("host", "address", "role", "running")]
    rows += [(h.name, h.address, h.role, running_services(h)) for h in HOSTS]
    print_table(rows)
    print()
    print_table([("step", "seconds")] + [(k, f"{v:.1f}") for k, v in TIMINGS.items()])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="boot the lab and deploy the site into it")
    up_parser.add_argument("--no-deploy", action="store_true", help="boot only")
    sub.add_parser("down", help="remove everything the lab made")
    sub.add_parser("status", help="say what is up")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(deploy=not args.no_deploy)
    if args.command == "down":
        require_root()
        down()
        return 0
    return status()


if __name__ == "__main__":
    raise SystemExit(main())
