"""The k3s server role (`k3s_servers`): the control plane, and with `enable_control_plane_lb`
HAProxy in front of every server's API.

The first server in the inventory starts the cluster (`cluster-init`, embedded etcd); each
later one joins it through the endpoint, so a second server is one inventory line. Before
anything changes, a cluster whose token is not ESC `k3s_token` stops the run. Every server
has `agent-token-file`: agents join with that secret, never with the server token. The first
server also carries the cluster apps (deploys/k3s/apps.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from deploys.k3s import apps, cluster, config, endpoint, node
from oceanid.cluster_layout import MANIFEST_DIR
from oceanid.model import HostPlan, Site
from operations import k3s as k3s_ops
from operations import managed, services
from operations.managed import DesiredState, ManagedFile

# in k3s's auto-deploy folder, beside the cluster apps' files
RUNTIME_CLASS_FILE = f"{MANIFEST_DIR}/oceanid-nvidia-runtimeclass.yaml"
# k3s's own view of its API's health, through the admin kubeconfig it writes
HEALTH = "k3s kubectl get --raw /readyz >/dev/null 2>&1"


def runtime_class() -> dict:
    """The `nvidia` RuntimeClass: pods that name it run with the NVIDIA runtime that k3s's
    containerd registers (as `nvidia`) on a node where it finds nvidia-container-runtime.
    Written only for a k3s that does not ship its own (`cluster.ships_runtime_class`)."""
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": cluster.RUNTIME_CLASS},
        "handler": cluster.RUNTIME_CLASS,
    }


@dataclass(frozen=True)
class Server:
    """The server role as declared, before anything is read: its DesiredState and what its
    steps need from the declaration."""

    desired: DesiredState
    inputs: list[str]  # the paths whose change restarts k3s
    before_start: list[str]  # the files written before k3s (re)starts
    auto_deploy: list[str]  # the files k3s applies from its auto-deploy folder (after it starts)
    first: bool  # the first server: it starts the cluster and carries the apps and the labels


def declare(plan: HostPlan, site: Site) -> Server:
    """The server role's DesiredState, declared whole, for the host's one read."""
    role = DesiredState(name=f"k3s server {plan.name}")
    first = site.is_first_server(plan)
    inputs = node.add_to(role, plan, site, "server")
    if plan.settings.enable_control_plane_lb:
        servers = [(p.name, cluster.address(p)) for p in cluster.servers(site)]
        endpoint.add_to(role, plan, servers)
    before_start = [f.path for f in role.files]
    auto_deploy: list[str] = []
    if first:
        if cluster.gpu_agents(site) and not cluster.ships_runtime_class(plan.settings.k3s.version):
            text = config.HEADER + yaml.safe_dump(runtime_class(), sort_keys=False)
            role.files.append(ManagedFile(RUNTIME_CLASS_FILE, text.encode(), mode="0600"))
            auto_deploy.append(RUNTIME_CLASS_FILE)
        auto_deploy += apps.add_to(role, site, plan.settings)
        k3s_ops.probe_nodes(role)  # for the labels and taints (deploys/k3s/__init__.py)
    return Server(role, inputs, before_start, auto_deploy, first)


def deploy(plan: HostPlan, site: Site, declared: Server) -> None:
    """The server's steps, from its declaration (read with the host's other roles)."""
    role, first = declared.desired, declared.first
    version = plan.settings.k3s.version
    datastore = {
        "cluster_init": first,  # config.yaml's cluster-init (node.config_document)
        "convert": plan.settings.host(plan.name).k3s.convert_datastore_to_etcd,
        "key": f"hosts.{plan.name}.k3s.convert_datastore_to_etcd",
    }
    k3s_ops.refuse_now(role, version, datastore)  # before anything runs here, with -y too
    k3s_ops.version_step(
        name="k3s upgrade one minor version at most", desired=role, version=version
    )
    k3s_ops.datastore(name="k3s datastore not converted by surprise", desired=role, **datastore)
    token = cluster.token(site)
    k3s_ops.cluster_token(
        name="k3s cluster token unchanged",
        desired=role,
        expected_sha256=None if token is None else k3s_ops.token_sha256(token),
    )
    if first:  # before the apps' files: a new Label Studio image migrates its database
        k3s_ops.backed_up_first(
            name="Label Studio backed up before its image changes",
            desired=role,
            backup=apps.image_backup(site, plan.settings),
        )
    node.install(role, declared.before_start)
    written = node.server_tokens(role, plan, site)
    if plan.settings.enable_control_plane_lb:
        services.unit(
            name="HAProxy (k3s API endpoint)",
            desired=role,
            unit_name=endpoint.UNIT,
            unit_file=None,
            inputs=[endpoint.CONFIG],
        )
    if first:  # before any server's binary is replaced (servers' steps run in line order)
        k3s_ops.etcd_snapshot(
            name="etcd snapshot before the upgrade", desired=role, version=version
        )
    node.start(role, "server", declared.inputs, HEALTH, restart=written, version=version)
    if declared.auto_deploy:
        managed.files(
            name="k3s auto-deploy manifests",
            desired=role,
            paths=declared.auto_deploy,
        )
    if first:
        apps.deploy(role, site, plan.settings)
