"""The deploy's settings: one validated model of `group_data/` and the host data.

Every value is checked here once, before any operation is queued, and every problem is
reported at once as `key: what is wrong (got …)` so an operator fixes a typo in one go.
Unknown keys are errors too: a misspelt flag silently keeping its default is how a
"minimal" deploy ends up provisioning nodes.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import re
import runpy
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from oceanid.node_labels import check_api_label, check_taint

HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
)
LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
UNIX_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
DEB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
SSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com)"
    r" [A-Za-z0-9+/=]+( .*)?$"
)
IMAGE_RE = re.compile(
    r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+:[A-Za-z0-9._-]+(@sha256:[0-9a-f]{64})?$"
)
# An image ID as Docker reports it (`docker image inspect -f '{{.Id}}'`): what an image built or
# loaded without a registry is pinned by.
IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
IMAGE_HINT = (
    "must be an image reference registry/name:tag[@sha256:…] or an image ID sha256:<64 hex>"
)
ADDRESS_RE = re.compile(r"^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\]):\d{1,5}$")
# Every check against these is a full match (`fullmatch`, or pydantic's `pattern`, whose Rust
# regex reads `$` as the end of the text): Python's `re.match(…$)` lets a value end in a
# newline, which would reach a unit file, an env file or a Secret.

#: Control characters (C0, DEL, C1) and Unicode's line and paragraph separators: what would
#: end or break a line of a unit file, an env file, a config file or a shell command.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
ONE_LINE = "must be one line without control characters"

#: What a `pattern=` of a field means, in words: pydantic's own message would print the regex.
PATTERN_WORDS: dict[str, str] = {}


def described(pattern: str, words: str) -> str:
    """`pattern`, for a field's `pattern=`, its failure reported as `words` (format_errors)."""
    PATTERN_WORDS[pattern] = words
    return pattern


#: Host data keys that belong to pyinfra (connectors and global arguments), not to us.
PYINFRA_KEY_PREFIXES = ("ssh_", "_", "winrm_", "docker_", "local_", "chroot_", "terraform_")


def has_control(value: str) -> bool:
    """Whether `value` holds a newline or another control character."""
    return CONTROL_RE.search(value) is not None


def _one_line(value: str) -> str:
    if has_control(value):
        raise ValueError(ONE_LINE)
    return value


def _matching(pattern: re.Pattern[str], message: str) -> Callable[[str], str]:
    """A validator: the value whole must match `pattern`, else `message` (words, not the
    regex: the operator reads it)."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(message)
        return value

    return check


_hostname = _matching(HOSTNAME_RE, "must be a lower-case DNS name such as boathou.se")
_sha256 = _matching(SHA256_RE, "must be 64 lower-case hex digits (a SHA-256)")
_label = _matching(LABEL_RE, "must be one DNS label such as gpu or gpu2")


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError("must be an http(s) URL")
    return value


#: A value that reaches a unit file, an env file or a command: a newline there would end the
#: line and start another (a second variable, a second option), so none is allowed.
OneLine = Annotated[str, AfterValidator(_one_line)]
Hostname = Annotated[str, AfterValidator(_hostname)]
Label = Annotated[str, AfterValidator(_label)]
HttpUrl = Annotated[OneLine, AfterValidator(_http_url)]
Sha256 = Annotated[str, AfterValidator(_sha256)]

UNIX_NAME_WORDS = (
    "must be a Unix user name: up to 32 lower-case letters, digits, _ or -, starting with a "
    "letter or _"
)
DEB_NAME_WORDS = "must be a Debian package name such as docker.io (lower-case, digits, + . -)"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(value: str) -> str:
    if not ENV_NAME_RE.fullmatch(value):
        raise ValueError(
            "must be letters, digits and _, not starting with a digit (a variable's name)"
        )
    return value


def _mount_path(value: str) -> str:
    if not value.startswith("/") or ":" in value:
        raise ValueError(
            "must be an absolute path without ':' (it is mounted with docker run -v, "
            "which reads ':' as its separator)"
        )
    return value


#: A variable's name in an env file (`NAME=value` a line).
EnvName = Annotated[str, AfterValidator(_env_name)]
#: A host folder a unit mounts into a container at the same path.
MountPath = Annotated[OneLine, AfterValidator(_mount_path)]
#: A package apt installs.
DebName = Annotated[str, Field(pattern=described(DEB_NAME_RE.pattern, DEB_NAME_WORDS))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Artifact(Strict):
    """A pinned download: the version, where it comes from, and what it must hash to.

    `url` is a template with `{version}` and `{arch}`; in production it names the
    upstream release, an air-gapped site points it at its own mirror.
    """

    version: OneLine = Field(min_length=1)
    url: OneLine
    sha256: dict[Literal["amd64", "arm64"], Sha256] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("must be an http(s) URL template")
        if "{version}" not in value:
            raise ValueError("must contain {version}")
        return value

    def url_for(self, arch: str) -> str:
        return self.url.format(version=self.version, arch=arch)


class PipPin(Strict):
    """A wheel installed by pip with `--require-hashes`: its version and per-arch SHA-256."""

    version: OneLine = Field(min_length=1)
    sha256: dict[Literal["amd64", "arm64"], Sha256] = Field(min_length=1)


def image_reference(value: str) -> bool:
    return bool(IMAGE_RE.fullmatch(value) or IMAGE_ID_RE.fullmatch(value))


class ImageArchive(Strict):
    """A `docker save` archive of an image, for a host that reaches no registry: the deploy
    downloads it, checks its SHA-256, `docker load`s it and checks that the image it pins is
    then on disk."""

    url: HttpUrl
    sha256: Sha256


class GpuService(Strict):
    """What serves `gpu.<base>` on a GPU host.

    `memlock` is the container's locked-memory limit (`docker run --ulimit memlock=`):
    unlimited, as Triton's documentation runs it, unless the host caps it lower (the lab's
    machine allows 8 MiB).
    """

    kind: Literal["triton", "http"] = "triton"
    runtime: Literal["container", "host"] = "container"
    image: str | None = None
    image_archive: ImageArchive | None = None
    port: int = Field(default=8000, ge=1, le=65535)
    environment: dict[EnvName, OneLine] = Field(default_factory=dict)
    docker_package: DebName = "docker.io"
    memlock: Literal["unlimited"] | Annotated[int, Field(ge=65536)] = "unlimited"

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not image_reference(value):
            raise ValueError(IMAGE_HINT)
        return value

    @model_validator(mode="after")
    def _http_needs_image(self) -> GpuService:
        if self.kind == "http" and self.image is None:
            raise ValueError("kind http needs an image")
        return self

    @model_validator(mode="after")
    def _triton_ports_fit(self) -> GpuService:
        if self.kind == "triton" and self.port > 65533:  # gRPC and metrics on the next two
            raise ValueError(
                f"kind triton uses port, port+1 and port+2: at most 65533 (got {self.port})"
            )
        return self

    @property
    def runs_ml_backend(self) -> bool:
        """Whether the ML-backend adapter runs beside this service (and `ml.<base>` is
        published): on the `triton` kind, whose model it calls; an `http` server is none."""
        return self.kind == "triton"


ACCESS_MODES = ("off", "service_token")


def _access(value: str) -> str:
    if value not in ACCESS_MODES:
        raise ValueError(
            "must be service_token (only the Cloudflare Access service token whose client ID "
            "and secret are ESC cloudflareAccessClientId and cloudflareAccessClientSecret "
            "reaches this name) or off (the name is open to every client)"
        )
    return value


class GpuHost(Strict):
    """What is particular to one GPU host: its public name, its tunnel, its GPUs.

    `access: service_token` puts the public name behind Cloudflare Access: the deploy keeps
    an Access application for it whose one policy admits one service token
    (oceanid/cloudflare_access.py), so the edge refuses a client without that token before a
    request reaches the tunnel.
    """

    public_name: Label = "gpu"
    access: Annotated[str, AfterValidator(_access)] = "off"
    tunnel_id_key: OneLine = "cloudflareNodeTunnelId"
    tunnel_credential_key: OneLine = "cloudflareNodeTunnelToken"
    require_gpu: bool = True
    gpus: list[Annotated[int, Field(ge=0)]] | None = None
    service: GpuService = GpuService()
    granite_model_dir: MountPath | None = None


# Ports k3s itself binds on a server (supervisor and API, the API's internal listener, etcd,
# the kubelet, kube-proxy, the controllers, containerd's stream server, flannel's VXLAN and
# WireGuard): a load balancer on one of them collides with k3s, as the old stack's did.
K3S_PORTS = frozenset(
    {6443, 6444, 2379, 2380, 2381, 8472, 10010, 10248, 10249, 10250, 10256, 10257, 10258}
    | {10259, 51820, 51821}
)


def _check_k3s_labels(value: dict[str, str]) -> dict[str, str]:
    """Valid Kubernetes labels; those the kubelet refuses at registration (node-role...) are
    set only through the API (operations/k3s.py `node_labels`), never in config.yaml
    (deploys/k3s/config.py `registration_labels`)."""
    for key, label in value.items():
        check_api_label(key, label)
    return value


def _check_k3s_taints(value: list[str]) -> list[str]:
    for taint in value:
        check_taint(taint)
    return value


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be one IPv4 or IPv6 address, such as 10.77.0.11") from None


IpAddress = Annotated[str, AfterValidator(_ip_address)]


class K3sHost(Strict):
    """What is particular to one k3s node: how it is reached, its node labels and taints.

    Labels and taints are reconciled through the API after the node joined (k3s applies a
    config's taints only at first registration, its labels only when it starts); labels the
    kubelet refuses at registration
    (`node-role.kubernetes.io/*`) are set that way only, never through config.yaml.
    """

    address: str | None = Field(  # default: its name
        default=None,
        pattern=described(r"^[A-Za-z0-9.:-]+$", "must be a host name or an IP address"),
    )
    node_ip: IpAddress | None = None  # what the node advertises (k3s's node-ip)
    node_external_ip: IpAddress | None = None  # a public address besides it (node-external-ip)
    flannel_iface: str | None = Field(
        default=None,
        pattern=described(
            r"^[A-Za-z0-9_.-]{1,15}$",
            "must be a network interface name: up to 15 letters, digits, _ . or -",
        ),
    )
    labels: Annotated[dict[str, str], AfterValidator(_check_k3s_labels)] = Field(
        default_factory=dict
    )
    taints: Annotated[list[str], AfterValidator(_check_k3s_taints)] = Field(default_factory=list)
    # A server holding a SQLite datastore that the deploy starts with cluster-init is converted
    # to etcd by k3s, with no way back: the deploy refuses that unless this says so.
    convert_datastore_to_etcd: bool = False

    def ip_addresses(self) -> list[str]:
        """The node's IP addresses that the inventory states (`address` where it is one,
        `node_ip`, `node_external_ip`): the sources the other nodes' firewalls admit."""
        found = [self.node_ip, self.node_external_ip]
        if self.address is not None:
            # a host name is left out: k3s and HAProxy resolve it, a firewall cannot
            with contextlib.suppress(ValueError):
                found.append(str(ipaddress.ip_address(self.address)))
        return list(dict.fromkeys(a for a in found if a is not None))


class HostSettings(Strict):
    """Per-host data, keyed by the host's inventory name in `hosts:`.

    `ssh_user` and `sudo` say how pyinfra reaches the host (calypso: as `oceanid`, with
    sudo); `login_data` hands them to pyinfra as its `ssh_user` and `_sudo`, so the host
    is reached the same way with or without an inventory file.
    """

    ssh_user: str | None = Field(
        default=None, pattern=described(UNIX_NAME_RE.pattern, UNIX_NAME_WORDS)
    )
    sudo: bool = False
    gpu: GpuHost | None = None
    k3s: K3sHost = K3sHost()


MEMORY_RE = re.compile(r"^[1-9][0-9]*(Mi|Gi)$")
MOVING_TAGS = ("latest", "develop", "nightly", "main", "master")


def _memory(value: str) -> str:
    if not MEMORY_RE.fullmatch(value):
        raise ValueError("must be a Kubernetes quantity in Mi or Gi such as 1Gi or 768Mi")
    return value


def _mebibytes(value: str) -> int:
    return int(value[:-2]) * (1024 if value.endswith("Gi") else 1)


Memory = Annotated[str, AfterValidator(_memory)]


class LabelStudioApp(Strict):
    """Label Studio in namespace `apps`, served at `<public_name>.<base>`.

    The image tag is pinned: the old stack's default `develop` moved under it. Memory
    defaults sit well above the 1 GiB at which it was OOM-killed.
    """

    enabled: bool = True
    image: str = "heartexlabs/label-studio:1.23.2"
    public_name: Label = "label"
    memory_request: Memory = "1Gi"
    memory_limit: Memory = "3Gi"
    storage: Memory = "10Gi"

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if not IMAGE_RE.fullmatch(value):
            raise ValueError(
                "must be an image reference name:tag such as heartexlabs/label-studio:1.23.2"
            )
        tag = value.split("@", 1)[0].rsplit(":", 1)[1]
        if tag.lower() in MOVING_TAGS:
            raise ValueError(f"tag {tag} moves; pin a release such as 1.23.2")
        return value

    @model_validator(mode="after")
    def _limit_covers_request(self) -> LabelStudioApp:
        if _mebibytes(self.memory_limit) < _mebibytes(self.memory_request):
            raise ValueError(
                f"memory_limit {self.memory_limit} is below memory_request {self.memory_request}"
            )
        return self


class MlBackendConnector(Strict):
    """The hourly job that gives every Label Studio project the ML backend.

    `url` None: the first GPU host's public URL, https://<public_name>.<base> (with no GPU
    host in the inventory, the default public name's: https://gpu.<base>).
    """

    enabled: bool = True
    url: HttpUrl | None = None
    title: OneLine = Field(default="oceanid-gpu", min_length=1, max_length=100)
    schedule: str = Field(
        default="0 * * * *",
        pattern=described(
            r"^\S+( \S+){4}$", "must be a cron schedule of five fields such as '0 * * * *'"
        ),
    )


class BackupApp(Strict):
    """Label Studio's database and media to S3-compatible storage (deploys/cluster_apps/backup.py).

    `enabled` None: on where the object store is configured (the ESC keys backupS3*), off
    where it is not; True requires them. The PostgreSQL image gives `pg_dump` and
    `pg_restore`: its major version must be the server's (pg_dump refuses a newer server,
    and a newer client's custom format an older pg_restore cannot read). A change of Label
    Studio's image backs up first, unless `skip_before_upgrade` names the new image.
    """

    enabled: bool | None = None
    schedule: str = Field(
        default="17 2 * * *",
        pattern=described(
            r"^\S+( \S+){4}$", "must be a cron schedule of five fields such as '17 2 * * *'"
        ),
    )
    keep_daily: int = Field(default=7, ge=1, le=366)
    keep_weekly: int = Field(default=4, ge=0, le=520)
    postgres_image: str = "docker.io/library/postgres:15.18-bookworm"
    skip_before_upgrade: str | None = None
    # k3s's own etcd snapshots to the same store (deploys/k3s/config.py `etcd_snapshots`)
    etcd_snapshot_schedule: str = Field(
        default="0 */12 * * *",
        pattern=described(
            r"^\S+( \S+){4}$", "must be a cron schedule of five fields such as '0 */12 * * *'"
        ),
    )
    etcd_snapshot_retention: int = Field(default=14, ge=1, le=1000)

    @field_validator("postgres_image", "skip_before_upgrade")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_RE.fullmatch(value):
            raise ValueError(
                "must be an image reference registry/name:tag[@sha256:…] such as "
                "docker.io/library/postgres:15.18-bookworm"
            )
        return value


class ClusterApps(Strict):
    """What k3s's auto-deploy folder on the first server holds (deploys/cluster_apps).

    `node_tunnel_mode`: `host` runs each GPU host's tunnel as cloudflared-node.service;
    `daemonset` runs it in the cluster on nodes labelled oceanid.cluster/tunnel-enabled=true
    (the old stack's alternative), and the host connector is then stopped.
    """

    label_studio: LabelStudioApp = LabelStudioApp()
    cluster_connector: bool = True
    # at least 2: with one, the PodDisruptionBudget (minAvailable 1) would block every drain
    cluster_connector_replicas: int = Field(default=2, ge=2, le=10)
    ml_backend: MlBackendConnector = MlBackendConnector()
    node_tunnel_mode: Literal["host", "daemonset"] = "host"
    backup: BackupApp = BackupApp()

    @model_validator(mode="after")
    def _ml_backend_needs_label_studio(self) -> ClusterApps:
        if self.ml_backend.enabled and not self.label_studio.enabled:
            raise ValueError(
                "ml_backend.enabled needs label_studio.enabled: it talks to Label Studio"
            )
        if self.backup.enabled and not self.label_studio.enabled:
            raise ValueError("backup.enabled needs label_studio.enabled: it backs up Label Studio")
        return self


class Settings(Strict):
    """Every setting the deploys read. Defaults live in group_data/all.py, not here."""

    base_domain: Hostname
    esc_environment: str = Field(
        pattern=described(
            r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
            "must be an ESC environment project/name such as default/oceanid-cluster",
        )
    )
    secret_sources: list[Literal["esc", "env", "file"]] = Field(min_length=1)
    secrets_file: OneLine | None = None
    enable_node_provisioning: bool
    enable_control_plane_lb: bool
    k3s_lb_port: int = Field(ge=1024, le=65535)
    # k3s's own values (pkg/cli/cmds/server.go), but `none`: the cluster needs flannel
    k3s_flannel_backend: Literal["wireguard-native", "vxlan", "host-gw"]
    manage_dns: bool
    admin_user: str = Field(pattern=described(UNIX_NAME_RE.pattern, UNIX_NAME_WORDS))
    admin_ssh_keys: list[OneLine]
    base_packages: list[DebName]
    k3s: Artifact
    cloudflared: Artifact
    triton_image: str
    # The NVIDIA driver release triton_image needs (NVIDIA's release notes of that Triton
    # release, "Driver Requirements"); a GPU host's older driver stops the deploy, saying
    # which to install (oceanid/driver.py). None: not compared.
    triton_min_driver: str | None = Field(
        default=None,
        pattern=described(
            r"^[0-9]{3,4}(\.[0-9]{1,3}){0,2}$",
            "must be an NVIDIA driver release such as 575 or 535.86",
        ),
    )
    triton_image_archive: ImageArchive | None = None
    triton_wheel: PipPin
    nvidia_container_key_fingerprint: str = Field(
        pattern=described(
            r"^[0-9A-F]{40}$", "must be an OpenPGP fingerprint: 40 upper-case hex digits"
        )
    )
    tunnel_protocol: Literal["auto", "http2", "quic"]
    cloudflared_metrics_address: str = Field(
        pattern=described(
            ADDRESS_RE.pattern,
            "must be a loopback address and port such as 127.0.0.1:2200 or localhost:2200",
        )
    )
    cloudflare_api_base_url: HttpUrl | None = None
    cloudflare_takeover_records: list[Hostname] = Field(default_factory=list)
    # `make smoke`: a PDF the GPU hosts can fetch, sent through each ML backend's /predict
    smoke_pdf_url: HttpUrl | None = None
    hosts: dict[str, HostSettings] = Field(default_factory=dict)
    cluster_apps: ClusterApps

    @field_validator("admin_ssh_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for i, key in enumerate(value):
            if not SSH_KEY_RE.fullmatch(key.strip()):
                raise ValueError(f"item {i} is not an OpenSSH public key line")
        return value

    @field_validator("secrets_file")
    @classmethod
    def _secrets_file(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\0" in value):
            raise ValueError("must be the path of a YAML or JSON file")
        return value

    @field_validator("triton_image")
    @classmethod
    def _triton_image(cls, value: str) -> str:
        if not image_reference(value):
            raise ValueError(IMAGE_HINT)
        return value

    @model_validator(mode="after")
    def _lb_needs_provisioning(self) -> Settings:
        if self.enable_control_plane_lb and not self.enable_node_provisioning:
            raise ValueError(
                "enable_control_plane_lb needs enable_node_provisioning: the load balancer "
                "fronts the k3s servers that provisioning installs"
            )
        return self

    @field_validator("k3s_lb_port")
    @classmethod
    def _lb_port(cls, value: int) -> int:
        if value in K3S_PORTS:
            raise ValueError(
                "k3s itself binds this port on a server; give the load balancer its own (7443, say)"
            )
        return value

    def host(self, name: str) -> HostSettings:
        return self.hosts.get(name, HostSettings())

    def node_tunnel_in_cluster(self) -> bool:
        """Whether the cluster's DaemonSet serves each GPU host's tunnel
        (`node_tunnel_mode: daemonset`, with k3s provisioned): the host connector is then
        stopped, by the GPU role (deploys/gpu_host) and in what `make status` expects."""
        return self.enable_node_provisioning and self.cluster_apps.node_tunnel_mode == "daemonset"


class SettingsError(ValueError):
    """All settings problems, one line each, ready to print."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_errors(exc: ValidationError, root: str = "") -> list[str]:
    """One line per problem: `key.path: message (got value)`."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"] if p not in ("function-after", "[key]"))
        key = f"{root}{path}" if path else root.rstrip(".") or "settings"
        message = err["msg"].removeprefix("Value error, ")
        if err["loc"][-1:] == ("[key]",):  # a mapping's key, not its value, is wrong
            message = f"the name {message}"
        if err["type"] == "string_pattern_mismatch":  # pydantic's message prints the regex
            message = PATTERN_WORDS.get(
                err.get("ctx", {}).get("pattern", ""),
                "is not in the form this setting takes (see its comment in group_data/all.py)",
            )
        if err["type"] == "missing":
            lines.append(f"{key}: missing; set it in group_data/all.py")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting")
        else:
            lines.append(f"{key}: {message} (got {_describe(err.get('input'))})")
    return lines


def settings_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a host's data that is ours, leaving pyinfra's own keys aside."""
    return {k: v for k, v in data.items() if not k.startswith(PYINFRA_KEY_PREFIXES)}


def from_data(data: Mapping[str, Any]) -> Settings:
    """Validate a host's merged data (group_data + inventory) into Settings."""
    ours = settings_keys(data)
    problems: list[str] = []
    known = set(Settings.model_fields)
    for key in sorted(set(ours) - known):
        hint = difflib.get_close_matches(key, known, n=1)
        problems.append(f"{key}: unknown setting" + (f"; did you mean {hint[0]}?" if hint else ""))
    try:
        settings = Settings.model_validate({k: v for k, v in ours.items() if k in known})
    except ValidationError as exc:
        problems.extend(format_errors(exc))
        raise SettingsError(problems) from None
    if problems:
        raise SettingsError(problems)
    return settings


def short_name(name: str) -> str:
    """`@ssh/calypso` and `calypso` are the same host to our data."""
    return name.rsplit("/", 1)[-1]


def login_data(hosts: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """pyinfra's `ssh_user` and `_sudo` for these hosts, from their `hosts:` entries.

    pyinfra reads both from host data, before it connects; but it evaluates group data once
    per run, not once per host, so group_data/all.py can only give them for the whole run.
    It does when every host of the run is reached the same way (`pyinfra @ssh/calypso
    deploys/gpu.py`, which has no inventory file), and an inventory file gives each host
    its own through `inventory_host`. `_sudo` is only ever set, never cleared,
    so `--sudo` keeps working for a host whose entry does not ask for it.
    A malformed entry stops pyinfra before it connects, naming the key.
    """
    logins = set()
    for name in dict.fromkeys(short_name(n) for n in names):
        entry = hosts.get(name)
        entry = entry if isinstance(entry, Mapping) else {}
        given = {k: entry[k] for k in ("ssh_user", "sudo") if k in entry}
        try:
            login = HostSettings.model_validate(given)
        except ValidationError as exc:
            raise SystemExit("\n".join(format_errors(exc, f"hosts.{name}."))) from None
        logins.add((login.ssh_user, login.sudo))
    if len(logins) != 1:
        return {}
    ssh_user, sudo = logins.pop()
    data: dict[str, Any] = {}
    if ssh_user is not None:
        data["ssh_user"] = ssh_user
    if sudo:
        data["_sudo"] = True
    return data


def run_login_data(hosts: Mapping[str, Any]) -> dict[str, Any]:
    """`login_data` for the hosts of the run pyinfra is loading (group_data/all.py's view of
    the inventory); nothing outside a pyinfra run, where there are no hosts to reach."""
    from oceanid.pyinfra_internals import loading_inventory_names

    names = loading_inventory_names()
    return {} if names is None else login_data(hosts, names)


def inventory_host(
    *group_data: str | Path, **data: Any
) -> Callable[[str], tuple[str, dict[str, Any]]]:
    """For an inventory file: `name -> (name, host data)`, the host data being `data` and
    the login its `hosts:` entry gives (`login_data`), so an inventory never repeats it.

    `group_data` are the files pyinfra will load for this inventory, in its order; as in
    pyinfra, a later file's `hosts` replaces an earlier one's.
    """
    hosts: Mapping[str, Any] = {}
    for file in group_data:
        hosts = runpy.run_path(str(file)).get("hosts", hosts)
    return lambda name: (name, {**data, **login_data(hosts, [name])})
