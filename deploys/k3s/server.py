"""The k3s server role (`k3s_servers`): the control plane, and with `enable_control_plane_lb`
HAProxy in front of every server's API.

The first server in the inventory starts the cluster (`cluster-init`, embedded etcd); each
later one joins it through the endpoint, so a second server is one inventory line. Before
anything changes, a cluster whose token is not ESC `k3s_token` stops the run. Every server
has `agent-token-file`: agents join with that secret, never with the server token. The first
server also carries the cluster apps (deploys/k3s/apps.py).
"""

from __future__ import annotations

import yaml

from deploys.k3s import apps, cluster, config, endpoint, node
from oceanid.model import HostPlan, Site
from operations import k3s as k3s_ops
from operations import managed, services
from operations.managed import DesiredState, ManagedFile

# k3s deploys what it finds here (its auto-deploy manifests); the folder exists once it ran.
MANIFESTS = "/var/lib/rancher/k3s/server/manifests"
RUNTIME_CLASS_FILE = f"{MANIFESTS}/oceanid-nvidia-runtimeclass.yaml"
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


def manifest(plan: HostPlan, site: Site) -> tuple[DesiredState, list[str], list[str]]:
    """(the role's DesiredState, what restarts k3s, the files written before k3s starts)."""
    role = DesiredState(name=f"k3s server {plan.name}")
    inputs = node.add_to(role, plan, site, "server")
    if plan.settings.enable_control_plane_lb:
        servers = [(p.name, cluster.address(p)) for p in cluster.servers(site)]
        endpoint.add_to(role, plan, servers)
    before_start = [f.path for f in role.files]
    if plan.name == cluster.servers(site)[0].name:
        if cluster.gpu_agents(site) and not cluster.ships_runtime_class(plan.settings.k3s.version):
            text = config.HEADER + yaml.safe_dump(runtime_class(), sort_keys=False)
            role.files.append(ManagedFile(RUNTIME_CLASS_FILE, text.encode(), mode="0600"))
        apps.add_to(role, site, plan.settings)
        k3s_ops.probe_nodes(role)  # for the labels and taints (deploys/k3s/__init__.py)
    return role, inputs, before_start


def deploy(
    plan: HostPlan, site: Site, declared: tuple[DesiredState, list[str], list[str]] | None = None
) -> DesiredState:
    """The server's steps, from `declared` (its `manifest`, when the site declared it first)."""
    role, inputs, before_start = declared or manifest(plan, site)
    version, first = plan.settings.k3s.version, plan.name == cluster.servers(site)[0].name
    datastore = {
        "cluster_init": first,  # config.yaml's cluster-init (node.config_document)
        "convert": plan.settings.host(plan.name).k3s.convert_datastore_to_etcd,
        "key": f"hosts.{plan.name}.k3s.convert_datastore_to_etcd",
    }
    k3s_ops.refuse_now(role, version, datastore)  # before anything runs here, with -y too
    k3s_ops.version_step(
        name="k3s upgrade one minor version at most", manifest=role, version=version
    )
    k3s_ops.datastore(name="k3s datastore not converted by surprise", manifest=role, **datastore)
    token = cluster.token(site)
    k3s_ops.cluster_token(
        name="k3s cluster token unchanged",
        manifest=role,
        expected_sha256=None if token is None else k3s_ops.token_sha256(token),
    )
    if first:  # before the apps' files: a new Label Studio image migrates its database
        apps.backed_up_first(
            name="Label Studio backed up before its image changes",
            manifest=role,
            site=site,
            settings=plan.settings,
        )
    node.install(role, before_start)
    written = node.server_tokens(role, plan, site)
    if plan.settings.enable_control_plane_lb:
        services.unit(
            name="HAProxy (k3s API endpoint)",
            manifest=role,
            unit_name=endpoint.UNIT,
            unit_file=None,
            inputs=[endpoint.CONFIG],
        )
    if first:  # before any server's binary is replaced (servers' steps run in line order)
        k3s_ops.etcd_snapshot(
            name="etcd snapshot before the upgrade", manifest=role, version=version
        )
    node.start(role, "server", inputs, HEALTH, restart=written, version=version)
    if len(role.files) > len(before_start):
        managed.files(
            name="k3s auto-deploy manifests",
            manifest=role,
            paths=[f.path for f in role.files[len(before_start) :]],
        )
    if plan.name == cluster.servers(site)[0].name:
        apps.deploy(role, site, plan.settings)
    return role
