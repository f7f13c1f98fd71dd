"""What a k3s server and an agent have in common: the pinned binary, the unit, config.yaml,
the token file, the kernel settings, and the steps that put them in place.

The token file holds ESC `k3s_token`'s secret (0600 root, named by config.yaml's `token-file`,
never in the config, the unit or a command line). Without `k3s_token` the first server has no
token file (k3s generates the cluster's token) and every later node gets a copy of the
generated one while the run executes (`operations.k3s.join_token`).
"""

from __future__ import annotations

from typing import Literal

from deploys.k3s import cluster, config, units
from facts.k3s import token_secret
from oceanid.preflight import HostPlan, Site
from operations import k3s as k3s_ops
from operations import managed, services
from operations.managed import ManagedBinary, ManagedDirectory, ManagedFile, Manifest

Role = Literal["server", "agent"]


def unit_file(role: Role) -> str:
    return f"/etc/systemd/system/{units.UNIT_NAMES[role]}"


def config_document(plan: HostPlan, site: Site, role: Role) -> dict:
    """config.yaml for this node, from its host data and the cluster's shape."""
    data = plan.settings.host(plan.name).k3s
    first = cluster.servers(site)[0]
    is_first = role == "server" and plan.name == first.name
    has_token = cluster.token(site) is not None or not is_first
    return config.config(
        role,
        node_name=plan.name,
        address=cluster.address(plan),
        endpoint=cluster.endpoint(site, plan),
        node_ip=data.node_ip,
        flannel_iface=data.flannel_iface,
        labels=config.registration_labels(data.labels),
        taints=data.taints,
        token_file=config.TOKEN_FILE if has_token else None,
        cluster_init=is_first,
        join=None if is_first else cluster.endpoint(site, plan),
    )


def add_to(manifest: Manifest, plan: HostPlan, site: Site, role: Role) -> list[str]:
    """Declare the node's binary and files; return the paths whose change restarts k3s."""
    artifact = plan.settings.k3s
    manifest.directories += [ManagedDirectory("/etc/rancher"), ManagedDirectory("/etc/rancher/k3s")]
    manifest.binaries.append(
        ManagedBinary(units.BINARY, artifact.url, artifact.version, dict(artifact.sha256))
    )
    manifest.files += [
        ManagedFile(config.CONFIG, config.dump(config_document(plan, site, role)).encode()),
        ManagedFile(unit_file(role), units.unit(role).encode()),
        ManagedFile(units.MODULES_FILE, units.modules_load().encode()),
        ManagedFile(units.SYSCTL_FILE, units.sysctl().encode()),
    ]
    inputs = [units.BINARY, config.CONFIG]
    token = cluster.token(site)
    if token is not None:
        secret = (token_secret(token) + "\n").encode()
        manifest.files.append(ManagedFile(config.TOKEN_FILE, secret, mode="0600", secret=True))
        inputs.append(config.TOKEN_FILE)
    manifest.units.append(units.UNIT_NAMES[role])
    k3s_ops.probe_install(manifest)  # the token checks, read in the role's one fact
    return inputs


def install(manifest: Manifest, paths: list[str]) -> None:
    """The role's packages, folders and files (`paths`), then the kernel settings."""
    managed.packages(name="k3s packages", manifest=manifest)
    managed.directories(name="k3s directories", manifest=manifest)
    managed.files(name="k3s files", manifest=manifest, paths=paths)
    managed.sweep(name="k3s files no longer wanted", manifest=manifest)
    k3s_ops.kernel(
        name="k3s kernel modules and sysctls",
        manifest=manifest,
        modules_file=units.MODULES_FILE,
        sysctl_file=units.SYSCTL_FILE,
        modules=list(units.MODULES),
    )


def join_token(manifest: Manifest, plan: HostPlan, site: Site) -> None:
    """Without ESC k3s_token, a node other than the first server gets the generated token
    (again, when this run's sweep removes the one an earlier run wrote from ESC's)."""
    first = cluster.servers(site)[0]
    if cluster.token(site) is not None or plan.name == first.name:
        return
    present = k3s_ops.install_state(manifest)["token_file"]
    k3s_ops.join_token(
        name="k3s join token (the first server's)",
        path=config.TOKEN_FILE,
        server=first.name,
        present=present and config.TOKEN_FILE not in manifest.unwanted(),
    )


def start(manifest: Manifest, role: Role, inputs: list[str], health: str | None) -> None:
    """The pinned binary and the unit: a new version restarts k3s once, and is rolled back
    when k3s is not healthy on it."""
    services.binary_service(
        manifest,
        name=units.UNIT_NAMES[role].removesuffix(".service"),
        unit_name=units.UNIT_NAMES[role],
        unit_file=unit_file(role),
        inputs=inputs,
        health=health,
    )
