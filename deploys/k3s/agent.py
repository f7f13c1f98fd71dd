"""The k3s agent role (`k3s_agents`): joins the cluster through the control-plane endpoint,
once the server answers there, with the agent token only (never the server token).

On a GPU host that must have a GPU, k3s's containerd gets the NVIDIA runtime: k3s registers it
(as `nvidia`) when it finds `nvidia-container-runtime` at start, which the GPU host role
installs first (deploys/site.py runs it before k3s); the server deploys the `nvidia`
RuntimeClass. A GPU host without that requirement (the lab) skips both, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host

from deploys.k3s import cluster, node, units
from oceanid.model import HostPlan, Site
from operations import k3s as k3s_ops
from operations import services
from operations.managed import DesiredState


@dataclass(frozen=True)
class Agent:
    """The agent role as declared, before anything is read: its DesiredState and the paths
    whose change restarts k3s-agent."""

    desired: DesiredState
    inputs: list[str]


@dataclass(frozen=True)
class Joining:
    """An agent between its files and its start: its declaration, and whether its token is
    (re)copied in this run."""

    agent: Agent
    token: bool = False  # the agent token is (re)copied in this run: k3s-agent restarts


def declare(plan: HostPlan, site: Site) -> Agent:
    """The agent role's DesiredState, declared whole, for the host's one read."""
    role = DesiredState(name=f"k3s agent {plan.name}")
    return Agent(role, node.add_to(role, plan, site, "agent"))


def prepare(plan: HostPlan, site: Site, declared: Agent) -> Joining:
    """The agent's files and kernel settings, from its declaration: nothing here needs the
    server."""
    role = declared.desired
    if plan.gpu is not None and not plan.gpu.require_gpu:
        host.log("k3s: no GPU required here (require_gpu: false): NVIDIA runtime skipped")
    k3s_ops.refuse_now(role, plan.settings.k3s.version)  # before anything runs here
    k3s_ops.version_step(
        name="k3s upgrade one minor version at most",
        desired=role,
        version=plan.settings.k3s.version,
    )
    node.install(role, [f.path for f in role.files])
    return Joining(declared, token=not node.agent_token_present(role, site))


def will_start(joining: Joining) -> bool:
    """Whether k3s-agent (re)starts in this run, so it must find the server answering."""
    unit = units.UNIT_NAMES["agent"]
    agent = joining.agent
    todo = services.actions(agent.desired, unit, node.unit_file("agent"), agent.inputs)
    return joining.token or bool({"start", "restart"} & set(todo))


def start(plan: HostPlan, site: Site, joining: Joining) -> None:
    """Once the server answers: the agent token (the first server's, in full), the binary,
    the unit (restarted when its token was replaced: an agent that held the server token)."""
    agent = joining.agent
    node.agent_tokens(agent.desired, site)
    k3s_ops.servers_first(  # Kubernetes' version skew: no kubelet newer than the API server
        name="k3s agent upgraded only after every server",
        desired=agent.desired,
        servers=[server.name for server in cluster.servers(site)],
        version=plan.settings.k3s.version,
    )
    node.start(agent.desired, "agent", agent.inputs, None, restart=joining.token)
