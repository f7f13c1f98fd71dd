"""`make kubeconfig`: k3s's kubeconfig rewritten for the SSH tunnel and written 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from deploys.k3s import kubeconfig

K3S_YAML = Path(__file__).parent / "fixtures" / "k3s" / "k3s.yaml"
KEY = yaml.safe_load(K3S_YAML.read_text())["users"][0]["user"]["client-key-data"]


def test_points_at_the_tunnel_and_names_everything_oceanid() -> None:
    original = yaml.safe_load(K3S_YAML.read_text())
    document = kubeconfig.for_tunnel(K3S_YAML.read_text())
    assert document["current-context"] == "oceanid"
    assert document["clusters"] == [
        {
            "cluster": {
                "certificate-authority-data": original["clusters"][0]["cluster"][
                    "certificate-authority-data"
                ],
                "server": "https://127.0.0.1:16443",
            },
            "name": "oceanid",
        }
    ]
    assert document["contexts"] == [
        {"context": {"cluster": "oceanid", "user": "oceanid"}, "name": "oceanid"}
    ]
    assert document["users"] == [{"name": "oceanid", "user": original["users"][0]["user"]}]


def test_server_can_be_another_endpoint() -> None:
    document = kubeconfig.for_tunnel(K3S_YAML.read_text(), server="https://10.0.0.1:7443")
    assert document["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:7443"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<html>", "not a kubeconfig"),
        ("a: [", "not YAML"),
        (
            "kind: Config\nclusters: []\ncontexts: []\nusers: []\n",
            "exactly one entry in 'clusters'",
        ),
    ],
)
def test_what_k3s_does_not_write_is_refused(text: str, message: str) -> None:
    with pytest.raises(kubeconfig.KubeconfigError, match=message):
        kubeconfig.for_tunnel(text)


def _fake_ssh(tmp_path: Path) -> str:
    """An `ssh` that answers the one command `make kubeconfig` sends, as root on tethys would."""
    script = tmp_path / "ssh"
    script.write_text(
        "#!/bin/sh\n"
        f'[ "$*" = "tethys sudo -n cat /etc/rancher/k3s/k3s.yaml" ] && exec cat {K3S_YAML}\n'
        'echo "ssh: Could not resolve hostname $1: Name or service not known" >&2\n'
        "exit 255\n"
    )
    script.chmod(0o755)
    return str(script)


def test_writes_a_private_file_and_prints_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSH", _fake_ssh(tmp_path))
    output = tmp_path / "cluster" / "kubeconfig.yaml"
    output.parent.mkdir()
    output.write_text("old\n")
    output.chmod(0o644)

    assert kubeconfig.main(["tethys", "--output", str(output)]) == 0

    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert yaml.safe_load(output.read_text()) == kubeconfig.for_tunnel(K3S_YAML.read_text())
    assert sorted(path.name for path in output.parent.iterdir()) == ["kubeconfig.yaml"]
    printed = capsys.readouterr()
    assert KEY not in printed.out + printed.err
    assert "context 'oceanid'" in printed.out


def test_an_unreachable_server_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSH", _fake_ssh(tmp_path))
    output = tmp_path / "kubeconfig.yaml"
    assert kubeconfig.main(["nowhere", "--output", str(output)]) == 1
    assert not output.exists()
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "could not read /etc/rancher/k3s/k3s.yaml on nowhere (ssh: Could not resolve" in error


def test_the_inventory_says_how_to_reach_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make kubeconfig INVENTORY=...`: ssh gets tethys's address, port, user and key from the
    inventory, as pyinfra reaches it (oceanid.sshtarget), not the name `tethys`."""
    login = {"ssh_hostname": "10.0.0.5", "ssh_port": 2222, "ssh_user": "admin", "ssh_key": "/k"}
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"k3s_servers = [('tethys', {login!r})]\n")
    script = tmp_path / "ssh"
    script.write_text(
        "#!/bin/sh\n"
        f'[ "$*" = "-p 2222 -i /k admin@10.0.0.5 sudo -n cat /etc/rancher/k3s/k3s.yaml" ] '
        f"&& exec cat {K3S_YAML}\n"
        'echo "ssh: unexpected arguments: $*" >&2\n'
        "exit 255\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("SSH", str(script))
    output = tmp_path / "kubeconfig.yaml"
    assert kubeconfig.main(["--inventory", str(inventory), "--output", str(output)]) == 0
    assert yaml.safe_load(output.read_text()) == kubeconfig.for_tunnel(K3S_YAML.read_text())


def test_a_host_the_inventory_lacks_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSH", _fake_ssh(tmp_path))
    output = tmp_path / "kubeconfig.yaml"
    assert kubeconfig.main(["--inventory", "inventory.py", "nowhere", "--output", str(output)]) == 1
    assert not output.exists()
    assert capsys.readouterr().err.startswith("kubeconfig: no host 'nowhere' in inventory.py")


def test_the_production_inventory_reaches_tethys_by_its_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSH", _fake_ssh(tmp_path))  # answers `tethys sudo -n cat ...` only
    output = tmp_path / "kubeconfig.yaml"
    assert kubeconfig.main(["--inventory", "inventory.py", "--output", str(output)]) == 0
