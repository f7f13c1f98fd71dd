"""The lab inventory: the same roles as production, on hosts booted by `make lab`.

Hosts are reached through the lab's SSH config (.lab/ssh/config), the way production
hosts are reached through the operator's; calypso, as in production, through its
`oceanid` account with sudo, as its `hosts:` entry in the lab's group data says.
"""

import os
from pathlib import Path

from oceanid.settings import inventory_host

# The lab's addresses exist only on its bridge; without it they would be routed off this
# machine, so refuse to load rather than send SSH anywhere.
if not Path("/sys/class/net/ocl-br0").exists():
    raise SystemExit("lab: the lab is down (no bridge ocl-br0); run `make lab` first")

_repo = Path(__file__).resolve().parent.parent
# `make bench LATENCY=…` sends SSH through its delaying relays with a config of its own
_ssh_config = os.environ.get("OCEANID_LAB_SSH_CONFIG") or str(_repo / ".lab" / "ssh" / "config")
_host = inventory_host(
    _repo / "group_data" / "all.py",
    _repo / "inventories" / "group_data" / "all.py",
    ssh_config_file=_ssh_config,
)

k3s_servers = [_host("tethys")]
k3s_agents = [_host("styx"), _host("calypso")]
gpu_hosts = [_host("calypso"), _host("calypso2"), _host("calypso3")]
