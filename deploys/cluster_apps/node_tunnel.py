"""The node tunnel as a DaemonSet (`node_tunnel_mode: daemonset`), the old stack's option.

One DaemonSet per GPU host, each with that host's own tunnel and credential (two hosts
never share a tunnel), on that node only and only while it is labelled
`oceanid.cluster/tunnel-enabled=true`. It tolerates the GPU taint, and serves the GPU
service on the node's loopback through `hostNetwork`; `dnsPolicy: ClusterFirstWithHostNet`
and an explicit `protocol` are what the old stack left out when its DaemonSet
crash-looped on DNS. The host connector must be stopped on that node in the same run
(wiring in the GPU role), so two connectors never serve one tunnel.
"""

from __future__ import annotations

from typing import Any

import yaml

from deploys.cluster_apps import cluster_connector, objects
from oceanid import names
from oceanid.cluster_layout import NODE_TUNNEL_METRICS_ADDRESS as METRICS_ADDRESS
from oceanid.cluster_layout import NODE_TUNNEL_NAMESPACE as NAMESPACE
from oceanid.cluster_layout import node_tunnel_daemon_set as daemon_set_name
from oceanid.ingress import node_ingress
from oceanid.model import HostPlan

# The namespace, the DaemonSets' names and their pods' metrics address come from
# oceanid/cluster_layout.py, where `make status` reads them too.
APP = "node-tunnel"
TUNNEL_LABEL = "oceanid.cluster/tunnel-enabled"


def name(plan: HostPlan) -> str:
    return daemon_set_name(plan.name)


def config(plan: HostPlan) -> dict[str, Any]:
    """As the host connector's config (deploys/gpu_host), with the in-pod credential path."""
    settings, gpu, credential = plan.settings, plan.gpu, plan.node_credential
    document: dict[str, Any] = {"tunnel": plan.node_tunnel_id}
    if credential.kind == "credentials-file":
        document["credentials-file"] = f"{cluster_connector.CREDENTIAL_DIR}/credentials.json"
    document.update(
        {
            "protocol": settings.tunnel_protocol,
            "no-autoupdate": True,
            # the node's loopback: hostNetwork; the host connector's port, as it is stopped
            "metrics": METRICS_ADDRESS,
            "ingress": node_ingress(names.gpu_name(settings, gpu, plan.name), gpu.service),
        }
    )
    return document


def build(plans: list[HostPlan]) -> objects.AppObjects:
    """(objects, secret objects) for every GPU host's DaemonSet; its Namespace goes to the
    namespaces file (`cluster_apps.namespaces`)."""
    found: list[dict] = [objects.namespace(APP, NAMESPACE)]
    secrets: list[dict] = []
    for plan in plans:
        this = name(plan)
        credential = plan.node_credential
        container = cluster_connector.container(
            "cloudflared", plan.settings, credential, metrics_host="127.0.0.1"
        )
        daemon_set = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": objects.metadata(APP, this, NAMESPACE),
            "spec": {
                "selector": {"matchLabels": objects.selector(this)},
                "updateStrategy": {"rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": objects.labels(APP, this)},
                    "spec": objects.hardened(
                        {
                            "hostNetwork": True,
                            "dnsPolicy": "ClusterFirstWithHostNet",
                            "nodeSelector": {
                                TUNNEL_LABEL: "true",
                                "kubernetes.io/hostname": plan.name,
                            },
                            "tolerations": [
                                {
                                    "key": cluster_connector.GPU_LABEL,
                                    "operator": "Equal",
                                    "value": cluster_connector.GPU_VALUE,
                                    "effect": "NoSchedule",
                                }
                            ],
                            "containers": [container],
                            "volumes": cluster_connector.volumes(this, this, credential),
                        },
                        **cluster_connector.RUN_AS,
                    ),
                },
            },
        }
        config_text = yaml.safe_dump(config(plan), sort_keys=False)
        found += [
            objects.config_map(APP, this, NAMESPACE, {"config.yaml": config_text}),
            daemon_set,
        ]
        secrets.append(
            objects.secret(
                APP,
                this,
                NAMESPACE,
                {cluster_connector.credential_file(credential): credential.file_content()},
            )
        )
    return objects.AppObjects(found, secrets)
