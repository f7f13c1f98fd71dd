"""`make status`: what runs on each host, one table per host, read from our pyinfra facts.

It asks each host what a deploy would ask (the same facts, through pyinfra's API, connected as
the inventory says), so what it shows is what the next deploy will see:

- every host: its roles and the state of the units its roles run;
- a GPU host: each GPU's name, memory used/total and utilisation, the processes holding GPU
  memory (``facts/gpu.py``, nvidia-smi); the node connector's version and ready connections
  (``facts/cloudflared.py``), or with `node_tunnel_mode: daemonset` (and provisioning on) the
  cluster's DaemonSet pod's ready connections on the node's loopback, the host connector then
  stopped on purpose; Triton's readiness and every model's state (``facts/triton.py``);
- a k3s node: k3s's version (``facts/k3s.py``); a server also the cluster's nodes and their
  readiness, and the cluster apps' manifests in k3s's auto-deploy folder with their last change.

It only reads: facts are read-only commands, and no operation is ever queued. ``--json`` prints
the same data for machines. Exit 0 when every host answered every question, 1 when a host could
not be reached or a fact could not be read (the table says which), 2 for a bad inventory.
No secret is read: none of these facts looks at a credential.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from oceanid import exitcodes, preflight
from oceanid.cluster_layout import (
    MANIFEST_DIR,
    NODE_TUNNEL_METRICS_ADDRESS,
    NODE_TUNNEL_NAMESPACE,
    node_tunnel_daemon_set,
)
from oceanid.model import K3S_AGENTS, K3S_SERVERS
from oceanid.settings import SettingsError, from_data, short_name

# The cluster apps' files in k3s's auto-deploy folder (deploys/cluster_apps: `oceanid-<app>.yaml`
# and `oceanid-<app>-secret.yaml`); k3s's own manifests there are not ours to report.
MANIFEST_GLOB = "oceanid-*.yaml"
GPU_UNITS = ("cloudflared-node.service", "tritonserver.service")
K3S_UNITS = {K3S_SERVERS: "k3s.service", K3S_AGENTS: "k3s-agent.service"}

Report = dict[str, dict[str, Any]]


def node_tunnel(host_name: str) -> tuple[str, str]:
    """(`namespace/name` of the DaemonSet serving this GPU host's tunnel, its pod's metrics
    address on the node), as deploys/cluster_apps/node_tunnel.py renders them."""
    name = f"{NODE_TUNNEL_NAMESPACE}/{node_tunnel_daemon_set(host_name)}"
    return name, NODE_TUNNEL_METRICS_ADDRESS


# -- reading ------------------------------------------------------------------------------------


class _Reader:
    """Reads facts from one connected host, noting each one that could not be read."""

    def __init__(self, state: Any, host: Any) -> None:
        self.state, self.host = state, host
        self.errors: list[str] = []

    def fact(self, cls: type, **kwargs: Any) -> Any:
        from oceanid.pyinfra_internals import read_fact

        # a fact that fails fails its host in pyinfra; read_fact keeps the host for the next
        # question, since a status reads everything it can (pyinfra's log line says why)
        value, read = read_fact(self.state, self.host, cls, **kwargs)
        if not read:
            self.errors.append(f"{cls.__name__}: could not be read")
        return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or UTC).isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def read_host(state: Any, host: Any) -> dict[str, Any]:
    """One host's status from its facts; its data says which roles it has and on what ports."""
    from pyinfra.facts.files import File, FindFiles
    from pyinfra.facts.systemd import SystemdStatus

    from facts.cloudflared import CloudflaredReady, CloudflaredVersion
    from facts.gpu import GpuDevices, GpuProcesses
    from facts.jobs import K3sFailedJobs
    from facts.k3s import K3sNodes, K3sVersion
    from facts.triton import TritonState

    settings = from_data(host.data.dict())
    gpu = settings.host(short_name(host.name)).gpu
    roles = preflight.roles_of(host.name, host.groups, settings)
    read = _Reader(state, host)
    found: dict[str, Any] = {"roles": sorted(roles)}
    units = [K3S_UNITS[role] for role in sorted(roles) if role in K3S_UNITS]
    if gpu is not None:
        units = [*GPU_UNITS, *units]
    found["units"] = read.fact(SystemdStatus, services=units) if units else {}
    if gpu is not None:
        found["gpus"] = read.fact(GpuDevices)
        found["gpu_processes"] = read.fact(GpuProcesses)
        if settings.node_tunnel_in_cluster():
            # the host connector is stopped on purpose; the DaemonSet's pod listens here
            daemon_set, address = node_tunnel(short_name(host.name))
            found["connector"] = {
                "served_by": "daemonset",
                "daemonset": daemon_set,
                "metrics_address": address,
                "ready": read.fact(CloudflaredReady, metrics_address=address),
            }
        else:
            address = settings.cloudflared_metrics_address
            found["connector"] = {
                "served_by": "host",
                "version": read.fact(CloudflaredVersion),
                "metrics_address": address,
                "ready": read.fact(CloudflaredReady, metrics_address=address),
            }
        if gpu.service.kind == "triton":
            port = gpu.service.port
            found["triton"] = {"port": port, "state": read.fact(TritonState, http_port=port)}
    if roles & set(K3S_UNITS):
        found["k3s"] = {"version": read.fact(K3sVersion)}
    if K3S_SERVERS in roles:
        found["k3s"]["nodes"] = read.fact(K3sNodes)
        found["k3s"]["failed_jobs"] = read.fact(K3sFailedJobs)
        manifests = []
        found_files = read.fact(FindFiles, path=MANIFEST_DIR, maxdepth=1, fname=MANIFEST_GLOB)
        for path in sorted(found_files or []):
            stat = read.fact(File, path=path) or {}
            manifests.append({"path": path, "changed": stat.get("mtime"), "mode": stat.get("mode")})
        found["manifests"] = manifests
    found["errors"] = read.errors
    return _jsonable(found)


def collect(inventory_path: str) -> Report:
    """Connect to every host of the inventory as pyinfra would and read each one's facts."""
    from oceanid.pyinfra_internals import active_hosts, connected_state

    inventory = preflight.load_inventory(inventory_path)
    state = connected_state(inventory)  # a host that did not answer is named below
    report: Report = {}
    for host in inventory:
        if host not in active_hosts(state):
            roles = preflight.roles_of(host.name, host.groups, from_data(host.data.dict()))
            report[host.name] = {"roles": sorted(roles), "errors": ["could not connect"]}
            continue
        report[host.name] = read_host(state, host)
    return report


# -- showing ------------------------------------------------------------------------------------


def _mib(value: Any) -> str:
    return "?" if value is None else f"{value}"


def _gpu_rows(found: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    gpus = found.get("gpus")
    if gpus is not None and not gpus:
        rows.append(("GPU", "none (no nvidia-smi, no driver or no device)"))
    for gpu in gpus or []:
        used, total = _mib(gpu.get("memory_used_mib")), _mib(gpu.get("memory_total_mib"))
        util = gpu.get("utilization_gpu_percent")
        rows.append(
            (
                f"GPU {gpu.get('index')}",
                f"{gpu.get('name')}, memory {used}/{total} MiB, "
                f"utilisation {'?' if util is None else util}%",
            )
        )
    processes = found.get("gpu_processes")
    if processes is not None:
        text = ", ".join(
            f"{p.get('process_name')} (pid {p.get('pid')}, {_mib(p.get('used_memory_mib'))} MiB)"
            for p in processes
        )
        rows.append(("GPU processes", text or "none"))
    return rows


def _unit(found: dict[str, Any], unit: str) -> str:
    units = found.get("units") or {}
    if found.get("units") is None:
        return f"{unit} state unknown"
    return f"{unit} {'running' if units.get(unit) else 'NOT running'}"


def _daemon_set_unit(found: dict[str, Any], unit: str) -> str:
    """The host connector where the DaemonSet serves the tunnel: stopped is as it should be."""
    units = found.get("units")
    if units is None:
        return f"{unit} state unknown"
    if units.get(unit):
        return f"{unit} STILL running: two connectors on one tunnel until a deploy stops it"
    return f"{unit} stopped (node_tunnel_mode daemonset)"


def _connector_row(found: dict[str, Any]) -> tuple[str, str]:
    connector = found["connector"]
    ready = connector.get("ready")
    if ready is None:
        state = f"nothing answers on {connector.get('metrics_address')}"
    elif ready.get("status") == 200:
        state = f"ready, {ready.get('ready_connections')} connection(s)"
    else:
        state = f"NOT ready (HTTP {ready.get('status')}, {ready.get('ready_connections')} conn.)"
    unit = "cloudflared-node.service"
    if connector.get("served_by") == "daemonset":
        served = f"served by the cluster's DaemonSet {connector.get('daemonset')}: {state}"
        return "connector", f"{served}; {_daemon_set_unit(found, unit)}"
    version = connector.get("version") or "not installed"
    return "connector", f"{_unit(found, unit)}; {version}; {state}"


def _triton_rows(found: dict[str, Any]) -> list[tuple[str, str]]:
    triton = found["triton"]
    state = triton.get("state")
    head = _unit(found, "tritonserver.service")
    if state is None:
        return [("Triton", f"{head}; nothing answers on port {triton.get('port')}")]
    readiness = "ready" if state.get("ready") else "live, NOT ready" if state["live"] else "down"
    rows = [("Triton", f"{head}; {readiness}")]
    for model in state.get("models") or []:
        text = f"{model.get('state') or 'not loaded'}"
        if model.get("version"):
            text += f" (version {model['version']})"
        if model.get("reason"):
            text += f": {model['reason']}"
        rows.append((f"model {model.get('name')}", text))
    return rows


def _k3s_rows(found: dict[str, Any]) -> list[tuple[str, str]]:
    k3s = found["k3s"]
    units = [unit for role, unit in K3S_UNITS.items() if role in found["roles"]]
    version = k3s.get("version") or "not installed"
    rows = [("k3s", "; ".join([*(_unit(found, u) for u in units), version]))]
    if "nodes" in k3s:
        nodes = k3s["nodes"]
        if nodes is None:
            rows.append(("nodes", "the API does not answer"))
        else:
            text = ", ".join(
                f"{node['name']} {'Ready' if node['ready'] else 'NOT Ready'}" for node in nodes
            )
            rows.append(("nodes", text or "none"))
    if "failed_jobs" in k3s:
        rows.append(_failed_jobs_row(k3s["failed_jobs"]))
    return rows


def _failed_jobs_row(jobs: list[dict[str, Any]] | None) -> tuple[str, str]:
    """Jobs that gave up (a backup among them): named, with why and since when."""
    if jobs is None:
        return ("failed jobs", "the API does not answer")
    text = ", ".join(
        f"FAILED {job['namespace']}/{job['name']} ({job['reason']}, {job['since'] or '?'})"
        for job in jobs
    )
    return ("failed jobs", text or "none")


def _manifest_rows(found: dict[str, Any]) -> list[tuple[str, str]]:
    manifests = found["manifests"]
    if not manifests:
        return [("manifests", f"none in {MANIFEST_DIR}")]
    rows = []
    for manifest in manifests:
        changed = manifest.get("changed")
        when = (
            datetime.fromisoformat(changed).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            if changed
            else "?"
        )
        rows.append((f"manifest {manifest['path'].rsplit('/', 1)[-1]}", f"changed {when}"))
    return rows


def render(report: Report) -> list[str]:
    """One table per host: what, then its state; a host's problems last, as ERROR rows."""
    out: list[str] = []
    for name, found in report.items():
        rows: list[tuple[str, str]] = [("roles", ", ".join(found.get("roles") or []) or "none")]
        if "gpus" in found:
            rows += _gpu_rows(found)
        if "connector" in found:
            rows.append(_connector_row(found))
        if "triton" in found:
            rows += _triton_rows(found)
        if "k3s" in found:
            rows += _k3s_rows(found)
        if "manifests" in found:
            rows += _manifest_rows(found)
        rows += [("ERROR", error) for error in found.get("errors") or []]
        width = max(len(what) for what, _ in rows)
        out.append(name)
        out += [f"  {what.ljust(width)}  {value}" for what, value in rows]
        out.append("")
    return out


def exit_code(report: Report) -> int:
    """1 when a host or a fact could not be read, else 0 (oceanid/exitcodes.py)."""
    failed = any(found.get("errors") for found in report.values())
    return exitcodes.FAILED if failed else exitcodes.OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = exitcodes.inventory_parser(
        prog="python -m oceanid.status",
        description="Each host's state from its facts, one table per host; reads, never changes.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    args = parser.parse_args(argv)
    from gevent import monkey  # as pyinfra's CLI does, before anything loads ssl

    monkey.patch_all()
    try:
        report = collect(args.inventory)
    except SettingsError as error:
        for line in error.problems:
            print(f"status: {line}", file=sys.stderr)
        return exitcodes.USAGE
    except SystemExit as error:  # an inventory that refuses to load (the lab while down)
        print(f"status: {args.inventory}: {error}", file=sys.stderr)
        return exitcodes.USAGE
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print("\n".join(render(report)).rstrip())
    return exit_code(report)


if __name__ == "__main__":
    raise SystemExit(main())
