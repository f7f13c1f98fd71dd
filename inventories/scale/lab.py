"""`make bench-scale`'s inventory: the extra GPU hosts it booted beside the lab.

Each is a GPU host as calypso is (the host runtime, on the CPU), with its own tunnel and public
name (lab/topology.SCALE_HOSTS: calypso4 is gpu4.<base>). Listed are the ones whose root
filesystem exists, that is the ones lab/bench_scale.py booted; `--limit` picks among them.
Their settings are the lab's (this folder's group_data/all.py adds their `hosts:` entries).
"""

from pathlib import Path

from lab import topology as _topology
from oceanid.settings import inventory_host

if not Path(f"/sys/class/net/{_topology.BRIDGE}").exists():
    raise SystemExit(
        "lab: the lab is down (no bridge ocl-br0); `python -m lab.bench_scale --keep` boots it"
    )

_here = Path(__file__).resolve().parent
_host = inventory_host(
    _here.parents[1] / "group_data" / "all.py",
    _here / "group_data" / "all.py",
    ssh_config_file=str(_topology.SSH_DIR / "config"),
)
gpu_hosts = [_host(h.name) for h in _topology.SCALE_HOSTS if h.rootfs.exists()]
if not gpu_hosts:
    raise SystemExit(
        "lab: no bench-scale host is up; `python -m lab.bench_scale --keep` leaves them up"
    )
