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

from pyinfra import host, logger
from pyinfra.api import QuoteString, StringCommand, operation

from deploys import cluster_apps
from deploys.cluster_apps import MANIFEST_DIR, backup, label_studio
from deploys.k3s import cluster
from oceanid.model import HostPlan, Site, backups_on
from oceanid.settings import Settings
from operations import k3s as k3s_ops
from operations import managed
from operations.failure import first_time, refuse
from operations.managed import DesiredState

# What the apps render; Jobs go with their CronJob (owner references).
KINDS = "deployments,daemonsets,cronjobs,services,configmaps,secrets,poddisruptionbudgets"
# What holds an app's data: never deleted by a switch in data.
KEPT = {f"oceanid-{label_studio.APP}": "its PersistentVolumeClaim and Namespace kept"}


def add_to(manifest: DesiredState, site: Site, settings: Settings) -> list[str]:
    """Declare the apps' files; return their paths."""
    files = cluster_apps.manifest_files(site, settings)
    manifest.files += files
    k3s_ops.probe_addons(manifest)  # what k3s last applied of each: read with the files
    manifest.probes[LABEL_STUDIO_IMAGE] = RUNNING_IMAGE  # for `backed_up_first`
    return [f.path for f in files]


#: The probe that reads the image Label Studio's Deployment runs now (none: not deployed, or
#: the API did not answer).
LABEL_STUDIO_IMAGE = "label-studio-image"
RUNNING_IMAGE = (
    f"k3s kubectl -n {label_studio.NAMESPACE} get deployment {label_studio.NAME} "
    "--request-timeout=10s -o jsonpath='{.spec.template.spec.containers[0].image}' "
    "2>/dev/null || true"
)


@operation()
def backed_up_first(manifest: DesiredState, site: Site, settings: Settings):
    """
    Back Label Studio up before its image changes: the new version migrates the database
    when it starts, with no way back but a backup.

    + manifest: the first server's DesiredState (its state holds the image that runs now)
    + site: the validated site (whether backups are on)
    + settings: the settings (the image this run writes, `cluster_apps.backup`)

    Runs before the apps' files are written: the backup CronJob's own pod, as a Job, waited
    for (backup.run_job_script); a failed backup fails the run here, before the new image is
    written. `cluster_apps.backup.skip_before_upgrade` naming the new image skips it; with
    backups off, an upgrade is refused unless it is named there.
    """
    if manifest.unreadable():
        yield from refuse(manifest.unreadable_message())
        return
    wanted = settings.cluster_apps.label_studio.image
    running = next(iter(manifest.probe(LABEL_STUDIO_IMAGE)), "").strip()
    if not settings.cluster_apps.label_studio.enabled or not running:
        host.noop("Label Studio is not running: no backup is due before its image is set")
        return
    if running == wanted:
        host.noop(f"Label Studio runs {wanted}: no upgrade, no backup due")
        return
    if settings.cluster_apps.backup.skip_before_upgrade == wanted:
        host.noop(
            f"Label Studio {running} -> {wanted}: no backup first, as "
            "cluster_apps.backup.skip_before_upgrade names it"
        )
        return
    if not backups_on(settings, site.secrets):
        yield from refuse(
            f"Label Studio's image changes from {running} to {wanted}, which migrates its "
            "database, and backups are off: configure the object store (backupS3* keys), or "
            f'set cluster_apps.backup.skip_before_upgrade: "{wanted}" to upgrade without one'
        )
        return
    job = f"{backup.NAME}-before-upgrade-{hashlib.sha256(wanted.encode()).hexdigest()[:8]}"
    host.log(f"Label Studio {running} -> {wanted}: backing up first (Job {job})")
    create = ["create", "job", job, f"--from=cronjob/{backup.NAME}"]
    # a Job of that name left by an earlier try is replaced: each try backs up anew
    yield StringCommand(
        "k3s", "kubectl", "-n", backup.NAMESPACE, "delete", "job", job, "--ignore-not-found"
    )
    yield StringCommand("sh", "-c", QuoteString(backup.run_job_script(job, create=create)))


def addons(instance: str) -> list[str]:
    """The Addons k3s keeps for an app's files (its manifest and its Secrets' file)."""
    app = instance.removeprefix("oceanid-")
    return [k3s_ops.addon_name(cluster_apps.path(app, secret=s)) for s in (False, True)]


def switched_off(manifest: DesiredState, site: Site, settings: Settings) -> list[str]:
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
def deleted(manifest: DesiredState, instances: list[str]):
    """
    Delete the objects of cluster apps switched off, which k3s leaves running.

    + manifest: the first server's DesiredState (its state says which files the sweep removes)
    + instances: `app.kubernetes.io/instance` labels whose objects go

    Namespaces go too, except where an app's data lives (`KEPT`). So do the Addons k3s keeps
    for the app's files (`addons`), so that the files written again when it is switched on
    are applied again.
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
        yield StringCommand(
            "k3s",
            "kubectl",
            "delete",
            k3s_ops.ADDONS,
            "-n",
            k3s_ops.ADDON_NAMESPACE,
            "--ignore-not-found",
            *addons(instance),
        )


def deploy(manifest: DesiredState, site: Site, settings: Settings) -> None:
    """Run after the role's files and sweep, once k3s answers."""
    k3s_ops.manifests_applied(
        name="k3s applied the auto-deploy manifests",
        manifest=manifest,
        paths=[f.path for f in manifest.files if f.path.startswith(f"{MANIFEST_DIR}/")],
    )
    deleted(
        name="cluster apps switched off: objects deleted",
        manifest=manifest,
        instances=switched_off(manifest, site, settings),
    )


#: The unit whose state says k3s runs on a server (facts.k3s.K3sInstall reads it).
SERVER_UNIT = "k3s.service"


def declare_minimal(report: DesiredState, plan: HostPlan, site: Site) -> bool:
    """Provisioning off: add the apps to the node's report DesiredState on the first server;
    whether it was this host."""
    servers = cluster.servers(site)
    if not servers or plan.name != servers[0].name:
        return False
    add_to(report, site, plan.settings)
    return True


def k3s_running(report: DesiredState) -> bool:
    """Whether the state read found the k3s server active on this host."""
    return k3s_ops.install_state(report)["units"].get(SERVER_UNIT) == "active"


@operation()
def skipped(reason: str):
    """
    Say in one line why the cluster apps were not deployed, changing nothing.

    + reason: the line, shown whatever -v says (as the node's k3s report is)
    """
    if first_time("cluster apps skipped", host.name):
        logger.info(f"{host.print_prefix}{reason}")
    host.noop(reason)
    yield from ()


def deploy_minimal(manifest: DesiredState, site: Site, settings: Settings) -> None:
    """Provisioning off: the apps' files, their sweep and k3s's confirmation, where k3s runs
    (`manifest`: the node's report, which `declare_minimal` gave the apps)."""
    if not manifest.unreadable() and not k3s_running(manifest):
        skipped(
            name="cluster apps (provisioning off)",
            reason=f"k3s is not running on {host.name} ({SERVER_UNIT} is not active): the "
            "cluster apps were not deployed; start k3s, or turn enable_node_provisioning on",
        )
        return
    backed_up_first(
        name="Label Studio backed up before its image changes",
        manifest=manifest,
        site=site,
        settings=settings,
    )
    managed.files(name="k3s auto-deploy manifests (provisioning off)", manifest=manifest)
    managed.sweep(name="cluster apps no longer wanted (provisioning off)", manifest=manifest)
    deploy(manifest, site, settings)
