"""The production inventory: hosts are reached by name through the operator's SSH config.

Roles are the groups; what is particular to a host lives in group_data/all.py `hosts`,
how it is reached too (calypso: as `oceanid`, with sudo), which `_host` reads from there.
"""

from pathlib import Path

from oceanid.settings import inventory_host

_host = inventory_host(Path(__file__).parent / "group_data" / "all.py")

k3s_servers = [_host("tethys")]
k3s_agents = [_host("styx"), _host("calypso")]
gpu_hosts = [_host("calypso")]
