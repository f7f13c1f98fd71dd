"""The cluster apps (deploys/cluster_apps) on the first server: their files in k3s's
auto-deploy folder, confirmed applied, and the objects of an app switched off deleted.

The files are part of the server role's DesiredState, so they are read in its one fact,
replaced atomically and swept with the role's other files. k3s applies what it finds in
the folder but never deletes the objects of a file that disappears: an app whose file
this run's sweep removes has its objects deleted here, by their
`app.kubernetes.io/instance` label, in the same run. k3s also keeps, per file, an Addon
(kube-system, named after the file's name up to its first dot) holding the SHA-256 of
what it last applied, and skips a file whose content has that checksum (k3s-io/k3s
pkg/deploy/controller.go): the app's Addons are deleted with its objects, or switching it
on again would write the same bytes and get nothing back.

k3s applies a file on its own, up to 15 s after it changed, and reports a rejected one
only as an event: after a run writes manifests, `operations.k3s.manifests_applied` waits
until each file's Addon holds its checksum, and fails the run with k3s's message if not.

Label Studio's PersistentVolumeClaim, and the `apps` Namespace that holds it, are kept
when Label Studio is switched off: its data (uploads, exports) stays until an operator
deletes it with `k3s kubectl delete pvc,namespace -l app.kubernetes.io/instance=
oceanid-label-studio`; switching it on again finds its data.

With `enable_node_provisioning` off (the guide's minimal deploy) k3s itself is neither
installed nor changed, but the apps still go to the first server where k3s runs, in the node's
report DesiredState (`declare_minimal`: read in its one fact; its record lists only the apps'
files, so its sweep can never touch k3s's). They are written and confirmed as above only when
that state read shows k3s active there (`K3sInstall`); otherwise one line says why they were
skipped.
"""

from __future__ import annotations

import hashlib

from pyinfra import host

from deploys import cluster_apps
from deploys.cluster_apps import backup, label_studio
from oceanid.cluster_layout import MANIFEST_DIR
from oceanid.model import HostPlan, Site, backups_on
from oceanid.settings import Settings
from operations import k3s as k3s_ops
from operations import managed
from operations.managed import DesiredState

# What the apps render; Jobs go with their CronJob (owner references).
KINDS = "deployments,daemonsets,cronjobs,services,configmaps,secrets,poddisruptionbudgets"
# What holds an app's data: never deleted by a switch in data.
KEPT = {f"oceanid-{label_studio.APP}": "its PersistentVolumeClaim and Namespace kept"}


def add_to(desired: DesiredState, site: Site, settings: Settings) -> list[str]:
    """Declare the apps' files; return their paths."""
    files = cluster_apps.manifest_files(site, settings)
    desired.files += files
    k3s_ops.probe_addons(desired)  # what k3s last applied of each: read with the files
    desired.probes[LABEL_STUDIO_IMAGE] = RUNNING_IMAGE  # for `k3s_ops.backed_up_first`
    return [f.path for f in files]


#: The probe that reads the image Label Studio's Deployment runs now (none: not deployed, or
#: the API did not answer).
LABEL_STUDIO_IMAGE = "label-studio-image"
RUNNING_IMAGE = (
    f"k3s kubectl -n {label_studio.NAMESPACE} get deployment {label_studio.NAME} "
    "--request-timeout=10s -o jsonpath='{.spec.template.spec.containers[0].image}' "
    "2>/dev/null || true"
)


def image_backup(site: Site, settings: Settings) -> k3s_ops.ImageBackup:
    """What `k3s_ops.backed_up_first` decides from: Label Studio's image in this run, and the
    backup CronJob's own pod as a Job, waited for (backup.run_job_script), where backups are on.
    The Job is named after the new image, so each upgrade's backup is a Job of its own."""
    app = settings.cluster_apps.label_studio
    job = f"{backup.NAME}-before-upgrade-{hashlib.sha256(app.image.encode()).hexdigest()[:8]}"
    create = ["create", "job", job, f"--from=cronjob/{backup.NAME}"]
    return k3s_ops.ImageBackup(
        probe=LABEL_STUDIO_IMAGE,
        image=app.image if app.enabled else None,
        skip=settings.cluster_apps.backup.skip_before_upgrade,
        namespace=backup.NAMESPACE,
        job=job,
        script=(
            backup.run_job_script(job, create=create, summary=True)  # shown as it comes
            if backups_on(settings, site.secrets)
            else None
        ),
    )


def addons(instance: str) -> list[str]:
    """The Addons k3s keeps for an app's files (its manifest and its Secrets' file)."""
    app = instance.removeprefix("oceanid-")
    return [k3s_ops.addon_name(cluster_apps.path(app, secret=s)) for s in (False, True)]


def switched_off(desired: DesiredState, site: Site, settings: Settings) -> list[str]:
    """The instance labels of apps that are off and whose file this run's sweep removes."""
    unwanted = set(desired.unwanted())
    return [
        instance
        for instance, on in cluster_apps.instances(site, settings).items()
        if not on
        and {cluster_apps.path(instance.removeprefix("oceanid-"), secret=s) for s in (False, True)}
        & unwanted
    ]


def removal(instance: str) -> k3s_ops.SwitchedOff:
    """What `k3s_ops.apps_deleted` deletes of an app switched off: its objects of `KINDS` and
    its Namespace, except where its data lives (`KEPT`), and its Addons (`addons`), so that
    the files written again when it is switched on are applied again."""
    return k3s_ops.SwitchedOff(
        instance=instance,
        kinds=KINDS if instance in KEPT else f"{KINDS},namespaces",
        addons=tuple(addons(instance)),
        kept=KEPT.get(instance),
    )


def deploy(desired: DesiredState, site: Site, settings: Settings) -> None:
    """Run after the role's files and sweep, once k3s answers."""
    k3s_ops.manifests_applied(
        name="k3s applied the auto-deploy manifests",
        desired=desired,
        paths=[f.path for f in desired.files if f.path.startswith(f"{MANIFEST_DIR}/")],
    )
    k3s_ops.apps_deleted(
        name="cluster apps switched off: objects deleted",
        desired=desired,
        apps=[removal(instance) for instance in switched_off(desired, site, settings)],
    )


#: The unit whose state says k3s runs on a server (facts.k3s.K3sInstall reads it).
SERVER_UNIT = "k3s.service"


def declare_minimal(report: DesiredState, plan: HostPlan, site: Site) -> bool:
    """Provisioning off: add the apps to the node's report DesiredState on the first server;
    whether it was this host."""
    if not site.is_first_server(plan):
        return False
    add_to(report, site, plan.settings)
    return True


def k3s_running(report: DesiredState) -> bool:
    """Whether the state read found the k3s server active on this host."""
    return k3s_ops.install_state(report)["units"].get(SERVER_UNIT) == "active"


def deploy_minimal(desired: DesiredState, site: Site, settings: Settings) -> None:
    """Provisioning off: the apps' files, their sweep and k3s's confirmation, where k3s runs
    (`desired`: the node's report, which `declare_minimal` gave the apps)."""
    if not desired.unreadable() and not k3s_running(desired):
        k3s_ops.apps_skipped(
            name="cluster apps (provisioning off)",
            reason=f"k3s is not running on {host.name} ({SERVER_UNIT} is not active): the "
            "cluster apps were not deployed; start k3s, or turn enable_node_provisioning on",
        )
        return
    k3s_ops.backed_up_first(
        name="Label Studio backed up before its image changes",
        desired=desired,
        backup=image_backup(site, settings),
    )
    managed.files(name="k3s auto-deploy manifests (provisioning off)", desired=desired)
    managed.sweep(name="cluster apps no longer wanted (provisioning off)", desired=desired)
    deploy(desired, site, settings)
