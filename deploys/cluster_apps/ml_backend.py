"""The ML-backend connector: an hourly job that gives every Label Studio project the GPU.

Annotators create projects at any time; each must reach the GPU service as its ML
backend. The job runs ensure_ml_backend.py (this folder, shipped in a ConfigMap) in the
Label Studio image, whose label-studio-sdk matches the server, with the admin's token
from a Secret. `concurrencyPolicy: Forbid` keeps two runs from adding the backend twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploys.cluster_apps import label_studio, objects
from oceanid.secrets import Secrets
from oceanid.settings import GpuHost, Settings

APP = "ml-backend-connector"
NAMESPACE = label_studio.NAMESPACE
NAME = "ml-backend-connector"
SECRET = "ml-backend-connector"
SCRIPT = Path(__file__).with_name("ensure_ml_backend.py")
SCRIPT_DIR = "/opt/oceanid"


def backend_url(settings: Settings, gpus: list[GpuHost]) -> str:
    """The configured URL, else the first GPU host's public URL; with no GPU host in this
    inventory, the default GPU public name's (https://gpu.<base>)."""
    if settings.cluster_apps.ml_backend.url:
        return settings.cluster_apps.ml_backend.url
    gpu = gpus[0] if gpus else GpuHost()
    return f"https://{gpu.public_name}.{settings.base_domain}"


def build(settings: Settings, secrets: Secrets, url: str) -> tuple[list[dict], list[dict]]:
    """(objects, secret objects); the namespace is Label Studio's."""
    connector = settings.cluster_apps.ml_backend
    env = [
        {"name": "LABEL_STUDIO_URL", "value": label_studio.SERVICE_URL},
        {"name": "ML_BACKEND_URL", "value": url},
        {"name": "ML_BACKEND_TITLE", "value": connector.title},
        objects.secret_env("LABEL_STUDIO_API_KEY", SECRET),
    ]
    pod: dict[str, Any] = {
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
                "securityContext": {"allowPrivilegeEscalation": False},
                "volumeMounts": [{"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True}],
            }
        ],
        "volumes": [{"name": "script", "configMap": {"name": NAME}}],
    }
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
    return (
        [script, job],
        [
            objects.secret(
                APP, SECRET, NAMESPACE, {"LABEL_STUDIO_API_KEY": secrets["labelStudioApiToken"]}
            )
        ],
    )
