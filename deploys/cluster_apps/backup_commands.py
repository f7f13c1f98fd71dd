"""`make backup`, `make backups`, `make restore BACKUP=name`: Label Studio's backups on demand.

What runs where:

- `backups` (list) runs backup_job.py `list` here, on the operator's machine, with boto3
  and the object store's keys from the site's secrets (ESC, the environment or the
  secrets file, as `make check` reads them): no host is touched.
- `backup` runs one now on the first k3s server, over SSH as pyinfra reaches it
  (oceanid.sshtarget): `k3s kubectl create job --from=cronjob/label-studio-backup`, the
  CronJob's own pod, waited for; its log (names, sizes, SHA-256s) is printed. A failed
  backup exits 1.
- `restore` first verifies the backup here (backup_job.py `verify`: every object
  downloaded and checked against its SHA-256) and refuses a damaged one before anything
  changes; then asks for confirmation (unless YES=1), and on the server scales Label
  Studio to zero, suspends the backup CronJob, runs the restore Job
  (backup.restore_job: backup_job.py `restore`, then `pg_restore`), and scales it back
  to one. A failed restore leaves Label Studio at zero, to be looked at, and says so.

The scripts sent to the server go on SSH's standard input, never on a command line.

    python -m deploys.cluster_apps.backup_commands [--inventory INV] backup|list
    python -m deploys.cluster_apps.backup_commands [--inventory INV] restore NAME [--yes]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys

import yaml

from deploys.cluster_apps import backup, label_studio, objects
from oceanid import model, preflight
from oceanid.settings import Settings
from oceanid.sshtarget import TargetError, target
from operations import progress


class CommandError(Exception):
    """What failed, in words."""


def _site(inventory: str) -> tuple[model.Site, Settings]:
    try:
        site = preflight.check(preflight.views_from_inventory(preflight.load_inventory(inventory)))
    except preflight.PreflightError as exc:
        raise CommandError(f"`make check` fails for {inventory}:\n{exc}") from None
    settings = next(iter(site.hosts.values())).settings
    if not model.backups_on(settings, site.secrets):
        raise CommandError(
            "backups are off: set the object store's ESC keys "
            f"({', '.join(model.BACKUP_KEYS)}) or cluster_apps.backup.enabled"
        )
    return site, settings


def script_env(site: model.Site) -> dict[str, str]:
    """backup_job.py's environment here: the object store's keys, as the Secret gives them
    to the pod."""
    values = backup.secret_values(site.secrets)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "BACKUP_PREFIX": backup.PREFIX,
        **{k: values[k] for k in backup.S3_ENV},
    }


def run_script(site: model.Site, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(backup.SCRIPT), *args],
        env=script_env(site), text=True, capture_output=True, check=False,
    )  # fmt: skip


def on_server(inventory: str, script: str) -> int:
    """Run `script` as root on the inventory's first k3s server; its output passes through."""
    ssh = [*shlex.split(os.environ.get("SSH", "ssh")), *target(inventory)]
    return subprocess.run([*ssh, "sudo", "-n", "sh", "-s"], input=script, text=True).returncode


def stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")


def backup_now(inventory: str) -> int:
    _site(inventory)
    job = f"{backup.NAME}-manual-{stamp()}"
    create = ["create", "job", job, f"--from=cronjob/{backup.NAME}"]
    print(f"backup: running Job {backup.NAMESPACE}/{job} on the first k3s server")
    return on_server(inventory, backup.run_job_script(job, create=create))


def list_backups(inventory: str) -> int:
    site, _ = _site(inventory)
    done = run_script(site, "list")
    sys.stdout.write(done.stdout or "no finished backup in the store\n")
    sys.stderr.write(done.stderr)
    return done.returncode


def restore_script(settings: Settings, name: str) -> str:
    job = f"{backup.NAME[: -len('-backup')]}-restore-{stamp()}"
    manifest = yaml.safe_dump(backup.restore_job(settings, name, job), sort_keys=False)
    kubectl = f"k3s kubectl -n {backup.NAMESPACE}"
    deployment = f"deployment/{label_studio.NAME}"
    selector = ",".join(f"{k}={v}" for k, v in objects.selector(label_studio.NAME).items())
    return "\n".join(
        [
            "set -u",
            f'{kubectl} patch cronjob {backup.NAME} -p \'{{"spec":{{"suspend":true}}}}\' '
            ">/dev/null 2>&1 || true",
            f"{kubectl} scale {deployment} --replicas=0 || exit 1",
            # says what it waits for every progress.EVERY seconds
            progress.watch_script(
                "Label Studio's pods to stop",
                300,
                f"{kubectl} wait --for=delete pod -l {selector} --timeout=300s",
            )
            + " || exit 1",
            "(",
            backup.run_job_script(job, manifest=manifest),
            ")",
            "ok=$?",
            f'{kubectl} patch cronjob {backup.NAME} -p \'{{"spec":{{"suspend":false}}}}\' '
            ">/dev/null 2>&1 || true",
            'if [ "$ok" -eq 0 ]; then',
            f"  {kubectl} scale {deployment} --replicas=1 || exit 1",
            f"  echo 'restore {name}: done; Label Studio scaled back to 1'",
            "else",
            f"  echo 'restore {name}: FAILED; Label Studio left at 0 replicas "
            f"(k3s kubectl -n {backup.NAMESPACE} scale {deployment} --replicas=1 brings it "
            "back on the data as the failed restore left it)' >&2",
            "fi",
            'exit "$ok"',
        ]
    )


def restore(inventory: str, name: str, *, yes: bool) -> int:
    site, settings = _site(inventory)
    verified = run_script(site, "verify", name)
    sys.stdout.write(verified.stdout)
    if verified.returncode != 0:
        sys.stderr.write(verified.stderr)
        print(f"restore {name}: refused, nothing was changed", file=sys.stderr)
        return 1
    if not yes:
        answer = input(
            f"Replace Label Studio's database and files with backup {name}? Everything made "
            "since is lost. Type yes: "
        )
        if answer.strip().lower() != "yes":
            print("restore: not confirmed; nothing was changed")
            return 1
    return on_server(inventory, restore_script(settings, name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backup_commands", description=__doc__.split("\n")[0])
    parser.add_argument("--inventory", default="inventory.py")
    parser.add_argument("command", choices=("backup", "list", "restore"))
    parser.add_argument("name", nargs="?", help="the backup to restore (`make backups`)")
    parser.add_argument("--yes", action="store_true", help="restore without asking")
    args = parser.parse_args(argv)
    try:
        if args.command == "backup":
            return backup_now(args.inventory)
        if args.command == "list":
            return list_backups(args.inventory)
        if not args.name:
            raise CommandError("restore: name the backup, BACKUP=<name> (`make backups`)")
        return restore(args.inventory, args.name, yes=args.yes)
    except (CommandError, TargetError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
