"""Operations over a k3s node and its cluster: the token, the kernel settings, the join wait, the
node labels and taints, and the one-line report of the minimal deploy.

Everything is decided while planning from facts (`facts.k3s`), so `--dry` shows what a run does;
the two things a fresh cluster cannot know while planning (the token k3s generated, the nodes
that have not registered yet) are done at execution by a `FunctionCommand`, with the same code
that plans them on a later run, which then has nothing to do.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, operation
from pyinfra.api.command import make_formatted_string_command
from pyinfra.api.exceptions import FactProcessError

from facts.k3s import (
    AGENT_TOKEN_RE,
    DATASTORE_DIR,
    SERVER_AGENT_TOKEN,
    SERVER_TOKEN,
    VERSION_RE,
    K3sAddons,
    K3sInstall,
    K3sNode,
    K3sNodes,
    token_secret,
)
from oceanid import pyinfra_internals as internals
from oceanid.node_labels import taint_text
from oceanid.settings import short_name
from operations import progress
from operations.failure import fail_host, first_time, refuse
from operations.managed import DesiredState

MANAGED_LABELS = "oceanid.cluster/managed-labels"  # annotation: the label keys we set
MANAGED_TAINTS = "oceanid.cluster/managed-taints"  # annotation: the taints (key:Effect) we set
JOIN_WAIT = 300  # seconds an agent waits for the server's API before it starts
NODES_WAIT = 300  # seconds the server waits for the nodes to register (a fresh cluster)
AGENT_TOKEN_WAIT = 120  # seconds an agent waits for k3s to write the server's agent token
# The role's DesiredState probes (read in its one ManagedState, not a fact of their own each)
INSTALL_PROBE = "k3s install"  # K3sInstall's command: every k3s node
NODES_PROBE = "k3s nodes"  # K3sNodes' command: the first server, which reconciles the labels


def probe_install(desired: DesiredState) -> None:
    """Have the role's one fact read what `install_state` needs."""
    desired.probes[INSTALL_PROBE] = K3sInstall().command()


def probe_nodes(desired: DesiredState) -> None:
    """Have the role's one fact read the cluster's nodes (`nodes_state`)."""
    desired.probes[NODES_PROBE] = K3sNodes().command()


def install_state(desired: DesiredState) -> dict:
    """`K3sInstall` as read by the role's fact (k3s absent where it could not be read: the
    role's operations refuse that host anyway). Output that is not k3s's fails the host."""
    try:
        return K3sInstall().process(desired.probe(INSTALL_PROBE))
    except FactProcessError as error:
        fail_host(f"{host.name}: {error}; is /usr/local/bin/k3s the pinned k3s binary?")
        return K3sInstall().process([])


def nodes_state(desired: DesiredState) -> list[K3sNode] | None:
    """`K3sNodes` as read by the role's fact; None (the API did not answer) also when the
    output is not kubectl's, as at execution (`_reconcile_at_execution`)."""
    lines = desired.probe(NODES_PROBE)
    try:
        return K3sNodes().process(lines) if lines else None
    except FactProcessError:
        return None


def token_sha256(token: str) -> str:
    """The SHA-256 of a token's secret: what `cluster_token` compares (never the token)."""
    return hashlib.sha256(token_secret(token).encode()).hexdigest()


@operation()
def cluster_token(desired: DesiredState, expected_sha256: str | None):
    """
    Refuse to go on when this server's cluster has a token other than ours.

    + desired: the server role's DesiredState, probing `K3sInstall` (`probe_install`)
    + expected_sha256: `token_sha256` of ESC ``k3s_token``, or None when ESC has none

    k3s keeps its token in ``/var/lib/rancher/k3s/server/token``; a config naming another would
    be refused by k3s at its next start, or worse, split the cluster. Both sides are compared
    by the SHA-256 of the secret (`K3sInstall`): no token is read off the host, nor passed to
    this operation, whose arguments pyinfra may print.
    """
    found = None if expected_sha256 is None else install_state(desired)["token_sha256"]
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
def kernel(desired: DesiredState, modules_file: str, sysctl_file: str, modules: Sequence[str]):
    """
    Apply the kernel modules and sysctls k3s needs when their files changed.

    + desired: the role's DesiredState, holding both files
    + modules_file: the modules-load.d file (its modules are loaded now)
    + sysctl_file: the sysctl.d file (applied now with ``sysctl -p``)
    + modules: the modules the file lists

    In a container (the lab's nspawn hosts) both belong to the host's kernel and are not
    permitted: the step says so in one line and goes on.
    """
    if not desired.will_change([modules_file, sysctl_file]):
        host.noop(f"{modules_file} and {sysctl_file} are in place and applied")
        return
    note = "container: kernel modules and sysctls belong to the host kernel; not applied here"
    yield make_formatted_string_command(
        "if systemd-detect-virt --container --quiet; then echo {note} ; "
        "else modprobe -a {modules} && sysctl -q -p {sysctl_file} ; fi",
        note=QuoteString(note),
        modules=StringCommand(*map(QuoteString, modules)),
        sysctl_file=QuoteString(sysctl_file),
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
    ping = ["timeout", str(wait), "sh", "-c", QuoteString(loop)]
    # says what it waits for every progress.EVERY seconds, shown as it comes
    yield progress.Shown(
        *progress.watch(f"the k3s API at {url}", wait, *ping),
        "||",
        "{",
        "echo",
        QuoteString(
            f"the k3s API at {url} did not answer within {wait}s, so this node was not "
            "joined. Likeliest causes: k3s on the server is not up (`journalctl -u k3s -n 50` "
            "there); the server's firewall (table inet oceanid) does not admit this node's "
            "address (hosts.<this node>.k3s address/node_ip); the address does not resolve "
            "or route from here (hosts.<server>.k3s.address). Try `curl -k` of that URL here"
        ),
        ">&2;",
        "exit",
        "1;",
        "}",
    )


def _connector_arguments(state, target) -> dict:
    """How pyinfra runs a command on `target` (its sudo, user...), outside an operation."""
    return internals.connector_arguments(state, target)


def _read_token(state, source_host, server: str, source: str, host) -> str:
    """Execution: the first line of `source` on the server, over its connection, never printed.
    k3s's agent token (SERVER_AGENT_TOKEN) is waited for in its full node form: k3s rewrites
    it when it starts with `agent-token-file` (pkg/server/server.go printTokens), and until
    then it is a symlink to the server token, which an agent must never be given. A wait says
    what it waits for every progress.EVERY seconds."""
    start = time.monotonic()
    deadline, said = start + (AGENT_TOKEN_WAIT if source == SERVER_AGENT_TOKEN else 0), start
    while True:
        ok, output = source_host.run_shell_command(
            StringCommand("head", "-n1", source),
            print_output=False,
            print_input=False,
            **_connector_arguments(state, source_host),
        )
        token = output.stdout.strip() if ok else ""
        if source != SERVER_AGENT_TOKEN or AGENT_TOKEN_RE.fullmatch(token):
            if not token:
                host.log_styled(
                    f"could not read {source} on {server}", fg="red", log_func=logger.error
                )
            return token
        now = time.monotonic()
        if now > deadline:
            host.log_styled(
                f"{source} on {server} holds no agent token (K10<CA hash>::node:<secret>) after "
                f"{AGENT_TOKEN_WAIT}s; is agent-token-file in its config.yaml and k3s running "
                "there? this node was given no token",
                fg="red",
                log_func=logger.error,
            )
            return ""
        if now - said >= progress.EVERY:
            said = now
            what = f"k3s on {server} to write the agent token in {source}"
            progress.say(host, what, now - start, AGENT_TOKEN_WAIT)
        time.sleep(2)


def _copy_token(state, host, server: str, path: str, source: str = SERVER_TOKEN) -> bool:
    """Execution: the server's `source`, read over its connection, written 0600 here; the token
    goes on stdin, never on a command line or in output."""
    origin = next((h for h in state.inventory if short_name(h.name) == server), None)
    if origin is None or origin not in internals.active_hosts(state):
        host.log_styled(
            f"k3s server {server} is not connected: no token to join with",
            fg="red",
            log_func=logger.error,
        )
        return False
    token = _read_token(state, origin, server, source, host)
    if not token:
        return False
    write = make_formatted_string_command(
        "umask 077 && mkdir -p {folder} && cat > {new} && chmod 0600 {new} && mv -f {new} {path}",
        folder=QuoteString(path.rsplit("/", 1)[0]),
        new=QuoteString(f"{path}.oceanid-new"),
        path=QuoteString(path),
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
def join_token(path: str, server: str, *, present: bool, source: str = SERVER_TOKEN):
    """
    Give this node a token from the first server, read there and written here while the run
    executes (a token k3s or this deploy generated there is not known while planning).

    + path: the node's 0600 token file
    + server: the first server's inventory name
    + present: whether the node holds the right token already (then nothing is copied)
    + source: the file on the server: its server token (for a joining server, no k3s_token in
      ESC), its agent secret (AGENT_TOKEN_FILE, for a joining server), or k3s's agent token
      (SERVER_AGENT_TOKEN, for an agent: ``K10<CA hash>::node:<secret>`` in full, so the agent
      checks the cluster's CA on its first join, and holds no server token)
    """
    if present:
        host.noop(f"{path} holds the token copied from {server}'s {source}")
        return
    yield internals.host_callback(_copy_token, server, path, source)


@operation()
def agent_secret(path: str, *, present: bool):
    """
    Generate the cluster's agent secret on the first server, once (no k3sAgentToken in ESC).

    + path: the server's 0600 ``agent-token-file``
    + present: whether the file is there already (it is kept: agents joined with it)

    32 random bytes in hex, made on the host from /dev/urandom: the secret never crosses the
    connection, nor shows in output or in a command line.
    """
    if present:
        host.noop(f"{path} holds the cluster's agent secret")
        return
    yield make_formatted_string_command(
        "test -s {path} || {{ umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d {blanks} "
        "> {new} && echo >> {new} && chmod 0600 {new} && mv -f {new} {path} ; }}",
        path=QuoteString(path),
        blanks=QuoteString(" \\n"),  # od's spaces and line breaks: one line of hex digits
        new=QuoteString(f"{path}.oceanid-new"),
    )


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
        taint_text(k, v, e) for (k, e), v in wanted.items() if current.get((k, e), ()) != v
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


#: How often a wait for nodes says what it waits for (issue 23: at least every 10 s).
NODE_WAIT_SAY_S = 10


def not_registered(missing: list[str], wait: int) -> str:
    """What a wait for nodes waited for, its likeliest causes and what to run."""
    names = ", ".join(missing) or "(the server's API did not answer)"
    first = missing[0] if missing else "<node>"
    return (
        f"k3s nodes not registered within {wait}s: {names}; waited for each to appear in "
        "`k3s kubectl get nodes` on this server, so their labels and taints were not set. "
        "Likeliest causes: the firewall (table inet oceanid) does not admit the node: its "
        "hosts.<name>.k3s address/node_ip must be the address its traffic arrives from; the "
        "node cannot reach the server at hosts.<server>.k3s.address (6443, or k3s_lb_port); "
        "its token was refused; the clocks differ (certificates not yet valid). Run "
        f"`ssh {first} journalctl -u k3s-agent -n 50` and `timedatectl` there, then "
        "`make status`; a second `make deploy-full` picks up where this one stopped"
    )


def _reconcile_at_execution(state, host, wanted: Mapping[str, dict], wait: int) -> bool:
    """Execution: wait for the nodes to register, then label and taint them (a fresh cluster)."""
    connector = _connector_arguments(state, host)
    start = time.monotonic()
    deadline, said = start + wait, start
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
        now = time.monotonic()
        if now > deadline:
            host.log_styled(not_registered(missing, wait), fg="red", log_func=logger.error)
            return False
        if now - said >= NODE_WAIT_SAY_S:  # a long wait says what it waits for
            said = now
            logger.info(
                f"{host.print_prefix}waiting for k3s nodes to register with the server: "
                f"{', '.join(missing) or 'the API to answer'} ({now - start:.0f}s of {wait}s)"
            )
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
    wanted: Mapping[str, dict], desired: DesiredState | None = None, wait: int = NODES_WAIT
):
    """
    Reconcile the nodes' labels and taints from data, through the API (one ``get nodes``).

    + desired: the first server's DesiredState, probing `K3sNodes` (`probe_nodes`); None elsewhere
    + wanted: node name -> ``{"labels": {key: value}, "taints": ["key[=value]:Effect"]}``;
      empty on every node but the first server (all queue it, so it runs after all joined)
    + wait: how long a fresh cluster's nodes may take to register (execution only)

    k3s applies config's taints only when a node first registers and its labels only when k3s
    starts (adding, never removing; pkg/agent/run.go), and the kubelet refuses
    ``node-role.kubernetes.io/*`` there: all are set here, on the running nodes. A node that has not
    registered while planning (a fresh cluster) is reconciled at execution, once it has.
    """
    if not wanted or desired is None:
        host.noop("node labels and taints are reconciled on the first k3s server")
        return
    nodes = nodes_state(desired)
    missing = _missing(nodes, wanted)
    if missing:
        if first_time("nodes-later"):
            host.log(
                f"k3s nodes {', '.join(missing)} not registered yet: their labels and taints "
                "are set once they are"
            )
        yield internals.host_callback(_reconcile_at_execution, dict(wanted), wait)
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
def report(desired: DesiredState):
    """
    The minimal deploy (``enable_node_provisioning`` off): one line saying what k3s this node
    runs, changing nothing.

    + desired: a DesiredState of nothing but `probe_install` (still one batched fact)
    """
    found = install_state(desired)
    version = found["version"] or "not installed"
    units = ", ".join(f"{unit} {active}" for unit, active in sorted(found["units"].items()))
    line = f"k3s: {version}; {units} (enable_node_provisioning is off: nothing changed)"
    if first_time("report"):
        logger.info(f"{host.print_prefix}{line}")
    host.noop(line)
    yield from ()


# ---- upgrades: Kubernetes' version-skew rules, a snapshot first, the datastore kept

# "v1.33.4+k3s1" -> 1, 33, 4, 1 (a pre-release such as "-rc1" is left out of the order)
RELEASE_RE = re.compile(r"v(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+k3s(\d+))?")
# What `k3s etcd-snapshot save` logs for each snapshot the server made (k3s-io/k3s
# pkg/cli/etcdsnapshot/etcd_snapshot.go save: logrus.Infof("Snapshot %s saved.", name))
SNAPSHOT_SAVED = re.compile(r"Snapshot (\S+) saved\.")
SNAPSHOT_PREFIX = "pre-upgrade"
# Per pyinfra run: server name -> "started" (its new binary is being started) or "done" (it
# came up healthy on it). Servers restart one at a time (`_serial`), so one left "started"
# when the next one's turn comes is an upgrade that failed and was rolled back.
_UPGRADES: WeakKeyDictionary = WeakKeyDictionary()


def release(version: str) -> tuple[int, int, int, int]:
    """(major, minor, patch, k3s build) of a k3s version, for ordering versions."""
    match = RELEASE_RE.match(version)
    if match is None:
        raise ValueError(f"not a k3s version: {version!r} (such as v1.33.4+k3s1)")
    return tuple(int(part or 0) for part in match.groups())  # type: ignore[return-value]


def version_step_problem(installed: str | None, wanted: str) -> str | None:
    """Why going from `installed` to `wanted` breaks Kubernetes' upgrade rules, or None.

    Kubernetes upgrades one minor version at a time (its version-skew policy: kube-apiserver
    instances differ by at most one minor version, and each minor version migrates what the
    one before it stored); k3s cannot go back a minor version without restoring its datastore
    from a snapshot taken before the upgrade."""
    if installed is None or installed == wanted:
        return None
    have, want = release(installed), release(wanted)
    if have[0] != want[0]:
        return f"k3s {installed} -> {wanted} changes the major version; the deploy refuses it"
    if want[1] > have[1] + 1:
        steps = ", then ".join(f"v{want[0]}.{minor}.x" for minor in range(have[1] + 1, want[1]))
        return (
            f"k3s {installed} -> {wanted} skips a minor version: Kubernetes upgrades one minor "
            f"version at a time. Set k3s.version to a {steps} release first and converge, "
            f"then {wanted}"
        )
    if want[1] < have[1]:
        return (
            f"k3s {installed} -> {wanted} goes back a minor version, which k3s cannot do "
            "without restoring its datastore from a snapshot taken before the upgrade "
            "(k3s server --cluster-reset --cluster-reset-restore-path=<snapshot>); "
            f"keep k3s.version at a v{have[0]}.{have[1]}.x release"
        )
    return None


def refuse_now(desired: DesiredState, version: str, datastore_args: dict | None = None) -> None:
    """While the deploy file runs: fail this host at once when `version_step` (and, for a
    server, `datastore` with `datastore_args`) would refuse it. With ``-y`` pyinfra runs no
    operation's body before executing, so without this the host's earlier steps (the base
    role's) would run before the refusal; this way nothing runs on it. The operations still
    say it (once) in a dry run."""
    problems = [version_step_problem(install_state(desired)["version"], version)]
    if datastore_args is not None:
        problems.append(datastore_problem(install_state(desired), **datastore_args))
    for problem in problems:
        if problem is not None:
            fail_host(f"{host.name}: {problem}")
            return


@operation()
def version_step(desired: DesiredState, version: str):
    """
    Refuse, before anything runs, a k3s upgrade that skips a minor version or goes back one.

    + desired: the node's role DesiredState, probing `K3sInstall` (`probe_install`)
    + version: the pinned version (settings ``k3s.version``)
    """
    installed = install_state(desired)["version"]
    problem = version_step_problem(installed, version)
    if problem is not None:
        yield from refuse(f"{host.name}: {problem}")
        return
    if installed in (None, version):
        host.noop(f"k3s {version} is the pinned version{'' if installed else ' (a new node)'}")
    else:
        host.noop(f"k3s {installed} -> {version} is one minor version at most")


def datastore_problem(found: dict, *, cluster_init: bool, convert: bool, key: str) -> str | None:
    """Why starting this server (`K3sInstall` as `found`) would convert its datastore by
    surprise, or None."""
    sqlite_only = found["sqlite_datastore"] and not found["etcd_datastore"]
    if not (cluster_init and sqlite_only and not convert):
        return None
    return (
        f"k3s here holds a SQLite datastore ({DATASTORE_DIR}/state.db) and the deploy sets "
        "cluster-init, which converts it to etcd at k3s's next start, with no way back; copy "
        f"state.db, then set {key}: true to convert it"
    )


@operation()
def datastore(desired: DesiredState, *, cluster_init: bool, convert: bool, key: str):
    """
    Refuse to start a SQLite datastore's server with ``cluster-init``, unless data says so.

    + desired: the server's role DesiredState, probing `K3sInstall` (`probe_install`)
    + cluster_init: whether this server's config.yaml sets ``cluster-init``
    + convert: the host's ``k3s.convert_datastore_to_etcd``
    + key: that setting's full key, for the message

    k3s finds no etcd on disk and, asked for cluster-init, starts embedded etcd
    (pkg/cluster/managed.go assignManagedDriver) and moves the SQLite datastore it finds into
    it: a one-way change, made at its next start with no backup of its own.
    """
    found = install_state(desired)
    problem = datastore_problem(found, cluster_init=cluster_init, convert=convert, key=key)
    if problem is not None:
        yield from refuse(f"{host.name}: {problem}")
        return
    sqlite_only = found["sqlite_datastore"] and not found["etcd_datastore"]
    if sqlite_only:
        host.noop(
            f"k3s's SQLite datastore is converted to etcd at its next start ({key})"
            if cluster_init
            else "k3s keeps its SQLite datastore"
        )
        return
    host.noop("k3s's datastore is etcd" if found["etcd_datastore"] else "no k3s datastore yet")


def _log_error(target, message: str) -> None:
    target.log_styled(message, fg="red", log_func=logger.error)


def _take_snapshot(state, host, name: str, version: str) -> bool:
    """Execution: `k3s etcd-snapshot save --name <name>` here; print the snapshot's name."""

    def tell(waited: float) -> None:
        progress.say(host, f"k3s etcd-snapshot save --name {name}", waited)

    with progress.telling(tell):  # a large datastore takes a while
        ok, output = host.run_shell_command(
            StringCommand("k3s", "etcd-snapshot", "save", "--name", QuoteString(name)),
            print_output=False,
            **_connector_arguments(state, host),
        )
    text = "\n".join(output.stdout_lines + output.stderr_lines)
    saved = SNAPSHOT_SAVED.findall(text)
    if not ok or not saved:
        last = (output.stderr_lines or output.stdout_lines or ["no output"])[-1]
        _log_error(
            host,
            f"k3s etcd-snapshot save failed ({last}): k3s was not upgraded to {version} "
            "without a snapshot to go back to",
        )
        return False
    host.log_styled(
        f"etcd snapshot {', '.join(saved)} saved before k3s is upgraded to {version} "
        "(`k3s etcd-snapshot ls` lists it)",
        fg="green",
        log_func=logger.info,
    )
    return True


@operation()
def etcd_snapshot(desired: DesiredState, version: str):
    """
    Take an etcd snapshot on the first server before its k3s binary is replaced.

    + desired: the first server's role DesiredState, probing `K3sInstall` (`probe_install`)
    + version: the version being installed; the snapshot is ``pre-upgrade-<version>``

    A minor version migrates what the datastore holds and cannot be rolled back without it;
    k3s's own snapshot (k3s-io/k3s pkg/cli/cmds/etcd_snapshot.go, `save --name`) is written
    by the running server to ``<data-dir>/server/db/snapshots/<name>-<node>-<unix time>``.
    Kubernetes object names allow no ``+``, so the version's ``+`` becomes ``-``.
    """
    found = install_state(desired)
    installed = found["version"]
    if installed is None or installed == version:
        host.noop("k3s is not upgraded here: no etcd snapshot")
        return
    if not found["etcd_datastore"]:
        host.noop(f"k3s {installed} -> {version} without embedded etcd: no etcd snapshot")
        return
    name = f"{SNAPSHOT_PREFIX}-{version.replace('+', '-')}"
    if first_time("snapshot"):
        host.log(f"etcd snapshot {name} is taken before k3s {installed} is replaced")
    yield internals.host_callback(_take_snapshot, name, version)


def replaced_binaries(desired: DesiredState) -> list[str]:
    """The manifest's binaries this run replaces that were there before (an upgrade)."""
    current = desired.state()["paths"]
    return [
        binary.path
        for binary in desired.binaries
        if current.get(binary.path) is not None and desired.will_change([binary.path])
    ]


def _name(target) -> str:
    return short_name(target.name)


def _restore(state, host, paths: Sequence[str]) -> None:
    """Put each path's ``.previous`` back (a binary replaced in this run, not started on)."""
    for path in paths:
        host.run_shell_command(
            make_formatted_string_command(
                "if [ -f {previous} ]; then mv -f {previous} {path} ; fi",
                previous=QuoteString(f"{path}.previous"),
                path=QuoteString(path),
            ),
            print_output=False,
            **_connector_arguments(state, host),
        )


def _server_turn(state, host, version: str, restore: Sequence[str]) -> bool:
    """Execution, right before a server restarts on its new binary: go on only when no server
    failed its upgrade in this run; else put the old binary back and stop here."""
    record = _UPGRADES.setdefault(state, {})
    failed = sorted(name for name, step in record.items() if step == "started")
    failed += sorted(_name(h) for h in internals.failed_hosts(state) if _name(h) in record)
    if failed:
        _restore(state, host, restore)
        _log_error(
            host,
            f"k3s server {', '.join(dict.fromkeys(failed))} failed its upgrade in this run: k3s "
            f"on {_name(host)} was not upgraded to {version} (servers one at a time; its "
            "binary was put back)",
        )
        return False
    record[_name(host)] = "started"
    return True


def _server_done(state, host) -> bool:
    _UPGRADES.setdefault(state, {})[_name(host)] = "done"
    return True


def server_turn(desired: DesiredState, version: str) -> tuple[FunctionCommand, FunctionCommand]:
    """The commands around a server's restart on a new binary (`services.binary_service`'s
    `around`): one server at a time, none after one that failed in this run."""
    return (
        internals.host_callback(_server_turn, version, replaced_binaries(desired)),
        internals.host_callback(_server_done),
    )


def _servers_upgraded(state, host, servers: Sequence[str], version: str) -> bool:
    """Execution, before an agent's binary is replaced: every server is in this run, did not
    fail, and runs `version` or newer (read there: a rolled-back server runs its old one)."""
    record = _UPGRADES.get(state, {})
    for name in servers:
        origin = next((h for h in state.inventory if _name(h) == name), None)
        problem = None
        failed = origin is None or origin in internals.failed_hosts(state)
        if failed or record.get(name) == "started":
            problem = f"k3s server {name} failed in this run"
        elif origin not in internals.active_hosts(state):
            problem = f"k3s server {name} is not in this run"
        else:
            ok, output = origin.run_shell_command(
                StringCommand("k3s", "--version"),
                print_output=False,
                print_input=False,
                **_connector_arguments(state, origin),
            )
            lines = output.stdout_lines if ok else []
            match = VERSION_RE.match(lines[0]) if lines else None
            runs = match.group(1) if match else None
            if runs is None or release(runs) < release(version):
                problem = f"k3s server {name} runs {runs or 'no k3s'}, not {version}"
        if problem is not None:
            _log_error(
                host,
                f"{problem}: k3s on {_name(host)} was not upgraded to {version} (agents only "
                "once every server runs it: a kubelet is never newer than its API server)",
            )
            return False
    return True


@operation()
def servers_first(desired: DesiredState, servers: Sequence[str], version: str):
    """
    Let an agent's k3s binary change only once every server runs that version in this run.

    + desired: the agent's role DesiredState, probing `K3sInstall` (`probe_install`)
    + servers: the k3s servers' inventory names
    + version: the version the agent is given

    Kubernetes' version-skew policy: a kubelet must not be newer than kube-apiserver. Servers'
    operations come first in a run (deploys/k3s/__init__.py), so this step runs after theirs:
    it checks each server at execution (failed in this run, or the version it runs), and the
    agent's binary is not replaced when one is not there yet. A server outside this run
    (``--limit``) is refused while planning already.
    """
    installed = install_state(desired)["version"]
    if installed == version:
        host.noop(f"k3s stays {version}: nothing to wait for on the servers")
        return
    current = internals.current_state()
    in_run = {_name(h): h for h in current.inventory}
    failed = [name for name in servers if in_run.get(name) in internals.failed_hosts(current)]
    if failed:  # with -y this body runs at execution, after the servers' own operations
        yield from refuse(
            f"k3s server {', '.join(failed)} failed in this run: k3s on {host.name} was not "
            f"upgraded to {version} (agents only once every server runs it: a kubelet is "
            "never newer than its API server)"
        )
        return
    absent = [
        n for n in servers if n not in in_run or in_run[n] not in internals.active_hosts(current)
    ]
    if absent:
        yield from refuse(
            f"{host.name}: k3s {installed or '(none)'} -> {version} on an agent waits for every "
            f"server to run {version} first; {', '.join(absent)} not in this run: converge the "
            "servers first (or without --limit)"
        )
        return
    yield internals.host_callback(_servers_upgraded, list(servers), version)


# ---- the auto-deploy manifests: what k3s's deploy controller applied of them

ADDONS = "addons.k3s.cattle.io"
ADDON_NAMESPACE = "kube-system"
ADDONS_PROBE = "k3s addons"  # K3sAddons' command: the first server, which writes the manifests
APPLY_WAIT = 60  # seconds k3s has to apply a manifest written (its rescan: every 15 s)
# The events k3s's deploy controller records on an Addon whose file it could not apply
# (pkg/deploy/controller.go), its message saying why.
APPLY_FAILURES = (
    "ApplyManifestFailed",
    "ParseManifestFailed",
    "ReadManifestFailed",
    "ValidateManifestFailed",
)


def probe_addons(desired: DesiredState) -> None:
    """Have the role's one fact read the Addons' checksums (`addons_state`)."""
    desired.probes[ADDONS_PROBE] = K3sAddons().command()


def addons_state(desired: DesiredState) -> dict[str, str] | None:
    """`K3sAddons` as read by the role's fact; None where it is not known (the API did not
    answer, it was not probed, or its output is not kubectl's)."""
    lines = desired.probe(ADDONS_PROBE)
    try:
        return K3sAddons().process(lines) if lines else None
    except FactProcessError:
        return None


def addon_name(path: str) -> str:
    """The Addon k3s keeps for an auto-deploy file: its name up to the first dot (k3s's
    pkg/deploy/controller.go `basename`)."""
    return path.rsplit("/", 1)[-1].split(".", 1)[0]


def _applied_script(wanted: Mapping[str, str], wait: int) -> str:
    """Shell: poll the Addons until each of `wanted` (name -> checksum) holds its checksum, at
    most `wait` seconds; else print, per Addon, k3s's latest failure event, and exit 1."""
    pairs = " ".join(shlex.quote(f"{name}={checksum}") for name, checksum in wanted.items())
    jsonpath = '{range .items[*]}{.metadata.name}={.spec.checksum}{"\\n"}{end}'
    failures = "|".join(APPLY_FAILURES)
    events = (
        '{range .items[?(@.involvedObject.name==\\"$name\\")]}{.reason}: {.message}'
        '{\\"\\\\n\\"}{end}'
    )
    kubectl = f"k3s kubectl --request-timeout=10s -n {ADDON_NAMESPACE}"
    return (
        f"end=$(( $(date +%s) + {wait} )); "
        "while :; do "
        f"have=$({kubectl} get {ADDONS} -o jsonpath={shlex.quote(jsonpath)} 2>/dev/null); "
        "left=; "
        f"for want in {pairs}; do "
        'printf \'%s\\n\' "$have" | grep -qxF -- "$want" || left="$left ${want%%=*}"; '
        "done; "
        '[ -z "$left" ] && exit 0; '
        '[ "$(date +%s)" -lt "$end" ] || break; '
        "sleep 2; "
        "done; "
        "for name in $left; do "
        f'why=$({kubectl} get events -o jsonpath="{events}" 2>/dev/null '
        f"| grep -E '^({failures}): ' | tail -n 1); "
        f'echo "k3s did not apply its manifest $name within {wait}s (its Addon does not hold '
        "the file's SHA-256): ${why:-no failure event from k3s's deploy controller; is k3s "
        'running?}" >&2; '
        "done; "
        "exit 1"
    )


@operation()
def manifests_applied(desired: DesiredState, paths: Sequence[str], wait: int = APPLY_WAIT):
    """
    Confirm k3s applied the auto-deploy manifests this run writes: each file's Addon holds
    the file's SHA-256, within `wait` seconds, else the run fails with k3s's own message.

    + desired: the first server's DesiredState holding the files, probing the Addons
      (`probe_addons`)
    + paths: the files in k3s's auto-deploy folder
    + wait: at most this many seconds

    k3s applies the folder on its own (a rescan every 15 s), updates an Addon's checksum only
    after a successful apply and reports a rejected file only as an event on its Addon
    (k3s-io/k3s pkg/deploy/controller.go): without this step a deploy whose manifest k3s
    refuses would succeed. A file is waited for when this run writes it with content its
    Addon does not hold, or when its Addon holds other content than the file (k3s has not
    applied it yet, or refused it). One command for all of them, none when nothing differs.
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    addons = addons_state(desired)
    pending, files = {}, []
    for path in paths:
        name, checksum = addon_name(path), desired.file(path).sha256
        held = None if addons is None else addons.get(name)
        written = desired.will_change([path]) and held != checksum
        stale = held is not None and held != checksum
        if written or stale:
            pending[name] = checksum
            files.append(path.rsplit("/", 1)[-1])
    if not pending:
        host.noop(f"k3s applied the {len(paths)} auto-deploy manifest(s) as they are")
        return
    host.log(
        f"k3s applies {', '.join(files)} (content their Addons do not hold): "
        f"the run waits up to {wait}s for it"
    )
    applied = ["sh", "-c", QuoteString(_applied_script(pending, wait))]
    what = f"k3s to apply {', '.join(files)}"
    yield progress.Shown(*progress.watch(what, wait, *applied))  # says so every EVERY s


@dataclass(frozen=True)
class ImageBackup:
    """What `backed_up_first` decides from: Label Studio's image, now and in this run, and the
    backup Job that runs first (deploys/k3s/apps.py `image_backup` builds it)."""

    probe: str  # the DesiredState's probe that reads the image the Deployment runs now
    image: str | None  # the image this run writes; None where Label Studio is off
    skip: str | None  # `cluster_apps.backup.skip_before_upgrade`: upgrade to it without one
    namespace: str  # the backup Job's namespace
    job: str  # the backup Job's name
    script: str | None  # shell that creates the Job and waits for it; None: backups are off


@operation()
def backed_up_first(desired: DesiredState, backup: ImageBackup):
    """
    Back Label Studio up before its image changes: the new version migrates the database
    when it starts, with no way back but a backup.

    + desired: the first server's DesiredState (its probe `backup.probe` holds the image that
      runs now)
    + backup: the image this run writes, the one named to skip the backup, the backup Job

    Runs before the apps' files are written: the backup CronJob's own pod, as a Job, waited
    for (`backup.script`); a failed backup fails the run here, before the new image is
    written. `cluster_apps.backup.skip_before_upgrade` naming the new image skips it; with
    backups off, an upgrade is refused unless it is named there.
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    wanted = backup.image
    running = next(iter(desired.probe(backup.probe)), "").strip()
    if wanted is None or not running:
        host.noop("Label Studio is not running: no backup is due before its image is set")
        return
    if running == wanted:
        host.noop(f"Label Studio runs {wanted}: no upgrade, no backup due")
        return
    if backup.skip == wanted:
        host.noop(
            f"Label Studio {running} -> {wanted}: no backup first, as "
            "cluster_apps.backup.skip_before_upgrade names it"
        )
        return
    if backup.script is None:
        yield from refuse(
            f"Label Studio's image changes from {running} to {wanted}, which migrates its "
            "database, and backups are off: configure the object store (backupS3* keys), or "
            f'set cluster_apps.backup.skip_before_upgrade: "{wanted}" to upgrade without one'
        )
        return
    host.log(f"Label Studio {running} -> {wanted}: backing up first (Job {backup.job})")
    # a Job of that name left by an earlier try is replaced: each try backs up anew
    yield StringCommand(
        "k3s", "kubectl", "-n", backup.namespace, "delete", "job", backup.job, "--ignore-not-found"
    )
    # the Job's wait says what it waits for every progress.EVERY s (backup.run_job_script)
    yield progress.Shown("sh", "-c", QuoteString(backup.script))


@dataclass(frozen=True)
class SwitchedOff:
    """A cluster app switched off, as `apps_deleted` deletes it."""

    instance: str  # its `app.kubernetes.io/instance` label
    kinds: str  # the kinds of its objects that go, as kubectl takes them
    addons: tuple[str, ...]  # the Addons k3s keeps for its files
    kept: str | None = None  # what of it stays (where its data lives), said in the log


@operation()
def apps_deleted(desired: DesiredState, apps: Sequence[SwitchedOff]):
    """
    Delete the objects of cluster apps switched off, which k3s leaves running.

    + desired: the first server's DesiredState (its state says which files the sweep removes)
    + apps: the apps whose objects go, by their `app.kubernetes.io/instance` label

    Each app's Addons go too (`SwitchedOff.addons`), so that the files written again when
    it is switched on are applied again.
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    if not apps:
        host.noop("no cluster app was switched off")
        return
    for app in apps:
        kept = f" ({app.kept})" if app.kept else ""
        host.log(f"cluster app {app.instance} switched off: its objects are deleted{kept}")
        yield StringCommand(
            "k3s",
            "kubectl",
            "delete",
            app.kinds,
            "-A",
            "--ignore-not-found",
            "-l",
            f"app.kubernetes.io/instance={app.instance}",
        )
        yield StringCommand(
            "k3s",
            "kubectl",
            "delete",
            ADDONS,
            "-n",
            ADDON_NAMESPACE,
            "--ignore-not-found",
            *app.addons,
        )


@operation()
def apps_skipped(reason: str):
    """
    Say in one line why the cluster apps were not deployed, changing nothing.

    + reason: the line, shown whatever -v says (as the node's k3s report is)
    """
    if first_time("cluster apps skipped", host.name):
        logger.info(f"{host.print_prefix}{reason}")
    host.noop(reason)
    yield from ()
