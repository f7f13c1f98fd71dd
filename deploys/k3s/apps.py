"""The cluster apps (deploys/cluster_apps) on the first server: their files in k3s's
auto-deploy folder, and the objects of an app switched off deleted.

The files are part of the server role's Manifest, so they are read in its one fact,
replaced atomically and swept with the role's other files. k3s applies what it finds in
the folder but never deletes the objects of a file that disappears: an app whose file
this run's sweep removes has its objects deleted here, by their
`app.kubernetes.io/instance` label, in the same run.

Label Studio's PersistentVolumeClaim, and the `apps` Namespace that holds it, are kept
when Label Studio is switched off: its data (uploads, exports) stays until an operator
deletes it with `k3s kubectl delete pvc,namespace -l app.kubernetes.io/instance=
oceanid-label-studio`; switching it on again finds its data.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import StringCommand, operation

from deploys import cluster_apps
from deploys.cluster_apps import label_studio
from oceanid.preflight import Site
from oceanid.settings import Settings
from operations.failure import refuse
from operations.managed import Manifest

# What the apps render; Jobs go with their CronJob (owner references).
KINDS = "deployments,daemonsets,cronjobs,services,configmaps,secrets,poddisruptionbudgets"
# What holds an app's data: never deleted by a switch in data.
KEPT = {f"oceanid-{label_studio.APP}": "its PersistentVolumeClaim and Namespace kept"}


def add_to(manifest: Manifest, site: Site, settings: Settings) -> list[str]:
    """Declare the apps' files; return their paths."""
    files = cluster_apps.manifest_files(site, settings)
    manifest.files += files
    return [f.path for f in files]


def switched_off(manifest: Manifest, site: Site, settings: Settings) -> list[str]:
    """The instance labels of apps that are off and whose file this run's sweep removes."""
    unwanted = set(manifest.unwanted())
    return [
        instance
        for instance, on in cluster_apps.instances(site, settings).items()
        if not on
        and {cluster_apps.path(instance.removeprefix("oceanid-"), secret=s) for s in (False, True)}
        & unwanted
    ]


@operation()
def deleted(manifest: Manifest, instances: list[str]):
    """
    Delete the objects of cluster apps switched off, which k3s leaves running.

    + manifest: the first server's Manifest (its state says which files the sweep removes)
    + instances: `app.kubernetes.io/instance` labels whose objects go

    Namespaces go too, except where an app's data lives (`KEPT`).
    """
    if manifest.unreadable():
        yield from refuse(manifest.unreadable_message())
        return
    if not instances:
        host.noop("no cluster app was switched off")
        return
    for instance in instances:
        kinds = KINDS if instance in KEPT else f"{KINDS},namespaces"
        kept = f" ({KEPT[instance]})" if instance in KEPT else ""
        host.log(f"cluster app {instance} switched off: its objects are deleted{kept}")
        yield StringCommand(
            "k3s",
            "kubectl",
            "delete",
            kinds,
            "-A",
            "--ignore-not-found",
            "-l",
            f"app.kubernetes.io/instance={instance}",
        )


def deploy(manifest: Manifest, site: Site, settings: Settings) -> None:
    """Run after the role's files and sweep, once k3s answers."""
    deleted(
        name="cluster apps switched off: objects deleted",
        manifest=manifest,
        instances=switched_off(manifest, site, settings),
    )
