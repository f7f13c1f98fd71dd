"""Label Studio in namespace `apps`, on PostgreSQL, served at `label.<base>` (oceanid/names.py).

In the stack we replace it ran on SQLite until the database variables were right (its
CLI's settings default `DJANGO_DB` to sqlite), was OOM-killed at 512 MiB and at 1 GiB,
and followed the moving `develop` tag. So: `DJANGO_DB=default` (PostgreSQL in
label_studio/core/settings/base.py) with every `POSTGRE_*` variable it reads there taken
from `labelStudioDbUrl`, a URL that does not parse stops preflight, the image is pinned,
and memory comes from data with defaults well above 1 GiB.

Secret values (the database URL's parts, the admin password and token) reach the
container through `secretKeyRef` only.
"""

from __future__ import annotations

from typing import Any

from deploys.cluster_apps import objects
from oceanid import names
from oceanid.secrets import Secrets, database_url
from oceanid.settings import Settings

APP = "label-studio"
NAMESPACE = "apps"
NAME = "label-studio"
SECRET = "label-studio"
PORT = 8080
DATA_DIR = "/label-studio/data"  # LABEL_STUDIO_BASE_DATA_DIR in the image
#: The image's user: HumanSignal/label-studio's Dockerfile ends in `USER 1001` and gives
#: that uid its files (`COPY --chown=1001:0`, /label-studio its HOME), so it runs as that
#: uid; its own group is root's (0), which it does not need: it gets 1001, and so does the
#: data volume (fsGroup), where its files are created.
UID = 1001
SERVICE_URL = f"http://{NAME}.{NAMESPACE}.svc.cluster.local:{PORT}"
#: The ESC keys the app is built from.
SECRET_KEYS = (
    "labelStudioDbUrl",
    "labelStudioAdminEmail",
    "labelStudioAdminPassword",
    "labelStudioApiToken",
)


def database_env(url: str, *, key: str = "labelStudioDbUrl") -> dict[str, str]:
    """The `POSTGRE_*` variables Label Studio reads, from a PostgreSQL URL checked as
    `make check` checks it (oceanid.secrets.database_url: a ValueError naming `key`, never
    the URL)."""
    db = database_url(url, key=key)
    return {
        "POSTGRE_HOST": db.host,
        "POSTGRE_PORT": str(db.port),
        "POSTGRE_NAME": db.name,
        "POSTGRE_USER": db.user,
        "POSTGRE_PASSWORD": db.password,
    }


def secret_values(secrets: Secrets) -> dict[str, str]:
    """The Secret's keys are the variable names the container reads them as."""
    return {
        **database_env(secrets["labelStudioDbUrl"]),
        "LABEL_STUDIO_USERNAME": secrets["labelStudioAdminEmail"],
        "LABEL_STUDIO_PASSWORD": secrets["labelStudioAdminPassword"],
        # `label-studio start` gives the admin it creates this token (server.py _create_user)
        "LABEL_STUDIO_USER_TOKEN": secrets["labelStudioApiToken"],
    }


def container_env(settings: Settings) -> list[dict[str, Any]]:
    origin = f"https://{names.label_name(settings)}"
    plain = {
        "DJANGO_DB": "default",  # PostgreSQL; the CLI's own default is sqlite
        "LABEL_STUDIO_HOST": origin,
        "CSRF_TRUSTED_ORIGINS": origin,
        "LABEL_STUDIO_BASE_DATA_DIR": DATA_DIR,
        # The admin's token (LABEL_STUDIO_USER_TOKEN) is a legacy token: `Authorization: Token`
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        # Accounts are made by the admin; nobody signs up through the public URL.
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        # Nothing leaves the cluster: no error reports, analytics or PyPI version check.
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false",
    }
    env = [{"name": name, "value": value} for name, value in plain.items()]
    for name in (
        "POSTGRE_HOST",
        "POSTGRE_PORT",
        "POSTGRE_NAME",
        "POSTGRE_USER",
        "POSTGRE_PASSWORD",
        "LABEL_STUDIO_USERNAME",
        "LABEL_STUDIO_PASSWORD",
        "LABEL_STUDIO_USER_TOKEN",
    ):
        env.append(objects.secret_env(name, SECRET))
    return env


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def deployment(settings: Settings) -> dict[str, Any]:
    app = settings.cluster_apps.label_studio
    container = {
        "name": NAME,
        "image": app.image,
        "imagePullPolicy": "IfNotPresent",
        # The image's entrypoint runs this; start applies migrations, creates the admin
        # from LABEL_STUDIO_USERNAME/PASSWORD/USER_TOKEN, then serves on 8080.
        "args": ["label-studio", "start", "--no-browser", "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": container_env(settings),
        "resources": {
            "requests": {"cpu": "250m", "memory": app.memory_request},
            "limits": {"memory": app.memory_limit},
        },
        # /health answers 500 while PostgreSQL is unreachable (contract test), so
        # readiness follows the database; migrations on a first start take minutes.
        "startupProbe": _probe(period=10, failures=60),
        "readinessProbe": _probe(period=10, failures=3),
        "livenessProbe": _probe(period=20, failures=6),
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": objects.metadata(APP, NAME, NAMESPACE),
        "spec": {
            "replicas": 1,
            # One pod at a time on a ReadWriteOnce volume, and never two running migrations.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": objects.selector(NAME)},
            "template": {
                "metadata": {"labels": objects.labels(APP, NAME)},
                # The root file system stays writable: the image gives uid 1001 folders
                # to write outside the data volume (its HOME /label-studio, its OPT_DIR),
                # and nothing here has run it read-only.
                "spec": objects.hardened(
                    {
                        "containers": [container],
                        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": NAME}}],
                    },
                    user=UID,
                    group=UID,
                    fs_group=UID,
                ),
            },
        },
    }


def build(settings: Settings, secrets: Secrets) -> objects.AppObjects:
    """(objects, secret objects) of the app; its Namespace goes to the namespaces file
    (`cluster_apps.namespaces`)."""
    app = settings.cluster_apps.label_studio
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": objects.metadata(APP, NAME, NAMESPACE),
        "spec": {
            "selector": objects.selector(NAME),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": objects.metadata(APP, NAME, NAMESPACE),
        "spec": {
            "storageClassName": "local-path",  # k3s's own provisioner
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": app.storage}},
        },
    }
    return objects.AppObjects(
        objects=[objects.namespace(APP, NAMESPACE), claim, deployment(settings), service],
        secrets=[objects.secret(APP, SECRET, NAMESPACE, secret_values(secrets))],
    )
