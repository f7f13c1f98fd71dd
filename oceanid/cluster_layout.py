"""Where the deploy puts its things in the k3s cluster, for the deploy and for what reads them back.

The cluster apps write their files into k3s's auto-deploy folder (deploys/cluster_apps, and the
server role its RuntimeClass, deploys/k3s/server.py); `make status` lists that folder and reads
the node tunnel DaemonSet's pod on each GPU node (oceanid/status.py). Both name them from here,
so the layer that reads them never imports the deploys that write them. Plain values only: status
imports this before gevent patches ssl, so nothing here may load pyinfra.
"""

from __future__ import annotations

#: k3s applies every YAML file it finds here (its auto-deploy manifests); the folder exists once
#: a server ran.
MANIFEST_DIR = "/var/lib/rancher/k3s/server/manifests"

#: cloudflared's metrics server (and its /ready) in the cluster's connector pods.
CONNECTOR_METRICS_PORT = 2000
#: The namespace of the DaemonSets that serve the GPU hosts' tunnels from their k3s nodes
#: (`node_tunnel_mode: daemonset`, deploys/cluster_apps/node_tunnel.py).
NODE_TUNNEL_NAMESPACE = "cloudflared-node"
#: Where each node tunnel pod's metrics server listens: the node's loopback (hostNetwork).
NODE_TUNNEL_METRICS_ADDRESS = f"127.0.0.1:{CONNECTOR_METRICS_PORT}"


def node_tunnel_daemon_set(host_name: str) -> str:
    """The DaemonSet (and its ConfigMap and Secret) serving this GPU host's tunnel."""
    return f"cloudflared-node-{host_name}"
