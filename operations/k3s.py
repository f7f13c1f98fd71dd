"""Operations over a k3s node and its cluster: the token, the kernel settings, the join wait, the
node labels and taints, and the one-line report of the minimal deploy.

Everything is decided while planning from facts (`facts.k3s`), so `--dry` shows what a run does;
the two things a fresh cluster cannot know while planning (the token k3s generated, the nodes
that have not registered yet) are done at execution by a `FunctionCommand`, with the same code
that plans them on a later run, which then has nothing to do.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Mapping, Sequence

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, operation
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.api.exceptions import FactProcessError
from pyinfra.context import ctx_host

from facts.k3s import SERVER_TOKEN, K3sInstall, K3sNode, K3sNodes, token_secret
from oceanid.settings import short_name
from operations.failure import fail_host, first_time, refuse
from operations.managed import Manifest

MANAGED_LABELS = "oceanid.cluster/managed-labels"  # annotation: the label keys we set
MANAGED_TAINTS = "oceanid.cluster/managed-taints"  # annotation: the taints (key:Effect) we set
JOIN_WAIT = 300  # seconds an agent waits for the server's API before it starts
NODES_WAIT = 300  # seconds the server waits for the nodes to register (a fresh cluster)
# The role's Manifest probes (read in its one ManagedState, not a fact of their own each)
INSTALL_PROBE = "k3s install"  # K3sInstall's command: every k3s node
NODES_PROBE = "k3s nodes"  # K3sNodes' command: the first server, which reconciles the labels


def probe_install(manifest: Manifest) -> None:
    """Have the role's one fact read what `install_state` needs."""
    manifest.probes[INSTALL_PROBE] = K3sInstall().command()


def probe_nodes(manifest: Manifest) -> None:
    """Have the role's one fact read the cluster's nodes (`nodes_state`)."""
    manifest.probes[NODES_PROBE] = K3sNodes().command()


def install_state(manifest: Manifest) -> dict:
    """`K3sInstall` as read by the role's fact (k3s absent where it could not be read: the
    role's operations refuse that host anyway). Output that is not k3s's fails the host."""
    try:
        return K3sInstall().process(manifest.probe(INSTALL_PROBE))
    except FactProcessError as error:
        fail_host(f"{host.name}: {error}; is /usr/local/bin/k3s the pinned k3s binary?")
        return K3sInstall().process([])


def nodes_state(manifest: Manifest) -> list[K3sNode] | None:
    """`K3sNodes` as read by the role's fact; None (the API did not answer) also when the
    output is not kubectl's, as at execution (`_reconcile_at_execution`)."""
    lines = manifest.probe(NODES_PROBE)
    try:
        return K3sNodes().process(lines) if lines else None
    except FactProcessError:
        return None


def token_sha256(token: str) -> str:
    """The SHA-256 of a token's secret: what `cluster_token` compares (never the token)."""
    return hashlib.sha256(token_secret(token).encode()).hexdigest()


@operation()
def cluster_token(manifest: Manifest, expected_sha256: str | None):
    """
    Refuse to go on when this server's cluster has a token other than ours.

    + manifest: the server role's Manifest, probing `K3sInstall` (`probe_install`)
    + expected_sha256: `token_sha256` of ESC ``k3s_token``, or None when ESC has none

    k3s keeps its token in ``/var/lib/rancher/k3s/server/token``; a config naming another would
    be refused by k3s at its next start, or worse, split the cluster. Both sides are compared
    by the SHA-256 of the secret (`K3sInstall`): no token is read off the host, nor passed to
    this operation, whose arguments pyinfra may print.
    """
    found = None if expected_sha256 is None else install_state(manifest)["token_sha256"]
    if expected_sha256 is None or found is None:
        host.noop("no cluster token to compare (a new cluster, or none set in ESC)")
        return
    if expected_sha256 != found:
        yield from refuse(
            f"{host.name}: this k3s cluster's token ({SERVER_TOKEN}) is not ESC k3s_token; "
            "the deploy never replaces a cluster's token. To rotate it, run `k3s token rotate "
            "--new-token=<new>` on the server, then store <new> as k3s_token in ESC"
        )
        return
    host.noop("the cluster's token is ESC k3s_token")


@operation()
def kernel(manifest: Manifest, modules_file: str, sysctl_file: str, modules: Sequence[str]):
    """
    Apply the kernel modules and sysctls k3s needs when their files changed.

    + manifest: the role's Manifest, holding both files
    + modules_file: the modules-load.d file (its modules are loaded now)
    + sysctl_file: the sysctl.d file (applied now with ``sysctl -p``)
    + modules: the modules the file lists

    In a container (the lab's nspawn hosts) both belong to the host's kernel and are not
    permitted: the step says so in one line and goes on.
    """
    if not manifest.will_change([modules_file, sysctl_file]):
        host.noop(f"{modules_file} and {sysctl_file} are in place and applied")
        return
    note = "container: kernel modules and sysctls belong to the host kernel; not applied here"
    yield StringCommand(
        "if",
        "systemd-detect-virt",
        "--container",
        "--quiet;",
        "then",
        "echo",
        QuoteString(note),
        ";",
        "else",
        "modprobe",
        "-a",
        *modules,
        "&&",
        "sysctl",
        "-q",
        "-p",
        QuoteString(sysctl_file),
        ";",
        "fi",
    )


@operation()
def wait_for_server(endpoint: str, needed: bool = True, wait: int = JOIN_WAIT):
    """
    Wait until the cluster's API answers at `endpoint` before this node starts joining.

    + endpoint: ``https://HOST:PORT``, the control-plane endpoint
    + needed: whether this node (re)starts k3s in this run; a node that does not, waits not
    + wait: at most this many seconds

    k3s's ``/ping`` answers ``pong`` without credentials (its certificate is the cluster's own
    CA's, hence ``-k``: nothing secret is sent).
    """
    url = f"{endpoint.rstrip('/')}/ping"
    if not needed:
        host.noop(f"k3s does not (re)start here: no wait for {url}")
        return
    loop = f"until curl -ksf --max-time 5 {shlex.quote(url)} >/dev/null; do sleep 2; done"
    yield StringCommand(
        "timeout",
        str(wait),
        "sh",
        "-c",
        QuoteString(loop),
        "||",
        "{",
        "echo",
        QuoteString(
            f"the k3s API at {url} did not answer within {wait}s; is the server up? "
            "this node was not joined"
        ),
        ">&2;",
        "exit",
        "1;",
        "}",
    )


def _connector_arguments(state, target) -> dict:
    """How pyinfra runs a command on `target` (its sudo, user...), outside an operation."""
    with ctx_host.use(target):
        arguments, _ = pop_global_arguments(state, target, {})
    return {k: v for k, v in arguments.items() if k in CONNECTOR_ARGUMENT_KEYS}


def _copy_token(state, host, server: str, path: str) -> bool:
    """Execution: the server's token, read over its connection, written 0600 here; the token
    goes on stdin, never on a command line or in output."""
    source = next((h for h in state.inventory if short_name(h.name) == server), None)
    if source is None or source not in state.active_hosts:
        host.log_styled(
            f"k3s server {server} is not connected: no token to join with",
            fg="red",
            log_func=logger.error,
        )
        return False
    ok, output = source.run_shell_command(
        StringCommand("cat", SERVER_TOKEN),
        print_output=False,
        print_input=False,
        **_connector_arguments(state, source),
    )
    token = output.stdout.strip() if ok else ""
    if not token:
        host.log_styled(
            f"could not read {SERVER_TOKEN} on {server}", fg="red", log_func=logger.error
        )
        return False
    new = f"{path}.oceanid-new"
    write = StringCommand(
        "umask 077 && mkdir -p",
        QuoteString(path.rsplit("/", 1)[0]),
        "&& cat >",
        QuoteString(new),
        "&& chmod 0600",
        QuoteString(new),
        "&& mv -f",
        QuoteString(new),
        QuoteString(path),
    )
    ok, _ = host.run_shell_command(
        write,
        print_output=False,
        print_input=False,
        _stdin=token + "\n",
        **_connector_arguments(state, host),
    )
    return ok


@operation()
def join_token(path: str, server: str, present: bool):
    """
    Give this node the token k3s generated on the first server (no k3s_token in ESC).

    + path: the node's 0600 token file (config.yaml's ``token-file``)
    + server: the first server's inventory name
    + present: whether the node has the file already (a node keeps the token it joined with)
    """
    if present:
        host.noop(f"{path} holds the cluster's token")
        return
    yield FunctionCommand(_copy_token, (server, path), {})


def _taint_text(key: str, value: str | None, effect: str) -> str:
    return f"{key}={value}:{effect}" if value else f"{key}:{effect}"


def _split_taint(taint: str) -> tuple[str, str | None, str]:
    key_value, _, effect = taint.rpartition(":")
    key, _, value = key_value.partition("=")
    return key, value or None, effect


def node_commands(
    node: K3sNode, labels: Mapping[str, str], taints: Sequence[str]
) -> list[list[str]]:
    """
    The ``kubectl`` argument lists that make `node` carry `labels` and `taints`: only for what
    differs. Labels and taints this deploy set before (its annotations on the node) and data no
    longer names are removed; those it never set are left alone.
    """
    name = node["name"]
    annotations = node.get("annotations") or {}
    had_labels = [k for k in annotations.get(MANAGED_LABELS, "").split(",") if k]
    had_taints = [t for t in annotations.get(MANAGED_TAINTS, "").split(",") if t]

    label_args = [f"{k}={v}" for k, v in sorted(labels.items()) if node["labels"].get(k) != v]
    label_args += [f"{k}-" for k in had_labels if k not in labels and k in node["labels"]]

    current = {(t["key"], t["effect"]): t["value"] for t in node["taints"]}
    wanted = {(k, e): v for k, v, e in map(_split_taint, taints)}
    taint_args = [
        _taint_text(k, v, e) for (k, e), v in wanted.items() if current.get((k, e), ()) != v
    ]
    for text in had_taints:
        key, _, effect = text.rpartition(":")
        if (key, effect) not in wanted and (key, effect) in current:
            taint_args.append(f"{key}:{effect}-")

    record = {
        MANAGED_LABELS: ",".join(sorted(labels)),
        MANAGED_TAINTS: ",".join(sorted(f"{k}:{e}" for k, e in wanted)),
    }
    note_args = [f"{k}={v}" for k, v in record.items() if annotations.get(k, "") != v]

    commands = []
    if label_args:
        commands.append(["label", "node", name, "--overwrite", *label_args])
    if taint_args:
        commands.append(["taint", "node", name, "--overwrite", *taint_args])
    if note_args:
        commands.append(["annotate", "node", name, "--overwrite", *note_args])
    return commands


def _kubectl(args: list[str]) -> StringCommand:
    return StringCommand("k3s", "kubectl", *(QuoteString(a) for a in args))


def _missing(nodes: list[K3sNode] | None, wanted: Mapping[str, dict]) -> list[str]:
    names = {node["name"] for node in nodes or []}
    return [name for name in wanted if name not in names]


def _reconcile_at_execution(state, host, wanted: Mapping[str, dict], wait: int) -> bool:
    """Execution: wait for the nodes to register, then label and taint them (a fresh cluster)."""
    connector = _connector_arguments(state, host)
    deadline = time.monotonic() + wait
    while True:
        ok, output = host.run_shell_command(
            StringCommand(K3sNodes().command()), print_output=False, **connector
        )
        try:
            nodes = K3sNodes().process(output.stdout_lines) if ok else None
        except FactProcessError:
            nodes = None
        missing = _missing(nodes, wanted)
        if nodes is not None and not missing:
            break
        if time.monotonic() > deadline:
            host.log_styled(
                f"k3s nodes not registered within {wait}s: {', '.join(missing)}; "
                "their labels and taints were not set",
                fg="red",
                log_func=logger.error,
            )
            return False
        time.sleep(5)
    by_name = {node["name"]: node for node in nodes}
    for name, want in wanted.items():
        for args in node_commands(by_name[name], want["labels"], want["taints"]):
            ok, output = host.run_shell_command(_kubectl(args), **connector)
            if not ok:
                host.log_styled(
                    f"k3s kubectl {' '.join(args[:3])}: {output.stderr}",
                    fg="red",
                    log_func=logger.error,
                )
                return False
    return True


@operation()
def node_labels(
    wanted: Mapping[str, dict], manifest: Manifest | None = None, wait: int = NODES_WAIT
):
    """
    Reconcile the nodes' labels and taints from data, through the API (one ``get nodes``).

    + manifest: the first server's Manifest, probing `K3sNodes` (`probe_nodes`); None elsewhere
    + wanted: node name -> ``{"labels": {key: value}, "taints": ["key[=value]:Effect"]}``;
      empty on every node but the first server (all queue it, so it runs after all joined)
    + wait: how long a fresh cluster's nodes may take to register (execution only)

    k3s applies config.yaml's labels and taints only when a node first registers, and the
    kubelet refuses ``node-role.kubernetes.io/*`` there: both are set here. A node that has not
    registered while planning (a fresh cluster) is reconciled at execution, once it has.
    """
    if not wanted or manifest is None:
        host.noop("node labels and taints are reconciled on the first k3s server")
        return
    nodes = nodes_state(manifest)
    missing = _missing(nodes, wanted)
    if missing:
        if first_time("nodes-later"):
            host.log(
                f"k3s nodes {', '.join(missing)} not registered yet: their labels and taints "
                "are set once they are"
            )
        yield FunctionCommand(_reconcile_at_execution, (dict(wanted), wait), {})
        return
    by_name = {node["name"]: node for node in nodes or []}
    commands = [
        args
        for name, want in wanted.items()
        for args in node_commands(by_name[name], want["labels"], want["taints"])
    ]
    if not commands:
        host.noop(f"{len(wanted)} node(s) carry the labels and taints their data gives")
        return
    for args in commands:
        yield _kubectl(args)


@operation()
def report(manifest: Manifest):
    """
    The minimal deploy (``enable_node_provisioning`` off): one line saying what k3s this node
    runs, changing nothing.

    + manifest: a Manifest of nothing but `probe_install` (still one batched fact)
    """
    found = install_state(manifest)
    version = found["version"] or "not installed"
    units = ", ".join(f"{unit} {active}" for unit, active in sorted(found["units"].items()))
    line = f"k3s: {version}; {units} (enable_node_provisioning is off: nothing changed)"
    if first_time("report"):
        logger.info(f"{host.print_prefix}{line}")
    host.noop(line)
    yield from ()
