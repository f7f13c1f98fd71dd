"""The k3s cluster: servers on `k3s_servers`, agents on `k3s_agents`, labels from host data.

Each part is data first and tested as data: `config` (config.yaml), `units` (the systemd
units, kernel modules and sysctls), `endpoint` (HAProxy), `kubeconfig` (the operator's
kubeconfig for the SSH tunnel). `server` and `agent` are the two roles, each one DesiredState
(`declare`), read in the host's one fact.

`deploy` is called by deploys/site.py for every host. pyinfra orders operations by the line
that queues them, so every server operation (below, `server.deploy`) runs before any agent's,
and the node labels last, once the agents have joined. With `enable_node_provisioning` off
nothing of k3s is installed or changed: each node says in one line what it runs; the cluster
apps are still deployed on the first server where k3s is found running (the guide's minimal
deploy keeps Label Studio up), and it says in one line when k3s is not running there and the
apps are skipped (deploys/k3s/apps.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from deploys.k3s import agent, apps, cluster, server
from oceanid.model import K3S_AGENTS, K3S_SERVERS, HostPlan, Site
from operations import k3s as k3s_ops
from operations.managed import DesiredState


@dataclass(frozen=True)
class Node:
    """This node's k3s role states, declared whole before anything is read or run: the report's
    (provisioning off), or the server's and the agent's with what their steps need."""

    report: DesiredState | None = None
    server: server.Server | None = None
    agent: agent.Agent | None = None
    apps: bool = False  # provisioning off, on the first server: the report carries the apps

    def states(self) -> list[DesiredState]:
        """The DesiredStates to read, in the host's one read (`managed.read_together`)."""
        found = [self.report] + [role.desired for role in (self.server, self.agent) if role]
        return [desired for desired in found if desired is not None]


def declare(plan: HostPlan, site: Site) -> Node | None:
    """The node's role states, declared whole (None on a host that is no k3s node)."""
    if not {K3S_SERVERS, K3S_AGENTS} & plan.roles:
        return None
    if not plan.settings.enable_node_provisioning:
        probed = DesiredState(name=f"k3s report {plan.name}")
        k3s_ops.probe_install(probed)  # one batched fact, as every other role reads
        return Node(report=probed, apps=apps.declare_minimal(probed, plan, site))
    return Node(
        server=server.declare(plan, site) if K3S_SERVERS in plan.roles else None,
        agent=agent.declare(plan, site) if K3S_AGENTS in plan.roles else None,
    )


def deploy(plan: HostPlan, site: Site, node: Node | None) -> None:
    """
    Every k3s node's part, in an order pyinfra keeps across hosts.

    pyinfra runs each host's operations in order but interleaves different hosts' by depth,
    so "servers, then agents" is made a dependency: two operations that every k3s node queues
    from the same line (the wait for the API, the labels) are one step for all of them, after
    everything before it on every node and before everything after it. `node` is this host's
    `declare` (None on a host that is no k3s node).
    """
    if node is None:
        return
    if node.report is not None:
        k3s_ops.report(name="k3s on this node (provisioning off)", desired=node.report)
        if node.apps:
            apps.deploy_minimal(node.report, site, plan.settings)
        return
    if node.server is not None:
        server.deploy(plan, site, node.server)
    joining = agent.prepare(plan, site, node.agent) if node.agent else None
    k3s_ops.wait_for_server(
        name="k3s API answers before agents join",
        endpoint=cluster.endpoint(site, plan),
        needed=joining is not None and agent.will_start(joining),
    )
    if joining is not None:
        agent.start(plan, site, joining)
    first = node.server is not None and node.server.first  # it sets every node's
    k3s_ops.node_labels(
        name="k3s node labels and taints",
        wanted=cluster.wanted_labels(site) if first else {},
        desired=node.server.desired if first else None,
    )
