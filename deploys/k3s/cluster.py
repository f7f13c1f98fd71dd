"""The cluster as data: which nodes there are, how they reach each other, the endpoint, the
tokens, the labels. Pure functions of the validated site, shared by the server and agent roles."""

from __future__ import annotations

import re

from oceanid.model import K3S_AGENTS, HostPlan, Site, k3s_servers

RUNTIME_CLASS = "nvidia"


def servers(site: Site) -> list[HostPlan]:
    """The k3s servers in inventory order: the first starts the cluster, the others join it."""
    return k3s_servers(site.hosts.values())


def nodes(site: Site) -> list[HostPlan]:
    """Every k3s node, servers first."""
    return servers(site) + [p for p in site.hosts.values() if K3S_AGENTS in p.roles]


def address(plan: HostPlan) -> str:
    """How the cluster reaches this node: its `hosts.<name>.k3s.address`, else its name (for
    the first server, where nodes join it, only an IP address: preflight refuses an alias)."""
    return plan.settings.host(plan.name).k3s.address or plan.name


def endpoint(site: Site, plan: HostPlan) -> str:
    """The control-plane endpoint agents, `tls-san` and the kubeconfig use: the first server's
    HAProxy with `enable_control_plane_lb`, else its API on 6443."""
    first = site.first_server
    lb = plan.settings.enable_control_plane_lb
    port = plan.settings.k3s_lb_port if lb else 6443
    return f"https://{address(first)}:{port}"


def token(site: Site) -> str | None:
    """ESC k3s_token, or None: the first server then generates the cluster's token."""
    return site.secrets.get("k3s_token") or None


def agent_token(site: Site) -> str | None:
    """ESC k3sAgentToken (bare, or a full ``K10<CA hash>::node:<secret>``), or None: the first
    server then generates the agent secret. Agents join with it, never with the server's."""
    return site.secrets.get("k3sAgentToken") or None


def ships_runtime_class(version: str) -> bool:
    """Whether this k3s version deploys the `nvidia` RuntimeClass itself.

    From v1.29.0 k3s writes its packaged `runtimes.yaml` (k3s-io/k3s manifests/runtimes.yaml:
    `nvidia`, `nvidia-experimental`, `crun` and the wasm runtimes) into the auto-deploy folder
    like its other packaged manifests (pkg/deploy/stage.go `Stage`, unless `disable: runtimes`,
    which this deploy never sets); release notes of v1.29.0+k3s1: "Default runtime and runtime
    classes for wasm/nvidia/crun (#8936)". A second file of ours holding `nvidia` would make
    two Addons claim one object (each apply takes it over, pkg/deploy/controller.go). Older
    lines got the change as backports (k3s-io/k3s #9013, #9014) in releases not checked here,
    so they keep the deploy's own.
    """
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.\d+(?:[+-].*)?", version)
    return match is not None and (int(match[1]), int(match[2])) >= (1, 29)


def gpu_agents(site: Site) -> list[HostPlan]:
    """Agents that are GPU hosts that must have a GPU: k3s's containerd gets the NVIDIA runtime
    there, and the cluster the `nvidia` RuntimeClass."""
    return [
        plan
        for plan in site.hosts.values()
        if K3S_AGENTS in plan.roles and plan.gpu is not None and plan.gpu.require_gpu
    ]


def wanted_labels(site: Site) -> dict[str, dict]:
    """node name -> its labels and taints from host data, for `operations.k3s.node_labels`."""
    wanted = {}
    for plan in nodes(site):
        data = plan.settings.host(plan.name).k3s
        wanted[plan.name] = {"labels": dict(data.labels), "taints": list(data.taints)}
    return wanted
