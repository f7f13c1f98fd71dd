"""What a k3s server and an agent have in common: the pinned binary, the unit, config.yaml,
the token files, the kernel settings, and the steps that put them in place.

Tokens are 0600 root files named by config.yaml (`token-file`, `agent-token-file`), never in
the config, the unit or a command line. Servers and agents hold different ones (design.md §7):

- A server's token file holds ESC `k3s_token`'s secret. Without `k3s_token` the first server
  has none (k3s generates the cluster's token) and a later server gets a copy of the generated
  one while the run executes (`operations.k3s.join_token`). The server token never leaves the
  servers: with it one can join as a server and read the cluster's CA keys.
- Every server's `agent-token-file` holds the agent secret: ESC `k3sAgentToken`, else one the
  first server generates once (`operations.k3s.agent_secret`) and later servers copy. k3s then
  admits agents with it and no longer with the server token (pkg/daemons/control/deps/deps.go
  genUsers: the `node` user's password), and refuses it for a server join (server-bootstrap
  wants the `server` user).
- An agent's token file holds the agent token in full, `K10<CA hash>::node:<secret>`, copied
  from the first server's `server/agent-token` (what k3s writes there): with the CA hash the
  agent checks the cluster's CA before it sends the secret, on its first join too.
"""

from __future__ import annotations

from typing import Literal

from deploys.k3s import cluster, config, firewall, units
from facts.k3s import SERVER_AGENT_TOKEN, token_secret
from oceanid.model import HostPlan, Site, backups_on
from operations import k3s as k3s_ops
from operations import managed, services
from operations.managed import DesiredState, ManagedBinary, ManagedDirectory, ManagedFile

Role = Literal["server", "agent"]


def unit_file(role: Role) -> str:
    return f"/etc/systemd/system/{units.UNIT_NAMES[role]}"


def config_document(plan: HostPlan, site: Site, role: Role) -> dict:
    """config.yaml for this node, from its host data and the cluster's shape."""
    data = plan.settings.host(plan.name).k3s
    is_first = role == "server" and site.is_first_server(plan)
    has_token = cluster.token(site) is not None or not is_first or role == "agent"
    return config.config(
        role,
        node_name=plan.name,
        address=cluster.address(plan),
        endpoint=cluster.endpoint(site, plan),
        node_ip=data.node_ip,
        node_external_ip=data.node_external_ip,
        flannel_iface=data.flannel_iface,
        flannel_backend=plan.settings.k3s_flannel_backend if role == "server" else None,
        token_file=config.TOKEN_FILE if has_token else None,
        agent_token_file=config.AGENT_TOKEN_FILE if role == "server" else None,
        cluster_init=is_first,
        join=None if is_first else cluster.endpoint(site, plan),
    )


def labels_document(plan: HostPlan) -> dict:
    """config.LABELS_FILE's keys for this node: its labels (those the kubelet accepts at
    registration) and taints from host data; empty when it has none."""
    data = plan.settings.host(plan.name).k3s
    return config.node_labels(config.registration_labels(data.labels), data.taints)


def config_text(plan: HostPlan, site: Site, role: Role) -> str:
    """config.yaml's text; an agent's names the servers' flannel backend (`config.agent_note`)."""
    text = config.dump(config_document(plan, site, role))
    if role == "agent":
        text += config.agent_note(plan.settings.k3s_flannel_backend)
    return text


def etcd_snapshots_text(plan: HostPlan, site: Site) -> str | None:
    """config.ETCD_S3_FILE for a server, where the backups' object store is configured: every
    server here runs etcd (the first with cluster-init, the others joining it), and each
    takes k3s's scheduled snapshots; None where backups are off."""
    if not backups_on(plan.settings, site.secrets):
        return None
    backup = plan.settings.cluster_apps.backup
    return config.dump(
        config.etcd_snapshots(
            endpoint=site.secrets["backupS3Endpoint"],
            bucket=site.secrets["backupS3Bucket"],
            access_key=site.secrets["backupS3AccessKeyId"],
            secret_key=site.secrets["backupS3SecretAccessKey"],
            schedule=backup.etcd_snapshot_schedule,
            retention=backup.etcd_snapshot_retention,
        )
    )


def add_to(desired: DesiredState, plan: HostPlan, site: Site, role: Role) -> list[str]:
    """Declare the node's binary and files, and its firewall (deploys/k3s/firewall.py); return
    the paths whose change restarts k3s (the firewall's and the labels' are not among them)."""
    artifact = plan.settings.k3s
    desired.directories += [
        ManagedDirectory("/etc/rancher"),
        ManagedDirectory("/etc/rancher/k3s"),
        ManagedDirectory(config.DROP_IN_DIR),
    ]
    desired.binaries.append(
        ManagedBinary(units.BINARY, artifact.url, artifact.version, dict(artifact.sha256))
    )
    desired.files += [
        ManagedFile(config.CONFIG, config_text(plan, site, role).encode()),
        ManagedFile(unit_file(role), units.unit(role).encode()),
        ManagedFile(units.MODULES_FILE, units.modules_load().encode()),
        ManagedFile(units.SYSCTL_FILE, units.sysctl().encode()),
    ]
    labels = labels_document(plan)
    if labels:  # read by k3s when it starts, but no restart input (config.node_labels)
        desired.files.append(ManagedFile(config.LABELS_FILE, config.dump(labels).encode()))
    inputs = [units.BINARY, config.CONFIG]
    if role == "server":  # an agent's is copied from the first server (`agent_tokens`)
        for path, token in (
            (config.TOKEN_FILE, cluster.token(site)),
            (config.AGENT_TOKEN_FILE, cluster.agent_token(site)),
        ):
            if token is not None:
                secret = (token_secret(token) + "\n").encode()
                desired.files.append(ManagedFile(path, secret, mode="0600", secret=True))
                inputs.append(path)
        snapshots = etcd_snapshots_text(plan, site)
        if snapshots is not None:  # read by k3s when it starts: a restart input
            desired.files.append(
                ManagedFile(config.ETCD_S3_FILE, snapshots.encode(), mode="0600", secret=True)
            )
            inputs.append(config.ETCD_S3_FILE)
    desired.units.append(units.UNIT_NAMES[role])
    firewall.add_to(desired, plan, site)
    k3s_ops.probe_install(desired)  # the token checks, read in the role's one fact
    return inputs


def install(desired: DesiredState, paths: list[str]) -> None:
    """The role's packages, folders and files (`paths`), the kernel settings, then the
    firewall loaded: all before k3s (re)starts."""
    managed.packages(name="k3s packages", desired=desired)
    managed.directories(name="k3s directories", desired=desired)
    managed.files(name="k3s files", desired=desired, paths=paths)
    managed.sweep(name="k3s files no longer wanted", desired=desired)
    k3s_ops.kernel(
        name="k3s kernel modules and sysctls",
        desired=desired,
        modules_file=units.MODULES_FILE,
        sysctl_file=units.SYSCTL_FILE,
        modules=list(units.MODULES),
    )
    firewall.start(desired)


def _kept(desired: DesiredState, path: str, there: bool) -> bool:
    """Whether a token file found on the host stays (this run's sweep does not remove it)."""
    return there and path not in desired.unwanted()


def agent_token_present(desired: DesiredState, site: Site) -> bool:
    """Whether an agent holds the agent token already: the full ``::node:`` form in its token
    file (not the server token an older deploy gave it), of ESC k3sAgentToken when ESC has one."""
    found = k3s_ops.install_state(desired)
    expected = cluster.agent_token(site)
    return _kept(desired, config.TOKEN_FILE, found["token_file_form"] == "node") and (
        expected is None or found["token_file_sha256"] == k3s_ops.token_sha256(expected)
    )


def server_tokens(desired: DesiredState, plan: HostPlan, site: Site) -> bool:
    """The tokens a server is given while the run executes: the generated server token on a
    later server, and the agent secret (generated on the first server, then copied), when ESC
    has none. True when one is written, so k3s restarts and reads it."""
    first = site.first_server.name
    found = k3s_ops.install_state(desired)
    written = False
    if cluster.token(site) is None and plan.name != first:
        present = _kept(desired, config.TOKEN_FILE, found["token_file"])
        k3s_ops.join_token(
            name="k3s join token (the first server's)",
            path=config.TOKEN_FILE,
            server=first,
            present=present,
        )
        written = not present
    if cluster.agent_token(site) is None:
        there = found["agent_token_file_sha256"] is not None
        present = _kept(desired, config.AGENT_TOKEN_FILE, there)
        if plan.name == first:  # this line first: a later server copies it in the next one
            k3s_ops.agent_secret(
                name="k3s agent secret (generated on the first server)",
                path=config.AGENT_TOKEN_FILE,
                present=present,
            )
        else:
            k3s_ops.join_token(
                name="k3s agent secret (the first server's)",
                path=config.AGENT_TOKEN_FILE,
                server=first,
                present=present,
                source=config.AGENT_TOKEN_FILE,
            )
        written = written or not present
    return written


def agent_tokens(desired: DesiredState, site: Site) -> None:
    """An agent's token: the first server's agent token, copied in full while the run executes
    (once the server answers), unless the agent holds it already (`agent_token_present`)."""
    k3s_ops.join_token(
        name="k3s agent token (the first server's)",
        path=config.TOKEN_FILE,
        server=site.first_server.name,
        present=agent_token_present(desired, site),
        source=SERVER_AGENT_TOKEN,
    )


def start(
    desired: DesiredState,
    role: Role,
    inputs: list[str],
    health: str | None,
    *,
    restart: bool = False,
    version: str | None = None,
) -> None:
    """The pinned binary and the unit: a new version restarts k3s once, and is rolled back
    when k3s is not healthy on it. `restart`: a token was written in this run (k3s reads
    tokens only when it starts). `version` (servers): the version installed; servers then
    restart on a new binary one at a time, none after one that failed (`k3s_ops.server_turn`)."""
    turn = k3s_ops.server_turn(desired, version) if version is not None else None
    services.binary_service(
        desired,
        name=units.UNIT_NAMES[role].removesuffix(".service"),
        unit_name=units.UNIT_NAMES[role],
        unit_file=unit_file(role),
        inputs=inputs,
        health=health,
        restart=restart,
        around=turn,
        serial=turn is not None,
    )
