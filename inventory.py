"""The production inventory: hosts are reached by name through the operator's SSH config.

Roles are the groups; what is particular to a host lives in group_data/all.py `hosts`.
"""

k3s_servers = ["tethys"]
k3s_agents = ["styx", ("calypso", {"ssh_user": "oceanid", "_sudo": True})]
gpu_hosts = ["calypso"]
