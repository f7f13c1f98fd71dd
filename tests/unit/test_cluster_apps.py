"""Cluster apps: every manifest the deploy can render, validated against k3s's Kubernetes.

The site is built the way the deploy builds it (preflight.check over group_data and fake
lab secrets); the objects are read back from the bytes that would be written, so what is
validated is what k3s would receive.
"""

from __future__ import annotations

import itertools
import json

import kubernetes_validate
import pytest
import yaml

from deploys import cluster_apps
from deploys.cluster_apps import label_studio, ml_backend, objects
from oceanid.ingress import node_ingress
from oceanid.model import HostView
from oceanid.preflight import PreflightError, check
from oceanid.settings import GpuService, SettingsError, from_data
from tests.unit.conftest import REPO

GROUPS = {"tethys": {"k3s_servers"}, "styx": {"k3s_agents"}, "calypso": {"k3s_agents", "gpu_hosts"}}
MANAGED = {"app.kubernetes.io/managed-by": "oceanid-deploys"}


def k8s_minor(data: dict) -> str:
    """k3s's pinned minor: v1.33.4+k3s1 -> 1.33."""
    return ".".join(data["k3s"]["version"].lstrip("v").split(".")[:2])


def site_for(data, values, tmp_path, names=("tethys", "styx", "calypso"), groups=GROUPS):
    data["secret_sources"] = ["file"]
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(values))
    path.chmod(0o600)
    views = [HostView(n, frozenset(groups[n]), data) for n in names]
    site = check(views, environ={"SECRETS_FILE": str(path)})
    return site, from_data(data)


def files_of(data, values, tmp_path):
    site, settings = site_for(data, values, tmp_path)
    return {f.path: f for f in cluster_apps.manifest_files(site, settings)}


def docs(managed_file) -> list[dict]:
    return list(yaml.safe_load_all(managed_file.content))


def find(files, kind, name=None) -> dict:
    found = [
        d
        for f in files.values()
        for d in docs(f)
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def env_of(container) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def with_credential_shapes(values, cluster_shape, node_shape):
    """The lab's secrets with the cluster and node credentials in the shapes asked for."""
    from oceanid.tunnel_credentials import parse

    values = dict(values)
    cluster = parse(values["cloudflareTunnelToken"], key="t")
    node = parse(values["cloudflareNodeTunnelToken"], key="t")
    values["cloudflareTunnelToken"] = (
        cluster.token() if cluster_shape == "token" else cluster.credentials_json()
    )
    values["cloudflareNodeTunnelToken"] = (
        node.token() if node_shape == "token" else node.credentials_json()
    )
    return values


COMBINATIONS = [
    combo
    for combo in itertools.product(
        [True, False],  # label_studio.enabled
        [True, False],  # cluster_connector
        [True, False],  # ml_backend.enabled
        ["host", "daemonset"],  # node_tunnel_mode
        ["token", "credentials"],  # the credentials' shape
    )
    if combo[0] or not combo[2]  # the ML-backend job needs Label Studio
]


@pytest.mark.parametrize(("ls", "connector", "ml", "mode", "shape"), COMBINATIONS)
def test_every_manifest_validates_strictly(
    data, lab_secrets, tmp_path, ls, connector, ml, mode, shape
):
    apps = data["cluster_apps"]
    apps["label_studio"]["enabled"] = ls
    apps["cluster_connector"] = connector
    apps["ml_backend"]["enabled"] = ml
    apps["node_tunnel_mode"] = mode
    files = files_of(data, with_credential_shapes(lab_secrets, shape, shape), tmp_path)
    expected = {
        "label-studio": ls,
        "cloudflared": connector,
        "ml-backend-connector": ml,
        "node-tunnel": mode == "daemonset",
    }
    for app, on in expected.items():
        assert (cluster_apps.path(app) in files) is on, app
        assert (cluster_apps.path(app, secret=True) in files) is on, app
    minor = k8s_minor(data)
    assert minor == "1.33"
    created = {
        d["metadata"]["name"] for f in files.values() for d in docs(f) if d["kind"] == "Namespace"
    }
    for managed_file in files.values():
        assert managed_file.path.startswith("/var/lib/rancher/k3s/server/manifests/oceanid-")
        for document in docs(managed_file):
            assert kubernetes_validate.validate(document, minor, strict=True) == minor
            assert document["metadata"]["labels"].items() >= MANAGED.items()
            namespace = document["metadata"].get("namespace")
            assert namespace is None or namespace in created, (managed_file.path, namespace)
            template = document.get("spec", {}).get("template", {})
            if template:
                assert template["metadata"]["labels"].items() >= MANAGED.items()


def test_secrets_only_in_their_own_0600_files(data, lab_secrets, tmp_path):
    data["cluster_apps"]["node_tunnel_mode"] = "daemonset"
    files = files_of(data, lab_secrets, tmp_path)
    from oceanid.tunnel_credentials import parse

    values = [v for k, v in lab_secrets.items() if k.startswith("labelStudio")]
    for key in ("cloudflareTunnelToken", "cloudflareNodeTunnelToken"):
        values += [lab_secrets[key], parse(lab_secrets[key], key=key).tunnel_secret]
    db = label_studio.database_env(lab_secrets["labelStudioDbUrl"])
    for managed_file in files.values():
        kinds = {d["kind"] for d in docs(managed_file)}
        text = managed_file.content.decode()
        if managed_file.path.endswith("-secret.yaml"):
            assert kinds == {"Secret"}
            assert (managed_file.mode, managed_file.secret) == ("0600", True)
        else:
            assert "Secret" not in kinds
            assert (managed_file.mode, managed_file.secret) == ("0644", False)
            for value in [*values, db["POSTGRE_PASSWORD"]]:
                assert value.strip() not in text, managed_file.path
            assert '"secret"' not in json.dumps([d.get("stringData") for d in docs(managed_file)])


def test_label_studio_runs_on_postgresql_from_the_url(data, lab_secrets, tmp_path):
    lab_secrets["labelStudioDbUrl"] = (
        "postgresql://ls%40app:p%2Fss%3Aword@db.internal:6543/label_db"
    )
    data["cluster_apps"]["label_studio"].update(memory_request="2Gi", memory_limit="4Gi")
    files = files_of(data, lab_secrets, tmp_path)
    deployment = find(files, "Deployment", "label-studio")
    assert deployment["metadata"]["namespace"] == "apps"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "heartexlabs/label-studio:1.23.2"
    env = env_of(container)
    assert env["DJANGO_DB"]["value"] == "default"
    assert env["LABEL_STUDIO_HOST"]["value"] == "https://label.boathou.se"
    assert env["CSRF_TRUSTED_ORIGINS"]["value"] == "https://label.boathou.se"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"]["value"] == "true"
    secret = find(files, "Secret", "label-studio")["stringData"]
    expected = {
        "POSTGRE_HOST": "db.internal",
        "POSTGRE_PORT": "6543",
        "POSTGRE_NAME": "label_db",
        "POSTGRE_USER": "ls@app",
        "POSTGRE_PASSWORD": "p/ss:word",
        "LABEL_STUDIO_USERNAME": lab_secrets["labelStudioAdminEmail"],
        "LABEL_STUDIO_PASSWORD": lab_secrets["labelStudioAdminPassword"],
        "LABEL_STUDIO_USER_TOKEN": lab_secrets["labelStudioApiToken"],
    }
    assert secret == expected
    for name in expected:
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "label-studio", "key": name}
    assert container["resources"]["requests"]["memory"] == "2Gi"
    assert container["resources"]["limits"]["memory"] == "4Gi"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # migrations
    claim = find(files, "PersistentVolumeClaim", "label-studio")
    assert claim["spec"]["storageClassName"] == "local-path"
    assert container["volumeMounts"] == [{"name": "data", "mountPath": label_studio.DATA_DIR}]
    service = find(files, "Service", "label-studio")
    assert service["spec"]["ports"][0]["port"] == 8080
    assert service["spec"]["selector"].items() <= container_labels(deployment).items()


def container_labels(workload) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def test_label_studio_defaults_are_above_the_oom(data):
    app = from_data(data).cluster_apps.label_studio
    assert (app.memory_request, app.memory_limit) == ("1Gi", "3Gi")


@pytest.mark.parametrize("tag", ["latest", "develop"])
def test_a_moving_image_tag_is_refused(data, tag):
    data["cluster_apps"]["label_studio"]["image"] = f"heartexlabs/label-studio:{tag}"
    with pytest.raises(SettingsError) as err:
        from_data(data)
    assert err.value.problems == [
        f"cluster_apps.label_studio.image: tag {tag} moves; pin a release such as 1.23.2 "
        f"(got 'heartexlabs/label-studio:{tag}')"
    ]


def test_memory_limit_below_request_is_refused(data):
    data["cluster_apps"]["label_studio"].update(memory_request="3Gi", memory_limit="1024Mi")
    with pytest.raises(SettingsError) as err:
        from_data(data)
    assert "memory_limit 1024Mi is below memory_request 3Gi" in str(err.value)


BAD_URLS = {
    "sqlite:////label-studio/data/label_studio.sqlite3": "is not postgresql",
    "postgresql://db:5432/ls": "no user, password",
    "postgresql://ls:PASSWORD@db:5432/": "no database",
    "postgresql://ls:PASSWORD@:5432/ls": "no host",
    "postgresql://ls:PASSWORD@db:notaport/ls": "not a URL",
    "postgresql://ls:PASSWORD@db/ls?sslmode=require": "no ?options",
    "just words": "scheme (none)",
}


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_database_url_stops_preflight(data, lab_secrets, tmp_path, url):
    lab_secrets["labelStudioDbUrl"] = url
    with pytest.raises(PreflightError) as err:
        site_for(data, lab_secrets, tmp_path)
    (line,) = [p for p in err.value.problems if p.startswith("labelStudioDbUrl")]
    assert BAD_URLS[url] in line
    assert "PASSWORD" not in line


def test_missing_label_studio_secrets_stop_preflight(data, lab_secrets, tmp_path):
    for key in label_studio.SECRET_KEYS:
        del lab_secrets[key]
    with pytest.raises(PreflightError) as err:
        site_for(data, lab_secrets, tmp_path)
    keys = sorted(p.split(":")[0] for p in err.value.problems)
    assert keys == sorted(label_studio.SECRET_KEYS)
    assert "needed for Label Studio" in err.value.problems[0]
    data["cluster_apps"]["label_studio"]["enabled"] = False
    data["cluster_apps"]["ml_backend"]["enabled"] = False
    site_for(data, lab_secrets, tmp_path)  # Label Studio off: none of its keys needed


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("labelStudioApiToken", "x" * 41, "40-character column"),
        ("labelStudioAdminEmail", "nobody-at-example", "not an e-mail address"),
        ("labelStudioAdminPassword", "Sh0rt!", "shorter than 8"),
    ],
)
def test_label_studio_admin_it_could_not_create_is_refused(
    data, lab_secrets, tmp_path, key, value, message
):
    lab_secrets[key] = value
    with pytest.raises(PreflightError) as err:
        site_for(data, lab_secrets, tmp_path)
    (line,) = err.value.problems
    assert line.startswith(f"{key}: ")
    assert message in line
    assert value not in line


def test_ml_backend_url_from_data_or_the_gpu_host(data, lab_secrets, tmp_path):
    site, settings = site_for(data, lab_secrets, tmp_path, names=("tethys", "styx"))
    env = env_of(job_container(cluster_apps.manifest_files(site, settings)))
    assert env["ML_BACKEND_URL"]["value"] == "https://ml.boathou.se"  # no GPU host: default
    data["hosts"]["calypso"]["gpu"]["public_name"] = "gpu7"
    site, settings = site_for(data, lab_secrets, tmp_path)
    env = env_of(job_container(cluster_apps.manifest_files(site, settings)))
    assert env["ML_BACKEND_URL"]["value"] == "https://ml7.boathou.se"  # the adapter's name
    data["cluster_apps"]["ml_backend"]["url"] = "https://ml.example.org"
    site, settings = site_for(data, lab_secrets, tmp_path)
    env = env_of(job_container(cluster_apps.manifest_files(site, settings)))
    assert env["ML_BACKEND_URL"]["value"] == "https://ml.example.org"


def job_container(files) -> dict:
    job = find({f.path: f for f in files}, "CronJob", ml_backend.NAME)
    return job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("shape", ["token", "credentials"])
def test_cluster_connector(data, lab_secrets, tmp_path, shape):
    data["tunnel_protocol"] = "http2"
    files = files_of(data, with_credential_shapes(lab_secrets, shape, shape), tmp_path)
    deployment = find(files, "Deployment", "cloudflared")
    assert deployment["metadata"]["namespace"] == "cloudflared"
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "cloudflare/cloudflared:2025.8.1"
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "384Mi"},
        "limits": {"cpu": "750m", "memory": "768Mi"},
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 2000, "protocol": "TCP"}]
    assert "tolerations" not in pod
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["calypso"]}
            ]
        }
    ]
    (spread,) = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert spread["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= (
        container_labels(deployment).items()
    )
    budget = find(files, "PodDisruptionBudget", "cloudflared")
    assert budget["spec"]["minAvailable"] == 1
    config = yaml.safe_load(find(files, "ConfigMap", "cloudflared")["data"]["config.yaml"])
    assert config["tunnel"] == lab_secrets["cloudflareTunnelId"]
    assert config["protocol"] == "http2"
    assert config["metrics"] == "0.0.0.0:2000"
    assert config["ingress"] == [
        {
            "hostname": "label.boathou.se",
            "service": "http://label-studio.apps.svc.cluster.local:8080",
        },
        {"service": "http_status:404"},
    ]
    secret = find(files, "Secret", "cloudflared-credential")["stringData"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "credential"]
    if shape == "token":
        assert container["args"][-2:] == ["--token-file", "/etc/cloudflared/credential/token"]
        assert "credentials-file" not in config
        assert list(secret) == ["token"]
    else:
        assert "--token-file" not in container["args"]
        assert config["credentials-file"] == "/etc/cloudflared/credential/credentials.json"
        assert json.loads(secret["credentials.json"])["TunnelID"] == config["tunnel"]
    assert volume["secret"]["secretName"] == "cloudflared-credential"
    assert [i["key"] for i in volume["secret"]["items"]] == list(secret)


def test_cluster_connector_without_label_studio_has_only_the_catch_all(data, lab_secrets, tmp_path):
    data["cluster_apps"]["label_studio"]["enabled"] = False
    data["cluster_apps"]["ml_backend"]["enabled"] = False
    files = files_of(data, lab_secrets, tmp_path)
    config = yaml.safe_load(find(files, "ConfigMap", "cloudflared")["data"]["config.yaml"])
    assert config["ingress"] == [{"service": "http_status:404"}]


def test_ml_backend_connector(data, lab_secrets, tmp_path):
    files = files_of(data, lab_secrets, tmp_path)
    job = find(files, "CronJob", "ml-backend-connector")
    assert job["metadata"]["namespace"] == "apps"
    spec = job["spec"]
    assert spec["schedule"] == "0 * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["successfulJobsHistoryLimit"] <= 5
    assert 0 < spec["failedJobsHistoryLimit"] <= 5
    container = job_container(files.values())
    env = env_of(container)
    assert env["ML_BACKEND_URL"]["value"] == "https://ml.boathou.se"
    assert env["LABEL_STUDIO_URL"]["value"] == "http://label-studio.apps.svc.cluster.local:8080"
    for name in ("LABEL_STUDIO_API_KEY", "ML_BACKEND_USER", "ML_BACKEND_PASSWORD"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {
            "name": "ml-backend-connector",
            "key": name,
        }
    secret = find(files, "Secret", "ml-backend-connector")["stringData"]
    assert secret == {
        "LABEL_STUDIO_API_KEY": lab_secrets["labelStudioApiToken"],
        "ML_BACKEND_USER": lab_secrets["mlBackendUser"],
        "ML_BACKEND_PASSWORD": lab_secrets["mlBackendPassword"],
    }
    script = find(files, "ConfigMap", "ml-backend-connector")["data"]["ensure_ml_backend.py"]
    assert script == (REPO / "deploys/cluster_apps/ensure_ml_backend.py").read_text()
    # A literal block: the file, and so its --diff, shows the script line by line.
    text = files[cluster_apps.path("ml-backend-connector")].content.decode()
    assert (
        "\n  ensure_ml_backend.py: |\n"
        + "".join(f"    {line}\n" if line else "\n" for line in script.splitlines())
        in text
    )
    (mount,) = container["volumeMounts"]
    assert container["command"][-1] == f"{mount['mountPath']}/ensure_ml_backend.py"
    assert container["image"] == data["cluster_apps"]["label_studio"]["image"]  # carries the SDK


def test_node_tunnel_daemonset(data, lab_secrets, tmp_path):
    assert not any("node-tunnel" in p for p in files_of(data, lab_secrets, tmp_path))
    data["cluster_apps"]["node_tunnel_mode"] = "daemonset"
    data["tunnel_protocol"] = "quic"
    files = files_of(data, lab_secrets, tmp_path)
    daemon_set = find(files, "DaemonSet", "cloudflared-node-calypso")
    pod = daemon_set["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] == {
        "oceanid.cluster/tunnel-enabled": "true",
        "kubernetes.io/hostname": "calypso",
    }
    assert pod["tolerations"] == [
        {
            "key": "workload-type",
            "operator": "Equal",
            "value": "gpu-compute",
            "effect": "NoSchedule",
        }
    ]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["host"] == "127.0.0.1"
    config = yaml.safe_load(
        find(files, "ConfigMap", "cloudflared-node-calypso")["data"]["config.yaml"]
    )
    assert config["protocol"] == "quic"
    assert config["tunnel"] == lab_secrets["cloudflareNodeTunnelId"]
    # the host connector's rules (oceanid/ingress.py): Triton's inference plane only
    assert config["ingress"] == node_ingress("gpu.boathou.se", GpuService(port=8000))
    assert config["ingress"][-3]["path"].startswith("^/v2/models/")
    # and the ML-backend adapter's name (deploys/gpu_host/ml_backend), before the catch-all
    assert config["ingress"][-2] == {
        "hostname": "ml.boathou.se",
        "service": "http://localhost:9090",
    }
    secret = find(files, "Secret", "cloudflared-node-calypso")["stringData"]
    assert list(secret) == ["credentials.json"]  # the lab's node credential: base64 credentials


def test_a_rotated_password_changes_the_secret_and_the_digest_alone(data, lab_secrets, tmp_path):
    """Which key `--diff` names for it, and that it shows no value, is asserted through the
    live path (test_cluster_apps_wiring.py, test_diff_names_the_rotated_key_and_never_a_value)."""
    before = files_of(data, lab_secrets, tmp_path)
    rotated = lab_secrets | {"labelStudioAdminPassword": "another-password-42"}
    after = files_of(data, rotated, tmp_path)
    changed = [p for p in before if before[p].content != after[p].content]
    path = cluster_apps.path("label-studio", secret=True)
    assert changed == [cluster_apps.path("label-studio"), path]
    # the Deployment's file differs in the digest line alone
    lines = zip(
        before[changed[0]].content.decode().splitlines(),
        after[changed[0]].content.decode().splitlines(),
        strict=True,
    )
    (differs,) = [(old, new) for old, new in lines if old != new]
    assert all(line.strip().startswith(f"{objects.SECRETS_ANNOTATION}: ") for line in differs)


def test_instances_name_what_is_switched_off(data, lab_secrets, tmp_path):
    data["cluster_apps"]["ml_backend"]["enabled"] = False
    site, settings = site_for(data, lab_secrets, tmp_path)
    assert cluster_apps.instances(site, settings) == {
        "oceanid-label-studio": True,
        "oceanid-cloudflared": True,
        "oceanid-ml-backend-connector": False,
        "oceanid-node-tunnel": False,
        "oceanid-backup": True,  # the lab's secrets configure the object store
    }
    assert ml_backend.APP == "ml-backend-connector"


def materialise(pod: dict, found: dict, root) -> dict[str, str]:
    """Write a pod's ConfigMap and Secret volumes under `root` as the kubelet would mount
    them; mount path -> the folder standing in for it."""
    mounts = {}
    (container,) = pod["containers"]
    for volume in pod["volumes"]:
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        folder = root / volume["name"]
        folder.mkdir()
        if "configMap" in volume:
            items = find(found, "ConfigMap", volume["configMap"]["name"])["data"]
        else:
            data = find(found, "Secret", volume["secret"]["secretName"])["stringData"]
            items = {i["path"]: data[i["key"]] for i in volume["secret"]["items"]}
        for name, text in items.items():
            (folder / name).write_text(text)
        mounts[mount["mountPath"]] = str(folder)
    return mounts


@pytest.mark.parametrize("shape", ["token", "credentials"])
@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", "cloudflared"), ("DaemonSet", "cloudflared-node-calypso")]
)
def test_the_rendered_connector_runs_under_the_cloudflared_stand_in(
    data, lab_secrets, tmp_path, shape, kind, name
):
    """The image's entrypoint (`cloudflared --no-autoupdate`) plus the pod's args, with its
    volumes written out: the stand-in applies cloudflared's flag and config rules."""
    from tests.gpu.triton_smoke import free_ports
    from tests.standins.test_standins import CLOUDFLARED, started

    data["cluster_apps"]["node_tunnel_mode"] = "daemonset"
    files = files_of(data, with_credential_shapes(lab_secrets, shape, shape), tmp_path)
    workload = find(files, kind, name)
    pod = workload["spec"]["template"]["spec"]
    mounts = materialise(pod, files, tmp_path)
    config_file = tmp_path / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    (port,) = free_ports(1)
    config["metrics"] = f"127.0.0.1:{port}"  # the pod's own network namespace, here shared
    text = yaml.safe_dump(config)
    args = pod["containers"][0]["args"]
    for mount_path, folder in mounts.items():
        text = text.replace(mount_path, folder)
        args = [arg.replace(mount_path, folder) for arg in args]
    config_file.write_text(text)
    tunnel = config["tunnel"]
    with started(CLOUDFLARED, "--no-autoupdate", *args, env={"HOME": str(tmp_path)}) as cfd:
        cfd.wait_for(f"Starting tunnel tunnelID={tunnel}")
        cfd.wait_for(r"Registered tunnel connection connIndex=0")
        assert cfd.terminate() == 0


def test_a_daemonset_tunnel_needs_its_gpu_host_in_the_cluster(data, lab_secrets, tmp_path):
    data["cluster_apps"]["node_tunnel_mode"] = "daemonset"
    groups = GROUPS | {"calypso": {"gpu_hosts"}}
    with pytest.raises(PreflightError) as err:
        site_for(data, lab_secrets, tmp_path, groups=groups)
    assert err.value.problems == [
        "cluster_apps.node_tunnel_mode: daemonset runs calypso's tunnel on its k3s node, "
        "but calypso is in neither k3s_agents nor k3s_servers; add it to k3s_agents or "
        "keep node_tunnel_mode host"
    ]
    data["cluster_apps"]["node_tunnel_mode"] = "host"
    site_for(data, lab_secrets, tmp_path, groups=groups)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("cluster_connector_replicas", 1, "greater than or equal to 2"),
        ("node_tunnel_mode", "sidecar", "'host' or 'daemonset'"),
    ],
)
def test_cluster_app_settings_are_checked(data, key, value, message):
    data["cluster_apps"][key] = value
    with pytest.raises(SettingsError) as err:
        from_data(data)
    (line,) = err.value.problems
    assert line.startswith(f"cluster_apps.{key}: ")
    assert message in line


def pod_specs(document) -> list[dict]:
    """Every pod spec inside a rendered object, wherever its kind keeps it (a Deployment's
    template, a CronJob's jobTemplate): any mapping that holds `containers`."""
    if isinstance(document, list):
        return [spec for item in document for spec in pod_specs(item)]
    if not isinstance(document, dict):
        return []
    if "containers" in document:
        return [document]
    return [spec for value in document.values() for spec in pod_specs(value)]


#: The uid each image runs as: Label Studio's Dockerfile `USER 1001`, cloudflared's 65532.
IMAGE_USERS = {
    "heartexlabs/label-studio": 1001,
    "cloudflare/cloudflared": 65532,
    # pg_dump/pg_restore beside Label Studio's image in the backup pods, as its user
    # (deploys/cluster_apps/backup.py): they write only the pod's scratch folder
    "docker.io/library/postgres": 1001,
}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob", "Pod", "ReplicaSet"}


def all_apps_on(data) -> None:
    apps = data["cluster_apps"]
    apps["label_studio"]["enabled"] = apps["ml_backend"]["enabled"] = True
    apps["cluster_connector"] = True
    apps["node_tunnel_mode"] = "daemonset"


def test_every_pod_runs_non_root_without_capabilities_or_an_api_token(data, lab_secrets, tmp_path):
    all_apps_on(data)
    files = files_of(data, lab_secrets, tmp_path)
    found = [d for f in files.values() for d in docs(f)]
    workloads = [d for d in found if d["kind"] in WORKLOADS]
    assert {d["kind"] for d in workloads} == {"Deployment", "DaemonSet", "CronJob"}
    specs = pod_specs(found)
    assert len(specs) == len(workloads)  # one pod spec each, CronJob's included
    for spec in specs:
        assert spec["automountServiceAccountToken"] is False
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec.get("initContainers", []) + spec["containers"]:
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False
            assert own["capabilities"] == {"drop": ["ALL"]}
            assert "privileged" not in own and own.get("runAsNonRoot", True) is True
            user = own.get("runAsUser", pod["runAsUser"])  # numeric: the kubelet checks it
            assert user == IMAGE_USERS[container["image"].rsplit(":", 1)[0]]
    label_studio_pod = find(files, "Deployment", "label-studio")["spec"]["template"]["spec"]
    assert label_studio_pod["securityContext"]["fsGroup"] == 1001  # it writes its volume


def test_hardening_keeps_a_containers_own_settings_and_overrides_weaker_ones():
    spec = objects.hardened(
        {
            "securityContext": {"runAsUser": 0},
            "containers": [
                {
                    "name": "x",
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": True,
                        "capabilities": {"add": ["NET_ADMIN"]},
                    },
                }
            ],
        },
        user=1001,
    )
    assert spec["securityContext"]["runAsUser"] == 1001
    assert "fsGroup" not in spec["securityContext"]
    assert spec["containers"][0]["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def digests(files) -> dict[str, str]:
    """`Kind/name` -> the secrets digest of every object that carries one."""
    found = {}
    for managed_file in files.values():
        for document in docs(managed_file):
            template = document.get("spec", {}).get("template", {})
            annotations = template.get("metadata", {}).get("annotations", {})
            if objects.SECRETS_ANNOTATION in annotations:
                key = f"{document['kind']}/{document['metadata']['name']}"
                found[key] = annotations[objects.SECRETS_ANNOTATION]
    return found


LONG_RUNNING = [
    "Deployment/label-studio",
    "Deployment/cloudflared",
    "DaemonSet/cloudflared-node-calypso",
]


@pytest.mark.parametrize(
    ("key", "changed"),
    [
        ("labelStudioAdminPassword", ["Deployment/label-studio"]),
        ("labelStudioDbUrl", ["Deployment/label-studio"]),
        ("cloudflareNodeTunnelToken", ["DaemonSet/cloudflared-node-calypso"]),
        ("cloudflareTunnelToken", LONG_RUNNING),  # the key of every digest: all roll once
    ],
)
def test_a_rotated_secret_changes_the_digest_of_what_reads_it_only(
    data, lab_secrets, tmp_path, key, changed
):
    from oceanid.tunnel_credentials import parse

    all_apps_on(data)
    before = digests(files_of(data, lab_secrets, tmp_path))
    assert sorted(before) == sorted(LONG_RUNNING)  # the CronJob's pods read it afresh
    assert digests(files_of(data, lab_secrets, tmp_path)) == before  # deterministic
    rotated = dict(lab_secrets)
    if key == "labelStudioDbUrl":
        rotated[key] = lab_secrets[key].replace("@", "x@", 1)  # another password
    elif key.endswith("TunnelToken"):
        credential = parse(lab_secrets[key], key=key)
        shape = "token" if credential.kind == "token" else "credentials"
        fresh = type(credential)(
            credential.shape, credential.account_tag, credential.tunnel_id, "bmV3IHNlY3JldA=="
        )
        rotated[key] = fresh.token() if shape == "token" else fresh.credentials_json()
    else:
        rotated[key] = "another-password-42"
    after = digests(files_of(data, rotated, tmp_path))
    assert sorted(k for k in before if before[k] != after[k]) == sorted(changed)


def test_the_digest_ignores_what_is_not_secret(data, lab_secrets, tmp_path):
    all_apps_on(data)
    before = digests(files_of(data, lab_secrets, tmp_path))
    data["cluster_apps"]["label_studio"]["memory_limit"] = "4Gi"
    data["cluster_apps"]["cluster_connector_replicas"] = 3
    assert digests(files_of(data, lab_secrets, tmp_path)) == before


def test_the_digest_reveals_no_secret(data, lab_secrets, tmp_path):
    """It is keyed: not a plain SHA-256 a list of guesses could be checked against."""
    import hashlib

    all_apps_on(data)
    files = files_of(data, lab_secrets, tmp_path)
    found = [d for f in files.values() for d in docs(f)]
    secrets = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in found
        if d["kind"] == "Secret"
    }
    values = [v for s in secrets.values() for v in s["stringData"].values()]
    plain = set()
    for value in values:
        plain.add(hashlib.sha256(value.encode()).hexdigest())
    for secret in secrets.values():
        for form in (secret["stringData"], {"stringData": secret["stringData"]}):
            for separators in ((",", ":"), (", ", ": ")):
                text = json.dumps(form, sort_keys=True, separators=separators)
                plain.add(hashlib.sha256(text.encode()).hexdigest())
    found_digests = digests(files)
    assert sorted(found_digests) == sorted(LONG_RUNNING)
    for workload, digest in found_digests.items():
        assert len(digest) == 64 and int(digest, 16) >= 0, workload
        assert digest not in plain, workload
        assert not any(value.strip() in digest for value in values if len(value.strip()) > 3)
    # the same Secret data under another key gives another digest
    (secret,) = [s for (ns, name), s in secrets.items() if name == "label-studio"]
    one = objects.secrets_digest([secret], objects.secrets_key("key-one"))
    two = objects.secrets_digest([secret], objects.secrets_key("key-two"))
    assert one != two


def test_a_workload_reading_a_secret_the_app_does_not_render_is_refused():
    pod = objects.hardened(
        {
            "containers": [{"name": "x", "env": [objects.secret_env("A", "elsewhere")]}],
            "volumes": [{"name": "v", "secret": {"secretName": "mine"}}],
        },
        user=1001,
    )
    workload = {
        "kind": "Deployment",
        "metadata": {"name": "w", "namespace": "apps"},
        "spec": {"template": {"metadata": {}, "spec": pod}},
    }
    assert objects.secrets_read(pod) == {"elsewhere", "mine"}
    mine = objects.secret("x", "mine", "apps", {"k": "v"})
    with pytest.raises(ValueError, match="reads Secret elsewhere, which the app does not render"):
        objects.with_secrets_digest([workload], [mine], b"k" * 32)


def _matches(term: dict, labels: dict[str, str]) -> bool:
    """A nodeSelectorTerm against a node's labels, as the scheduler reads it (k8s.io/api
    core/v1 NodeSelectorRequirement: In, NotIn, Exists, DoesNotExist; NotIn and DoesNotExist
    also match a node without the key)."""
    for expression in term.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def test_the_cluster_connector_is_kept_off_the_gpu_node_by_labels_nodes_carry(
    data, lab_secrets, tmp_path
):
    """Each node's labels as the cluster gives them: the kubelet's kubernetes.io/hostname (its
    k3s node-name, the inventory name) and those the deploy sets from host data."""
    from deploys.k3s import cluster

    data.update(enable_node_provisioning=False)
    site, settings = site_for(data, lab_secrets, tmp_path)
    files = {f.path: f for f in cluster_apps.manifest_files(site, settings)}
    pod = find(files, "Deployment", "cloudflared")["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    admitted = {
        name
        for name, wanted in cluster.wanted_labels(site).items()
        if _matches(term, {"kubernetes.io/hostname": name, **wanted["labels"]})
    }
    assert admitted == {"tethys", "styx"}


def test_without_a_gpu_node_the_cluster_connector_has_no_node_rule(data, lab_secrets, tmp_path):
    groups = {"tethys": {"k3s_servers"}, "styx": {"k3s_agents"}}
    site, settings = site_for(data, lab_secrets, tmp_path, names=("tethys", "styx"), groups=groups)
    files = {f.path: f for f in cluster_apps.manifest_files(site, settings)}
    affinity = find(files, "Deployment", "cloudflared")["spec"]["template"]["spec"]["affinity"]
    assert "nodeAffinity" not in affinity and "podAntiAffinity" in affinity


def test_namespaces_come_in_a_file_k3s_applies_before_every_app_file(data, lab_secrets, tmp_path):
    """k3s applies the folder's files in name order, one Addon each (named after the file's
    name up to its first dot); each app file's objects find their Namespace already made."""
    data["cluster_apps"]["node_tunnel_mode"] = "daemonset"
    files = files_of(data, lab_secrets, tmp_path)
    first = cluster_apps.path(cluster_apps.NAMESPACES)
    assert first.endswith("/oceanid-00-namespaces.yaml")
    assert sorted(files)[0] == first and len(files) > 1
    assert first.rsplit("/", 1)[1].split(".", 1)[0] == "oceanid-00-namespaces"
    made = [d["metadata"]["name"] for d in docs(files[first])]
    assert made == ["apps", "cloudflared", "cloudflared-node"]
    assert {d["kind"] for d in docs(files[first])} == {"Namespace"}
    for path, managed_file in files.items():
        if path == first:
            continue
        for document in docs(managed_file):
            assert document["kind"] != "Namespace", path
            assert document["metadata"]["namespace"] in made, path


def test_an_app_switched_off_leaves_the_namespaces_file_and_label_studios_namespace(
    data, lab_secrets, tmp_path
):
    data["cluster_apps"]["label_studio"]["enabled"] = False
    data["cluster_apps"]["ml_backend"]["enabled"] = False
    data["cluster_apps"]["cluster_connector"] = False
    files = files_of(data, lab_secrets, tmp_path)
    first = cluster_apps.path(cluster_apps.NAMESPACES)
    assert list(files) == [first]  # the only file left: `apps` keeps Label Studio's data
    (kept,) = docs(files[first])
    assert kept["metadata"]["name"] == "apps"
    assert kept["metadata"]["labels"]["app.kubernetes.io/instance"] == "oceanid-label-studio"
    site, settings = site_for(data, lab_secrets, tmp_path)
    assert "oceanid-00-namespaces" not in cluster_apps.instances(site, settings)  # never off
