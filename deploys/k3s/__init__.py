"""The k3s cluster: servers, agents, and what they are built from.

Each part is data first and tested as data: `config` (config.yaml), `units` (the systemd units,
kernel modules and sysctls), `kubeconfig` (the operator's kubeconfig for the SSH tunnel).
The role that installs them on the `k3s_servers` and `k3s_agents` hosts is not wired into
deploys/site.py yet.
"""
