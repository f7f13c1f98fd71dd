"""The lab's cluster only: tethys, styx and calypso, without calypso2 and calypso3.

`node_tunnel_mode: daemonset` runs every GPU host's tunnel on its k3s node, and preflight
refuses it while a GPU host is no node (the lab's calypso2 and calypso3 are none), so a lab
test of daemonset mode runs on this inventory. Hosts, group data and SSH as inventories/lab.py.
"""

from inventories.lab import k3s_agents as k3s_agents
from inventories.lab import k3s_servers as k3s_servers

gpu_hosts = [host for host in k3s_agents if host[0] == "calypso"]
