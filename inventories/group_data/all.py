"""The lab's settings on top of group_data/all.py (pyinfra loads this folder second).

Artifacts come from the lab's mirror, pinned to the hashes `make lab` recorded for the
stand-ins; secrets come from the lab's own file (.lab/secrets.yaml, which `make lab`
writes), so `pyinfra inventories/lab.py …` needs no SECRETS_FILE; the lab's calypso has no
GPU and runs Triton on the CPU from the nvidia-pytriton wheel.
"""

import json
from pathlib import Path

from lab.files import SAMPLE_URL
from lab.services import CLOUDFLARE_URL
from oceanid.settings import run_login_data

__all__ = [
    "secret_sources",
    "secrets_file",
    "manage_dns",
    "cloudflare_api_base_url",
    "enable_node_provisioning",
    "enable_control_plane_lb",
    "k3s",
    "cloudflared",
    "triton_image",
    "triton_image_archive",
    "admin_ssh_keys",
    "hosts",
    "smoke_pdf_url",
]

_lab = Path(__file__).resolve().parents[2] / ".lab"
try:
    _pins = json.loads((_lab / "artifacts.json").read_text())
except FileNotFoundError:
    raise SystemExit(
        "lab: .lab/artifacts.json is missing; run `make lab` to build the lab first"
    ) from None

secret_sources = ["file"]
secrets_file = str(_lab / "secrets.yaml")
manage_dns = True
# The full deploy: k3s installed and joined, its API behind HAProxy on each server.
enable_node_provisioning = True
enable_control_plane_lb = True
cloudflare_api_base_url = CLOUDFLARE_URL  # the lab's Cloudflare API stand-in
k3s = _pins["k3s"]
cloudflared = _pins["cloudflared"]
# Triton's image for the container runtime (calypso2): built by `make lab` from the lab's root
# filesystem and the nvidia-pytriton wheel (lab/images.py), pinned by its ID, and loaded from
# the lab's mirror as an air-gapped site would load it: no registry is reachable.
triton_image = _pins["triton_image"]["id"]
triton_image_archive = {
    "url": _pins["triton_image"]["url"],
    "sha256": _pins["triton_image"]["sha256"],
}
admin_ssh_keys = [(_lab / "ssh" / "id_ed25519.pub").read_text().strip()]
# the lab's file server (lab/files.py), as an operator's: calypso's ML backend fetches it
smoke_pdf_url = SAMPLE_URL

hosts = {
    # k3s nodes: the lab's addresses (lab/topology.py); nodes advertise them to each other.
    "tethys": {"k3s": {"address": "10.77.0.11", "node_ip": "10.77.0.11"}},
    "styx": {"k3s": {"address": "10.77.0.12", "node_ip": "10.77.0.12"}},
    "calypso": {
        "ssh_user": "oceanid",
        "sudo": True,
        "gpu": {
            "public_name": "gpu",
            "tunnel_id_key": "cloudflareNodeTunnelId",
            "tunnel_credential_key": "cloudflareNodeTunnelToken",
            "require_gpu": False,
            "service": {"kind": "triton", "runtime": "host", "port": 8000},
        },
        "k3s": {
            "address": "10.77.0.13",
            "node_ip": "10.77.0.13",
            "labels": {"oceanid.cluster/tunnel-enabled": "true"},
            "taints": ["workload-type=gpu-compute:NoSchedule"],
        },
    },
    # A second GPU host: one inventory line, this entry, and its two ESC keys. Its Triton runs
    # in Docker, as production's does (the lab's machine caps locked memory at 8 MiB).
    "calypso2": {
        "gpu": {
            "public_name": "gpu2",
            "tunnel_id_key": "cloudflareNode2TunnelId",
            "tunnel_credential_key": "cloudflareNode2TunnelToken",
            "require_gpu": False,
            "service": {
                "kind": "triton",
                "runtime": "container",
                "port": 8000,
                "memlock": 8388608,
            },
        },
    },
    # A GPU host serving another HTTP model server from its image (the `http` kind), its name
    # behind Cloudflare Access: only the lab's service token passes (the API stand-in holds it).
    "calypso3": {
        "gpu": {
            "public_name": "gpu3",
            "access": "service_token",
            "tunnel_id_key": "cloudflareNode3TunnelId",
            "tunnel_credential_key": "cloudflareNode3TunnelToken",
            "require_gpu": False,
            "service": {
                "kind": "http",
                "image": _pins["http_image"]["id"],
                "image_archive": {
                    "url": _pins["http_image"]["url"],
                    "sha256": _pins["http_image"]["sha256"],
                },
                "port": 8000,
                "environment": {"PORT": "8000", "OCEANID_HTTP_TOKEN": "lab-token-kept-0600"},
                "memlock": 8388608,
            },
        },
    },
}

# As in group_data/all.py: the login of a run whose hosts agree (`pyinfra @ssh/calypso …`).
_login = run_login_data(hosts)
globals().update(_login)
__all__ += list(_login)
