"""The ML-backend connector: an hourly job that gives every Label Studio project the GPU model.

Annotators create projects at any time; each must reach the ML-backend adapter (deploys/
gpu_host/ml_backend, published at `ml.<base>`) as its ML backend, with the adapter's basic
auth. The job runs ensure_ml_backend.py (this folder, shipped in a ConfigMap) in the Label
Studio image, whose label-studio-sdk matches the server, with the admin's token and the
adapter's credentials from a Secret. `concurrencyPolicy: Forbid` keeps two runs from adding
the backend twice.
"""

from __future__ import annotations

from pathlib import Path

from deploys.cluster_apps import label_studio, objects
from oceanid import names
from oceanid.secrets import Secrets
from oceanid.settings import GpuHost, Settings

APP = "ml-backend-connector"
NAMESPACE = label_studio.NAMESPACE
NAME = "ml-backend-connector"
SECRET = "ml-backend-connector"
SCRIPT = Path(__file__).with_name("ensure_ml_backend.py")
SCRIPT_DIR = "/opt/oceanid"


def backend_url(settings: Settings, gpus: list[GpuHost]) -> str:
    """The configured URL, else the adapter's public URL on the first GPU host that runs
    one (kind `triton`): https://<ml name>, the ml name beside its GPU name (oceanid/names.py:
    `gpu` -> `ml`); with none in this inventory, the default GPU name's (https://ml.<base>)."""
    if settings.cluster_apps.ml_backend.url:
        return settings.cluster_apps.ml_backend.url
    triton = [gpu for gpu in gpus if gpu.service.runs_ml_backend] or [GpuHost()]
    (ml,) = [name for name in names.host_names(settings, "", triton[0]) if name.kind == "ml"]
    return f"https://{ml.fqdn}"


def build(settings: Settings, secrets: Secrets, url: str) -> objects.AppObjects:
    """(objects, secret objects); the namespace is Label Studio's."""
    connector = settings.cluster_apps.ml_backend
    env = [
        {"name": "LABEL_STUDIO_URL", "value": label_studio.SERVICE_URL},
        {"name": "ML_BACKEND_URL", "value": url},
        {"name": "ML_BACKEND_TITLE", "value": connector.title},
        objects.secret_env("LABEL_STUDIO_API_KEY", SECRET),
        objects.secret_env("ML_BACKEND_USER", SECRET),
        objects.secret_env("ML_BACKEND_PASSWORD", SECRET),
    ]
    # The Label Studio image, run as its own user; the job only reads its script and talks
    # HTTP, so it has no volume to write and no group to own one.
    pod = objects.hardened(
        {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": NAME,
                    "image": settings.cluster_apps.label_studio.image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", f"{SCRIPT_DIR}/{SCRIPT.name}"],
                    "env": env,
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "128Mi"},
                        "limits": {"memory": "512Mi"},
                    },
                    "volumeMounts": [{"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True}],
                }
            ],
            "volumes": [{"name": "script", "configMap": {"name": NAME}}],
        },
        user=label_studio.UID,
        group=label_studio.UID,
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": objects.metadata(APP, NAME, NAMESPACE),
        "spec": {
            "schedule": connector.schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": objects.labels(APP, NAME)},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 900,
                    "ttlSecondsAfterFinished": 86400,
                    "template": {"metadata": {"labels": objects.labels(APP, NAME)}, "spec": pod},
                },
            },
        },
    }
    script = objects.config_map(APP, NAME, NAMESPACE, {SCRIPT.name: SCRIPT.read_text()})
    return objects.AppObjects(
        objects=[script, job],
        secrets=[
            objects.secret(
                APP,
                SECRET,
                NAMESPACE,
                {
                    "LABEL_STUDIO_API_KEY": secrets["labelStudioApiToken"],
                    "ML_BACKEND_USER": secrets["mlBackendUser"],
                    "ML_BACKEND_PASSWORD": secrets["mlBackendPassword"],
                },
            )
        ],
    )
