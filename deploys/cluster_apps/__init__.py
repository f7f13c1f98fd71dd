"""The cluster apps, as files for k3s's auto-deploy folder on the first server.

k3s applies every YAML file in /var/lib/rancher/k3s/server/manifests/; each app here is
one `oceanid-<app>.yaml`, and its Secrets sit beside it in `oceanid-<app>-secret.yaml`,
mode 0600, whose content `--dry --diff` never shows: the host sends back salted hashes of
the old file's lines, and `objects.secret_key_lines` maps the changed lines to the keys it
names. Objects are built as data by one module per app from validated
settings and secrets (oceanid.model.Site), and dumped with PyYAML.

Every pod runs under `objects.hardened` (non-root, seccomp, no capabilities, no API
token), and every Deployment and DaemonSet carries a keyed digest of the Secrets it reads
(`objects.with_secrets_digest`): a rotated value changes the pod template, so k3s's apply
rolls the pods that read the old one at start.

k3s does not delete the objects of a file that disappears: an app switched off has its
file removed by the role's sweep, and its objects are found by their
`app.kubernetes.io/instance=oceanid-<app>` label (`instances`).
"""

from __future__ import annotations

from deploys.cluster_apps import (
    backup,
    cluster_connector,
    label_studio,
    ml_backend,
    node_tunnel,
    objects,
)
from oceanid.cluster_layout import MANIFEST_DIR
from oceanid.model import K3S_AGENTS, K3S_SERVERS, Site, backups_on
from oceanid.settings import Settings
from operations.managed import ManagedFile

#: Every app this package can render, in the order its files are written.
APPS = (label_studio.APP, cluster_connector.APP, ml_backend.APP, node_tunnel.APP, backup.APP)
#: The apps' Namespaces, in a file of their own that k3s applies before the apps' files.
NAMESPACES = "00-namespaces"


def namespaces(rendered: dict[str, objects.AppObjects]) -> list[dict]:
    """Every Namespace the apps that are on render, taken out of their files, plus Label
    Studio's `apps` always.

    k3s applies the folder's files in name order (pkg/deploy/controller.go `listFilesIn`
    sorts them), one Addon each, and a file whose objects' namespace does not exist yet
    fails until a later pass: `oceanid-label-studio-secret.yaml` sorts before
    `oceanid-label-studio.yaml`, which created `apps`. `oceanid-00-namespaces.yaml` sorts
    before every file of ours. `apps` stays in it while Label Studio is off: k3s's apply
    deletes what leaves the file it came from (wrangler's apply with the Addon as owner), and
    `apps` holds Label Studio's data (docs/settings.md, "Cluster apps"). The other namespaces
    leave it with their app, which deletes them anyway (deploys/k3s/apps.py).
    """
    found = {label_studio.NAMESPACE: objects.namespace(label_studio.APP, label_studio.NAMESPACE)}
    for built in rendered.values():
        for obj in built.objects:
            if obj["kind"] == "Namespace":
                found.setdefault(obj["metadata"]["name"], obj)
    return [found[name] for name in sorted(found)]


def path(app: str, *, secret: bool = False) -> str:
    return f"{MANIFEST_DIR}/oceanid-{app}{'-secret' if secret else ''}.yaml"


def render(site: Site, settings: Settings) -> dict[str, objects.AppObjects]:
    """app -> its objects and Secrets, for every app switched on in data, after the
    `NAMESPACES` file that holds their Namespaces (`namespaces`)."""
    apps = settings.cluster_apps
    rendered: dict[str, objects.AppObjects] = {}
    if apps.label_studio.enabled:
        rendered[label_studio.APP] = label_studio.build(settings, site.secrets)
    gpu_plans = [site.hosts[name] for name in sorted(site.hosts) if site.hosts[name].gpu]
    if apps.cluster_connector:
        gpu_nodes = [p.name for p in gpu_plans if {K3S_SERVERS, K3S_AGENTS} & p.roles]
        rendered[cluster_connector.APP] = cluster_connector.build(
            settings, site.cluster_tunnel_id, site.cluster_credential, gpu_nodes
        )
    if apps.ml_backend.enabled:
        url = ml_backend.backend_url(settings, [plan.gpu for plan in gpu_plans])
        rendered[ml_backend.APP] = ml_backend.build(settings, site.secrets, url)
    if apps.node_tunnel_mode == "daemonset" and gpu_plans:
        rendered[node_tunnel.APP] = node_tunnel.build(gpu_plans)
    if backups_on(settings, site.secrets):
        rendered[backup.APP] = backup.build(settings, site.secrets)
    if site.cluster_credential is None:
        raise ValueError(
            "cluster apps are rendered for a site with a k3s server only: its cluster tunnel "
            "credential keys their Secrets digest"
        )
    key = objects.secrets_key(site.cluster_credential.tunnel_secret)
    files = {NAMESPACES: objects.AppObjects(namespaces(rendered), [])}
    for app, built in rendered.items():
        found = [obj for obj in built.objects if obj["kind"] != "Namespace"]
        found = objects.with_secrets_digest(found, built.secrets, key)
        files[app] = objects.AppObjects(found, built.secrets)
    return files


def manifest_files(site: Site, settings: Settings) -> list[ManagedFile]:
    """The files to write into k3s's auto-deploy folder: one per app, Secrets 0600 apart."""
    files = []
    for app, built in render(site, settings).items():
        files.append(ManagedFile(path(app), objects.dump(built.objects), mode="0644"))
        if built.secrets:
            content = objects.dump(built.secrets)
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
