"""The cluster apps, as files for k3s's auto-deploy folder on the first server.

k3s applies every YAML file in /var/lib/rancher/k3s/server/manifests/; each app here is
one `oceanid-<app>.yaml`, and its Secrets sit beside it in `oceanid-<app>-secret.yaml`,
mode 0600, whose content `--dry --diff` never shows: the host sends back salted hashes of
the old file's lines, and `objects.secret_key_lines` maps the changed lines to the keys it
names. Objects are built as data by one module per app from validated
settings and secrets (preflight.Site), and dumped with PyYAML.

k3s does not delete the objects of a file that disappears: an app switched off has its
file removed by the role's sweep, and its objects are found by their
`app.kubernetes.io/instance=oceanid-<app>` label (`instances`).
"""

from __future__ import annotations

from deploys.cluster_apps import cluster_connector, label_studio, ml_backend, node_tunnel, objects
from oceanid.preflight import Site
from oceanid.settings import Settings
from operations.managed import ManagedFile

MANIFEST_DIR = "/var/lib/rancher/k3s/server/manifests"
#: Every app this package can render, in the order its files are written.
APPS = (label_studio.APP, cluster_connector.APP, ml_backend.APP, node_tunnel.APP)


def path(app: str, *, secret: bool = False) -> str:
    return f"{MANIFEST_DIR}/oceanid-{app}{'-secret' if secret else ''}.yaml"


def render(site: Site, settings: Settings) -> dict[str, tuple[list[dict], list[dict]]]:
    """app -> (objects, secret objects) for every app switched on in data."""
    apps = settings.cluster_apps
    rendered: dict[str, tuple[list[dict], list[dict]]] = {}
    if apps.label_studio.enabled:
        rendered[label_studio.APP] = label_studio.build(settings, site.secrets)
    if apps.cluster_connector:
        rendered[cluster_connector.APP] = cluster_connector.build(
            settings, site.cluster_tunnel_id, site.cluster_credential
        )
    gpu_plans = [site.hosts[name] for name in sorted(site.hosts) if site.hosts[name].gpu]
    if apps.ml_backend.enabled:
        url = ml_backend.backend_url(settings, [plan.gpu for plan in gpu_plans])
        rendered[ml_backend.APP] = ml_backend.build(settings, site.secrets, url)
    if apps.node_tunnel_mode == "daemonset" and gpu_plans:
        rendered[node_tunnel.APP] = node_tunnel.build(gpu_plans)
    return rendered


def manifest_files(site: Site, settings: Settings) -> list[ManagedFile]:
    """The files to write into k3s's auto-deploy folder: one per app, Secrets 0600 apart."""
    files = []
    for app, (found, secrets) in render(site, settings).items():
        files.append(ManagedFile(path(app), objects.dump(found), mode="0644"))
        if secrets:
            content = objects.dump(secrets)
            files.append(
                ManagedFile(
                    path(app, secret=True),
                    content,
                    mode="0600",
                    secret=True,
                    line_keys=objects.secret_key_lines(content),
                )
            )
    return files


def instances(site: Site, settings: Settings) -> dict[str, bool]:
    """`oceanid-<app>` instance label -> whether the app is on: what is off is to delete."""
    on = render(site, settings)
    return {f"oceanid-{app}": app in on for app in APPS}
