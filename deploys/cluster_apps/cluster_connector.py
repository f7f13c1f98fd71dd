"""The cluster tunnel's connector (namespace `cloudflared`): Label Studio's name into the cluster.

Two replicas of the host connector's pinned cloudflared, spread over nodes and kept off
the GPU hosts' nodes (`not_on`), with memory well above the 256 MiB at which the old stack's was
OOM-killed. The credential keeps the shape ESC holds (oceanid/tunnel_credentials.py): a
connector token is mounted as a token file for `--token-file`, a credentials.json as the
config's `credentials-file`; either way from a Secret, never in the pod spec.
"""

from __future__ import annotations

from typing import Any

import yaml

from deploys.cluster_apps import label_studio, objects
from oceanid import names
from oceanid.cluster_layout import CONNECTOR_METRICS_PORT as METRICS_PORT
from oceanid.ingress import CATCH_ALL_SERVICE
from oceanid.settings import Settings
from oceanid.tunnel_credentials import TunnelCredential

APP = "cloudflared"
NAMESPACE = "cloudflared"
NAME = "cloudflared"
SECRET = "cloudflared-credential"
CONFIG_DIR = "/etc/cloudflared/config"
CREDENTIAL_DIR = "/etc/cloudflared/credential"
IMAGE = "cloudflare/cloudflared:{version}"
NONROOT = 65532
# The GPU node's taint (group_data hosts.calypso.k3s.taints), which the node tunnel tolerates.
GPU_LABEL, GPU_VALUE = "workload-type", "gpu-compute"
HOSTNAME_LABEL = "kubernetes.io/hostname"


#: How every cloudflared pod runs (objects.hardened): as the image's user, numeric so the
#: kubelet can check it is not root (cloudflare/cloudflared's Dockerfile: `USER 65532:65532`,
#: distroless `nonroot` in older images); the credential volume is group-readable through
#: this fsGroup only.
RUN_AS = {"user": NONROOT, "group": NONROOT, "fs_group": NONROOT}


def image(settings: Settings) -> str:
    """The host connector's pinned version, so both connectors behave the same."""
    return IMAGE.format(version=settings.cloudflared.version)


def credential_file(credential: TunnelCredential) -> str:
    return "token" if credential.kind == "token" else "credentials.json"


def config(settings: Settings, tunnel_id: str, credential: TunnelCredential) -> dict[str, Any]:
    """config.yaml: Label Studio's public name to its Service, then the catch-all."""
    document: dict[str, Any] = {"tunnel": tunnel_id}
    if credential.kind == "credentials-file":
        document["credentials-file"] = f"{CREDENTIAL_DIR}/credentials.json"
    document.update(
        {
            "protocol": settings.tunnel_protocol,
            "no-autoupdate": True,
            "metrics": f"0.0.0.0:{METRICS_PORT}",  # the kubelet probes /ready here
            "ingress": ingress(settings),
        }
    )
    return document


def ingress(settings: Settings) -> list[dict[str, Any]]:
    """The cluster tunnel's rules: Label Studio's public name to its Service, then the
    catch-all. The same list goes to the config file and, where Cloudflare manages the
    tunnel's configuration, through the API (deploys/dns), since cloudflared runs a stored
    configuration in place of its file."""
    rules = []
    if settings.cluster_apps.label_studio.enabled:
        rules.append(
            {
                "hostname": names.label_name(settings),
                "service": label_studio.SERVICE_URL,
            }
        )
    rules.append({"service": CATCH_ALL_SERVICE})
    return rules


def args(credential: TunnelCredential) -> list[str]:
    run = ["tunnel", "--config", f"{CONFIG_DIR}/config.yaml", "run"]
    if credential.kind == "token":
        run += ["--token-file", f"{CREDENTIAL_DIR}/token"]
    return run


def container(
    name: str, settings: Settings, credential: TunnelCredential, metrics_host: str | None = None
) -> dict[str, Any]:
    """A cloudflared container reading config and credential from two read-only volumes.

    `metrics_host`: where the kubelet reaches the metrics server (a host-network pod
    listens on the node's loopback).
    """
    ready: dict[str, Any] = {"path": "/ready", "port": "metrics"}
    if metrics_host is not None:
        ready["host"] = metrics_host
    return {
        "name": name,
        "image": image(settings),
        "imagePullPolicy": "IfNotPresent",
        "args": args(credential),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": ready, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {**ready, "path": "/healthcheck"},
            "initialDelaySeconds": 30,
            "periodSeconds": 20,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": {"cpu": "250m", "memory": "384Mi"},
            "limits": {"cpu": "750m", "memory": "768Mi"},
        },
        # cloudflared writes nothing but its log to stderr
        "securityContext": {"readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "credential", "mountPath": CREDENTIAL_DIR, "readOnly": True},
        ],
    }


def volumes(config_map: str, secret: str, credential: TunnelCredential) -> list[dict[str, Any]]:
    return [
        {"name": "config", "configMap": {"name": config_map}},
        {
            "name": "credential",
            "secret": {
                "secretName": secret,
                "defaultMode": 0o440,  # readable through fsGroup by the non-root user
                "items": [
                    {"key": credential_file(credential), "path": credential_file(credential)}
                ],
            },
        },
    ]


def not_on(gpu_nodes: list[str]) -> dict[str, Any]:
    """The node affinity that keeps the connector off the GPU hosts' nodes, by name.

    Keyed on `kubernetes.io/hostname`, which every node carries: the kubelet sets it to the
    node's name, and k3s runs the kubelet with its `node-name` (the inventory name, as the
    node tunnel's DaemonSet selects it). `workload-type` is a taint on the GPU node
    (hosts.<name>.k3s.taints), no node's label, so a rule on it admitted every node. The taint
    alone keeps this untolerating pod off too; the rule holds if the taint is dropped.
    """
    if not gpu_nodes:
        return {}
    expression = {"key": HOSTNAME_LABEL, "operator": "NotIn", "values": sorted(gpu_nodes)}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [expression]}]
            }
        }
    }


def build(
    settings: Settings, tunnel_id: str, credential: TunnelCredential, gpu_nodes: list[str]
) -> objects.AppObjects:
    """The objects and Secrets of the cluster connector; its Namespace goes to the
    namespaces file (`cluster_apps.namespaces`).

    + gpu_nodes: the k3s nodes that are GPU hosts, where it must not run (`not_on`)
    """
    pod_labels = objects.labels(APP, NAME)
    placement = {
        **not_on(gpu_nodes),
        # Preferred, not required: with two VPS nodes a required rule would leave a
        # rolling update's new pod, or a replica during a node's outage, unscheduled.
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": objects.selector(NAME)},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": objects.metadata(APP, NAME, NAMESPACE),
        "spec": {
            "replicas": settings.cluster_apps.cluster_connector_replicas,
            "selector": {"matchLabels": objects.selector(NAME)},
            "strategy": {"rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": objects.hardened(
                    {
                        "affinity": placement,
                        "containers": [container(NAME, settings, credential)],
                        "volumes": volumes(NAME, SECRET, credential),
                    },
                    **RUN_AS,
                ),
            },
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": objects.metadata(APP, NAME, NAMESPACE),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": objects.selector(NAME)}},
    }
    config_text = yaml.safe_dump(config(settings, tunnel_id, credential), sort_keys=False)
    return objects.AppObjects(
        objects=[
            objects.namespace(APP, NAMESPACE),
            objects.config_map(APP, NAME, NAMESPACE, {"config.yaml": config_text}),
            deployment,
            budget,
        ],
        secrets=[
            objects.secret(
                APP, SECRET, NAMESPACE, {credential_file(credential): credential.file_content()}
            )
        ],
    )
