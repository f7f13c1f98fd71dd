"""
The k3s stand-in's datastore and `k3s etcd-snapshot save`, as k3s has them: embedded etcd with
cluster-init (else kine's SQLite file), and a snapshot asked of the running server, written to
`<data-dir>/server/db/snapshots/<name>-<node>-<unix time>` and named in `Snapshot <name> saved.`;
refused with k3s's "etcd datastore disabled" on a SQLite datastore. Servers on 127.0.0.1, free
ports, temporary folders; each process started here and stopped by its PID.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from lab.kubectl import kubectl
from tests.standins.test_k3s import Cluster, k3s_server
from tests.standins.test_standins import K3S, assert_no_secret, run

SAVED = re.compile(r'level=info msg="Snapshot (pre-upgrade-v1\.33\.5-k3s1-tethys-(\d+)) saved\."')


@pytest.fixture(scope="module")
def kubectl_path() -> Path:
    return kubectl()


def snapshot(cluster: Cluster, *flags: str):
    """`k3s etcd-snapshot save` on the server's host: its data dir, its API's port."""
    return run(
        K3S,
        "etcd-snapshot",
        "save",
        "--data-dir",
        str(cluster.data),
        "--etcd-server",
        cluster.url,
        *flags,
    )


def test_with_cluster_init_a_snapshot_is_written_and_named(tmp_path: Path, kubectl_path: Path):
    before = int(time.time())
    with k3s_server(tmp_path, kubectl_path, "cluster-init: true\n") as cluster:
        db = cluster.data / "server" / "db"
        assert (db / "etcd").is_dir() and not (db / "state.db").exists()
        done = snapshot(cluster, "--name", "pre-upgrade-v1.33.5-k3s1")
        assert done.returncode == 0, done.stderr
        match = SAVED.search(done.stderr)
        assert match, done.stderr
        assert before <= int(match.group(2)) <= time.time()
        written = db / "snapshots" / match.group(1)
        assert oct(written.stat().st_mode & 0o777) == "0o600"
        assert "tethys" in json.loads(written.read_text())["standin-nodes.json"]["nodes"]
        assert_no_secret(done.stdout, done.stderr)


def test_without_etcd_the_snapshot_is_refused_as_k3s_refuses_it(tmp_path: Path, kubectl_path: Path):
    with k3s_server(tmp_path, kubectl_path) as cluster:
        db = cluster.data / "server" / "db"
        assert (db / "state.db").is_file() and not (db / "etcd").exists()
        done = snapshot(cluster, "--name", "pre-upgrade-v1.33.5-k3s1")
        assert done.returncode == 1
        assert (
            'level=fatal msg="Error: see server log for details: etcd datastore disabled"'
            in done.stderr
        )
        assert not (db / "snapshots").exists()


def test_cluster_init_on_a_sqlite_datastore_starts_etcd(tmp_path: Path, kubectl_path: Path):
    """What the deploy refuses without `convert_datastore_to_etcd`: k3s, asked for
    cluster-init with no etcd on disk, starts etcd beside the SQLite datastore it held."""
    with k3s_server(tmp_path, kubectl_path):
        pass
    db = tmp_path / "data" / "server" / "db"
    assert (db / "state.db").is_file() and not (db / "etcd").exists()
    with k3s_server(tmp_path, kubectl_path, "cluster-init: true\n") as cluster:
        assert (db / "etcd").is_dir()
        assert snapshot(cluster, "--name", "pre-upgrade-v1.33.5-k3s1").returncode == 0


def test_the_token_is_the_data_dirs_and_a_wrong_one_is_refused(tmp_path: Path, kubectl_path: Path):
    with k3s_server(tmp_path, kubectl_path, "cluster-init: true\n") as cluster:
        wrong = "K10" + "0" * 64 + "::server:not-the-secret"
        done = snapshot(cluster, "--etcd-token", wrong)
        assert done.returncode == 1 and "CA hash does not match" in done.stderr
        done = snapshot(cluster)  # default name: on-demand
        assert done.returncode == 0 and "Snapshot on-demand-tethys-" in done.stderr
