"""`make status` on this machine through pyinfra's `@local` connector: the real facts, their real
commands and parsing, answered by stand-ins of the programs this machine lacks (nvidia-smi
replaying an H200's real output from ../shared/fixtures, systemctl, k3s, cloudflared on PATH)
and by HTTP servers answering as Triton and the connector's metrics server do."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from oceanid import status
from oceanid.cluster_layout import MANIFEST_DIR
from tests.smoke_support import REPO, http_server, site_dir

SHARED = REPO.parent / "shared" / "fixtures" / "nvidia-smi" / "h200"
NODES = REPO / "tests" / "unit" / "fixtures" / "facts" / "k3s.K3sNodes"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: `kubectl get jobs -A -o json`: a backup that gave up, and one that succeeded.
JOBS = {
    "items": [
        {
            "metadata": {"namespace": "apps", "name": "label-studio-backup-29420537"},
            "status": {
                "failed": 2,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "lastTransitionTime": "2026-12-06T02:20:11Z",
                    },
                ],
            },
        },
        {
            "metadata": {"namespace": "apps", "name": "ml-backend-connector-29420580"},
            "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
        },
    ]
}


def stand_ins(folder: Path, running: list[str]) -> Path:
    """Executables on PATH for the programs the facts call."""
    assert (SHARED / "query-apps.csv").exists(), f"{SHARED}: the shared fixtures are missing"
    nodes = json.loads((NODES / "three_nodes_one_unreachable.json").read_text())["output"]
    (folder / "nodes.json").write_text("\n".join(nodes) + "\n")
    (folder / "jobs.json").write_text(json.dumps(JOBS))
    units = "".join(
        f"Id={unit}\nSubState={'running' if unit in running else 'dead'}\n\n"
        for unit in ("cloudflared-node.service", "tritonserver.service", "k3s.service")
    )
    scripts = {
        "nvidia-smi": f"""case "$*" in
            *--query-gpu=*) cat {SHARED}/query-gpu-noheader-nounits.csv ;;
            *--query-compute-apps=*) cat {SHARED}/query-apps.csv ;;
            *) exit 2 ;; esac""",
        "systemctl": f"cat <<'UNITS'\n{units}UNITS",
        "k3s": f"""case "$1" in
            --version) echo 'k3s version v1.33.4+k3s1 (148243c4)'; echo 'go version go1.24.5' ;;
            kubectl) case "$*" in
                *" jobs "*) cat {folder}/jobs.json ;;
                *) cat {folder}/nodes.json ;; esac ;; esac""",
        "cloudflared": "echo 'cloudflared version 2025.8.1 (built 2025-08-21-1535 UTC)'",
    }
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return bin_dir


def local_site(tmp_path: Path, triton_port: int, metrics_port: int, extra: str = "") -> Path:
    """The production group data, with this machine (`@local`) as a GPU host and k3s server."""
    site = site_dir(
        tmp_path,
        f"""
        cloudflared_metrics_address = "127.0.0.1:{metrics_port}"
        hosts = {{"@local": {{"gpu": {{
            "public_name": "gpu",
            "tunnel_id_key": "cloudflareNodeTunnelId",
            "tunnel_credential_key": "cloudflareNodeTunnelToken",
            "require_gpu": False,
            "service": {{"kind": "triton", "runtime": "host", "port": {triton_port}}},
        }}}}}}
        """,
    )
    (site / "inventory.py").write_text('k3s_servers = ["@local"]\ngpu_hosts = ["@local"]\n')
    with (site / "group_data" / "all.py").open("a") as group_data:
        group_data.write(extra)
    return site


def rows(output: str) -> list[str]:
    """The table's lines with the column padding collapsed to one space."""
    return [" ".join(line.split()) for line in output.splitlines()]


def run_status(site: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oceanid.status", "inventory.py", *args],
        cwd=site,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


INDEX = json.dumps(
    [
        {"name": "docling_granite_python", "version": "1", "state": "READY"},
        {"name": "embedder", "version": "1", "state": "UNAVAILABLE", "reason": "load failed"},
    ]
)
TRITON = {
    "/v2/health/live": (200, ""),
    "/v2/health/ready": (200, ""),
    "/v2/repository/index": (200, INDEX),
}
CONNECTOR = {"/ready": (200, '{"status": 200, "readyConnections": 4, "connectorId": "c-1"}')}


def test_one_table_from_the_facts(tmp_path):
    bin_dir = stand_ins(tmp_path, running=["cloudflared-node.service", "tritonserver.service"])
    with http_server(TRITON) as triton, http_server(CONNECTOR) as metrics:
        site = local_site(tmp_path, int(triton.rsplit(":", 1)[1]), int(metrics.rsplit(":", 1)[1]))
        done = run_status(site, bin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(done.stdout) == [
        "@local",
        "roles gpu_hosts, k3s_servers",
        "GPU 0 NVIDIA H200, memory 0/143771 MiB, utilisation 0%",
        "GPU processes python3 (pid 421, 4334 MiB)",
        "connector cloudflared-node.service running; 2025.8.1; ready, 4 connection(s)",
        "Triton tritonserver.service running; ready",
        "model docling_granite_python READY (version 1)",
        "model embedder UNAVAILABLE (version 1): load failed",
        "k3s k3s.service NOT running; v1.33.4+k3s1",
        "nodes calypso NOT Ready, styx Ready, tethys Ready",
        "failed jobs FAILED apps/label-studio-backup-29420537 (BackoffLimitExceeded, "
        "2026-12-06T02:20:11Z)",
        "manifests none in /var/lib/rancher/k3s/server/manifests",
    ]
    assert done.stdout.splitlines()[2].startswith("  GPU 0          ")  # one column


def test_stopped_triton_and_connector_show_and_json(tmp_path):
    """Nothing listens: the table says so, still exit 0 (status reports, smoke judges)."""
    bin_dir = stand_ins(tmp_path, running=[])
    site = local_site(tmp_path, free_port(), free_port())
    done = run_status(site, bin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    table = "\n".join(rows(done.stdout))
    assert "Triton tritonserver.service NOT running; nothing answers on port " in table
    assert "connector cloudflared-node.service NOT running; 2025.8.1; nothing answers on " in table
    done = run_status(site, bin_dir, "--json")
    report = json.loads(done.stdout)
    assert report["@local"]["triton"]["state"] is None
    assert report["@local"]["units"]["tritonserver.service"] is False
    assert report["@local"]["k3s"]["nodes"][0]["name"] == "calypso"
    assert report["@local"]["errors"] == []


def test_a_fact_that_cannot_be_read_is_an_error_row_and_exit_1(tmp_path):
    bin_dir = stand_ins(tmp_path, running=[])
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 255\n")
    done = run_status(local_site(tmp_path, free_port(), free_port()), bin_dir)
    assert done.returncode == 1
    assert rows(done.stdout)[-2:] == [
        "ERROR GpuDevices: could not be read",
        "ERROR GpuProcesses: could not be read",
    ]
    assert "NVIDIA-SMI has failed" in done.stderr  # pyinfra's own line says why
    assert "Traceback" not in done.stderr


def test_an_unreachable_host_is_named(tmp_path):
    site = local_site(tmp_path, free_port(), free_port())
    (site / "inventory.py").write_text('gpu_hosts = ["@ssh/127.0.0.1:1"]\n')
    done = run_status(site, tmp_path)
    assert done.returncode == 1
    assert rows(done.stdout) == ["@ssh/127.0.0.1:1", "roles gpu_hosts", "ERROR could not connect"]


def test_manifests_render_with_their_last_change():
    report = {
        "tethys": {
            "roles": ["k3s_servers"],
            "units": {"k3s.service": True},
            "k3s": {"version": "v1.33.4+k3s1", "nodes": None},
            "manifests": [
                {
                    "path": f"{MANIFEST_DIR}/oceanid-label-studio.yaml",
                    "changed": "2026-11-29T12:00:00+00:00",
                    "mode": 384,
                }
            ],
            "errors": [],
        }
    }
    assert rows("\n".join(status.render(report))) == [
        "tethys",
        "roles k3s_servers",
        "k3s k3s.service running; v1.33.4+k3s1",
        "nodes the API does not answer",
        "manifest oceanid-label-studio.yaml changed 2026-11-29 12:00 UTC",
    ]
    assert status.exit_code(report) == 0


@pytest.mark.parametrize("errors, code", [([], 0), (["K3sNodes: could not be read"], 1)])
def test_exit_code(errors, code):
    assert status.exit_code({"h": {"roles": [], "errors": errors}}) == code


DAEMONSET = (
    "\nenable_node_provisioning = True\n"
    'cluster_apps = {**cluster_apps, "node_tunnel_mode": "daemonset"}\n'
)


def test_in_daemonset_mode_the_cluster_serves_the_tunnel_and_a_stopped_host_unit_is_no_fault(
    tmp_path,
):
    """The GPU role stops cloudflared-node.service where the cluster's DaemonSet serves the
    tunnel; status reads that pod's readiness on the node's loopback instead."""
    bin_dir = stand_ins(tmp_path, running=["tritonserver.service"])
    site = local_site(tmp_path, free_port(), free_port(), extra=DAEMONSET)
    done = run_status(site, bin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = [line for line in rows(done.stdout) if line.startswith("connector ")]
    assert row.startswith(
        "connector served by the cluster's DaemonSet cloudflared-node/cloudflared-node-@local: "
    )
    assert row.endswith("; cloudflared-node.service stopped (node_tunnel_mode daemonset)")
    assert "NOT running" not in row
    report = json.loads(run_status(site, bin_dir, "--json").stdout)
    assert report["@local"]["connector"]["served_by"] == "daemonset"
    assert report["@local"]["connector"]["metrics_address"] == "127.0.0.1:2000"


@pytest.mark.parametrize(
    "running, unit",
    [
        (False, "cloudflared-node.service stopped (node_tunnel_mode daemonset)"),
        (
            True,
            "cloudflared-node.service STILL running: two connectors on one tunnel until a "
            "deploy stops it",
        ),
    ],
)
def test_the_daemonset_connector_row(running, unit):
    report = {
        "calypso": {
            "roles": ["gpu_hosts", "k3s_agents"],
            "units": {"cloudflared-node.service": running},
            "connector": {
                "served_by": "daemonset",
                "daemonset": "cloudflared-node/cloudflared-node-calypso",
                "metrics_address": "127.0.0.1:2000",
                "ready": {"status": 200, "ready_connections": 4},
            },
            "errors": [],
        }
    }
    assert rows("\n".join(status.render(report)))[2] == (
        "connector served by the cluster's DaemonSet cloudflared-node/cloudflared-node-calypso: "
        f"ready, 4 connection(s); {unit}"
    )


def test_an_inventory_that_refuses_to_load_exits_3_never_drifts_2(tmp_path):
    """Bad input is 3 across smoke, status and drift (oceanid/exitcodes.py; issue 23)."""
    (tmp_path / "inventory.py").write_text('raise SystemExit("lab: the lab is down")\n')
    done = run_status(tmp_path, tmp_path)
    assert (done.returncode, done.stdout) == (3, ""), done.stderr
    assert done.stderr == "status: inventory.py: lab: the lab is down\n"
    assert run_status(tmp_path, tmp_path, "--bogus").returncode == 3
