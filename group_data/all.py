"""Site-wide defaults and pinned versions for every Oceanid host.

pyinfra loads this file for every inventory (and for `pyinfra @ssh/calypso …`); the
values are validated by `oceanid.settings` before any operation is queued, so a typo
here stops the run with the key's name instead of deploying a default.
"""

from oceanid.settings import run_login_data as _run_login_data  # "_": not a setting

# Public names are <label>.<base_domain>: label.boathou.se, gpu.boathou.se, ml.boathou.se, …
# None: ESC cloudflareNodeTunnelHostname, as the stack we replace read it (a value in ESC other
# than base_domain stops `make check`).
base_domain = "boathou.se"

# Secrets, per key, first found wins: an environment variable (an explicit override for one
# run: `make check` names each value it overrides), then Pulumi ESC, then a file: the one
# SECRETS_FILE names, else `secrets_file` (YAML or JSON, mode 0600). docs/secrets.md.
esc_environment = "default/oceanid-cluster"
secret_sources = ["env", "esc", "file"]
secrets_file = None

# Flags from the old stack; both off for the minimal, non-disruptive deploy.
enable_node_provisioning = False
enable_control_plane_lb = False
# With enable_control_plane_lb, HAProxy on each k3s server listens here for the API and
# forwards to every server's 6443; never a port k3s binds itself (6443, 6444, 10250...).
k3s_lb_port = 7443
# Pod traffic between nodes: WireGuard (UDP 51820), encrypted and authenticated; vxlan
# (UDP 8472, k3s's default) sends it in clear text. Set on the servers; agents take it from them.
k3s_flannel_backend = "wireguard-native"

# Reconcile the public CNAMEs through the Cloudflare API.
manage_dns = True
cloudflare_api_base_url = None  # the SDK's default, https://api.cloudflare.com/client/v4
cloudflare_takeover_records = []  # names the deploy may overwrite although it did not create them
# `make smoke` asks each ML backend (ml.<base>, mlN.<base>) for one prediction of this PDF, an
# http(s) URL its GPU host can fetch (an operator's file server); None: that check is SKIP.
smoke_pdf_url = None

# The operators' account on every host (calypso's SSH user), with passwordless sudo.
admin_user = "oceanid"
admin_ssh_keys = []  # in ~oceanid/.ssh/authorized_keys; one removed here goes (not hand-added ones)

# What every role needs before anything else.
base_packages = ["ca-certificates", "curl", "gnupg", "jq", "sudo"]

# Pinned artifacts, verified by SHA-256 before install. Point `url` at a mirror when
# the site has no route to GitHub.
k3s = {
    "version": "v1.33.4+k3s1",
    "url": "https://github.com/k3s-io/k3s/releases/download/{version}/k3s",
    # from the release's sha256sum-amd64.txt
    "sha256": {"amd64": "10da34c350ab8a02e4513a6021046db9e9afecc31bae77419bc6444cbd7b1400"},
}
cloudflared = {
    "version": "2025.8.1",
    "url": "https://github.com/cloudflare/cloudflared/releases/download/{version}/cloudflared-linux-{arch}",
    # the release notes' SHA-256 (cloudflared also logs it at start: "Version … (Checksum …)")
    "sha256": {"amd64": "a66353004197ee4c1fcb68549203824882bba62378ad4d00d234bdb8251f1114"},
}
triton_image = "nvcr.io/nvidia/tritonserver:25.08-py3"
# The driver that image needs: release 25.08 is built on CUDA 13.0 and "requires NVIDIA Driver
# release 575 or later" (data-center GPUs may also run R535 >= 535.86 or R545 >= 545.23 with
# CUDA's forward compatibility: set that release here then). NVIDIA, Triton Inference Server
# Release 25.08, Driver Requirements: https://docs.nvidia.com/deeplearning/
# triton-inference-server/release-notes/rel-25-08.html. Change it with triton_image.
triton_min_driver = "575"
# Triton without Docker (runtime "host", and the lab): the tritonserver 2.51 that the
# nvidia-pytriton wheel carries, installed with pip --require-hashes.
triton_wheel = {
    "version": "0.7.0",
    # nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl on PyPI
    "sha256": {"amd64": "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df"},
}
# NVIDIA's libnvidia-container signing key (nvidia-container-toolkit's apt repository).
nvidia_container_key_fingerprint = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"

# cloudflared: `auto` lets it pick QUIC; use `http2` where UDP/7844 is filtered.
tunnel_protocol = "auto"
cloudflared_metrics_address = "127.0.0.1:2200"

# Cluster apps, written into k3s's auto-deploy folder on the first server
# (deploys/cluster_apps). Label Studio's image is the same release as the PyPI
# label-studio the contract test runs; never `latest`/`develop`. The cluster connector
# runs the host connector's cloudflared version. `node_tunnel_mode: daemonset` moves each
# GPU host's tunnel into the cluster (nodes labelled oceanid.cluster/tunnel-enabled=true).
cluster_apps = {
    "label_studio": {
        "enabled": True,
        "image": "heartexlabs/label-studio:1.23.2",
        "public_name": "label",
        "memory_request": "1Gi",  # OOM-killed at 512Mi and at 1Gi in the old stack
        "memory_limit": "3Gi",
        "storage": "10Gi",  # its data folder (uploads, exports), k3s's local-path storage
    },
    "cluster_connector": True,
    "cluster_connector_replicas": 2,
    "ml_backend": {
        "enabled": True,
        "url": None,  # the first GPU host's public URL: https://gpu.<base_domain>
        "title": "oceanid-gpu",
        "schedule": "0 * * * *",
    },
    "node_tunnel_mode": "host",
    # Label Studio's database (pg_dump -Fc) and media to the object store of the ESC keys
    # backupS3*: on where they are set (None), nightly, the last 7 daily and 4 weekly kept.
    # pg_dump comes from PostgreSQL's image of the server's major version, pinned by tag.
    # A change of Label Studio's image backs up first unless skip_before_upgrade names it.
    "backup": {
        "enabled": None,
        "schedule": "17 2 * * *",
        "keep_daily": 7,
        "keep_weekly": 4,
        "postgres_image": "docker.io/library/postgres:15.18-bookworm",
        "skip_before_upgrade": None,
        # k3s's own etcd snapshots to the same store, on every server (config.yaml.d drop-in)
        "etcd_snapshot_schedule": "0 */12 * * *",
        "etcd_snapshot_retention": 14,
    },
}

# What is particular to one host, keyed by its inventory name. `ssh_user` and `sudo` say
# how pyinfra reaches it; hosts without them are reached as the operator's SSH config says.
# With enable_node_provisioning, the nodes join the first server by its `k3s.address`,
# never by its inventory alias (only the operator's SSH config resolves `tethys`): add
# "tethys": {"k3s": {"address": "<its IP address>"}} here first (`make check` says so).
hosts = {
    "calypso": {
        "ssh_user": "oceanid",
        "sudo": True,
        "gpu": {
            "public_name": "gpu",
            "tunnel_id_key": "cloudflareNodeTunnelId",
            "tunnel_credential_key": "cloudflareNodeTunnelToken",
            "require_gpu": True,
            "gpus": [0],
            "service": {"kind": "triton", "runtime": "container", "port": 8000},
        },
        # Its node in the cluster: only pods that tolerate the taint run on the workstation.
        "k3s": {
            "labels": {"oceanid.cluster/tunnel-enabled": "true"},
            "taints": ["workload-type=gpu-compute:NoSchedule"],
        },
    },
}

# pyinfra's ssh_user and _sudo for a run whose hosts are all reached the same way, such as
# `pyinfra @ssh/calypso deploys/gpu.py`; inventory files give each host its own.
globals().update(_run_login_data(hosts))
