"""The lab inventory: the same roles as production, on hosts booted by `make lab`.

Hosts are reached through the lab's SSH config (.lab/ssh/config), the way production
hosts are reached through the operator's; calypso, as in production, through its
`oceanid` account with sudo.
"""

from pathlib import Path

# The lab's addresses exist only on its bridge; without it they would be routed off this
# machine, so refuse to load rather than send SSH anywhere.
if not Path("/sys/class/net/ocl-br0").exists():
    raise SystemExit("lab: the lab is down (no bridge ocl-br0); run `make lab` first")

_ssh = {
    "ssh_config_file": str(Path(__file__).resolve().parent.parent / ".lab" / "ssh" / "config"),
}

k3s_servers = [("tethys", dict(_ssh))]
k3s_agents = [("styx", dict(_ssh)), ("calypso", {**_ssh, "_sudo": True})]
gpu_hosts = ["calypso", ("calypso2", dict(_ssh))]
