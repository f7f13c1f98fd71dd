"""Kubernetes objects as plain data, and the YAML k3s's auto-deploy folder receives.

Every object carries `app.kubernetes.io/managed-by: oceanid-deploys`: the deploy is the
only owner (two tools fought over the same objects in the stack we replace), and the
label is how what the deploy made is found again. `app.kubernetes.io/instance` names the
app file an object came from, so an app switched off can be deleted by that label alone.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

MANAGED_BY = "oceanid-deploys"
HEADER = "# Managed by oceanid-deploys (deploys/cluster_apps); local edits are overwritten.\n"
#: The pod-template annotation that carries the keyed digest of the Secrets a pod reads.
SECRETS_ANNOTATION = "oceanid.cluster/secrets-hmac-sha256"
#: Workloads whose pods run on until their template changes; a CronJob's pods are new on
#: every run and read the Secret as it is then, so it needs no digest.
LONG_RUNNING = ("Deployment", "DaemonSet", "StatefulSet")


@dataclass(frozen=True)
class AppObjects:
    """One app's Kubernetes objects as the deploy renders them: `objects` go to the app's file
    in k3s's auto-deploy folder, its Secrets (`secrets`) to a 0600 file beside it."""

    objects: list[dict[str, Any]]
    secrets: list[dict[str, Any]]


def labels(app: str, name: str) -> dict[str, str]:
    """The labels every object of `app` carries; `name` also selects its pods."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": f"oceanid-{app}",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(name: str) -> dict[str, str]:
    """What a workload's selector matches: the name alone, which never changes."""
    return {"app.kubernetes.io/name": name}


def metadata(app: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = labels(app, name)
    return meta


def namespace(app: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(app, name)}


def secret(app: str, name: str, namespace: str, values: dict[str, str]) -> dict[str, Any]:
    """A Secret with `stringData`: the values as given, never base64-wrapped by hand."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(app, name, namespace),
        "type": "Opaque",
        "stringData": dict(sorted(values.items())),
    }


def config_map(app: str, name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(app, name, namespace),
        "data": data,
    }


def secret_env(name: str, secret_name: str, key: str | None = None) -> dict[str, Any]:
    """An environment variable read from a Secret: the value never sits in the pod spec."""
    return {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key or name}},
    }


def hardened(
    spec: dict[str, Any], *, user: int, group: int | None = None, fs_group: int | None = None
) -> dict[str, Any]:
    """A pod spec with the settings every pod of the deploy runs under, for every app alike.

    + spec: the pod spec as the app builds it (containers, volumes, scheduling)
    + user: the uid the image runs as; given as a number because the kubelet can verify
      `runAsNonRoot` only for a numeric user, and a named one (distroless `nonroot`) fails
    + group: the primary gid, where the image's own is root's (0) or unnamed
    + fs_group: the group that owns the pod's volumes (a Secret volume of mode 0440, a
      volume the app writes)

    Pod level: `runAsNonRoot`, the container runtime's default seccomp profile, and no
    service-account token: no app here calls the Kubernetes API (Label Studio and its ML
    connector speak HTTP to each other, cloudflared to Cloudflare), so a token would only
    be a credential for whoever breaks into a pod. Every container: no privilege escalation
    (no setuid gains) and no Linux capabilities, as none binds a port below 1024 or changes
    the network stack. A container's own settings (`readOnlyRootFilesystem`) are kept;
    these win over them.
    """
    security: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": user}
    if group is not None:
        security["runAsGroup"] = group
    if fs_group is not None:
        security["fsGroup"] = fs_group
    security["seccompProfile"] = {"type": "RuntimeDefault"}
    pod = {
        "automountServiceAccountToken": False,
        "securityContext": security,
        **{key: value for key, value in spec.items() if key != "securityContext"},
    }
    for field in ("initContainers", "containers"):
        if field in pod:
            pod[field] = [
                {
                    **container,
                    "securityContext": {
                        **container.get("securityContext", {}),
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
                for container in pod[field]
            ]
    return pod


def secrets_read(pod: dict[str, Any]) -> set[str]:
    """The names of the Secrets a pod spec reads: environment (`secretKeyRef`, `envFrom`),
    Secret volumes and projected volumes' Secret sources."""
    names = set()
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        for env in container.get("env", []):
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in (volume.get("projected") or {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


def secrets_key(tunnel_secret: str) -> bytes:
    """The key of the Secrets digest, derived from the cluster tunnel's secret: 32 random
    bytes (Cloudflare's API or `cloudflared tunnel create` makes them), required wherever
    cluster apps are rendered (a site with a k3s server), and stable from run to run, so an
    unchanged Secret keeps its digest. Derived under a label of its own, so the digest is
    no use as anything else. Rotating that credential re-keys every digest: each workload
    rolls once, which a rotation of the cluster's tunnel justifies."""
    return hmac.new(tunnel_secret.encode(), SECRETS_ANNOTATION.encode(), hashlib.sha256).digest()


def secrets_digest(secrets: Iterable[dict[str, Any]], key: bytes) -> str:
    """HMAC-SHA256, under `key`, of the canonical JSON of the given Secrets' data.

    Keyed, not a plain SHA-256: the annotation is readable by whoever may read the
    workload, and lies in a 0644 file and in `--diff` output. A plain hash of a Secret that
    holds only guessable values could be checked against guesses offline. Hashing the whole
    Secret document would be safe only where it holds a high-entropy value: a tunnel
    credential does, but Label Studio's holds an admin password, a database password and a
    token of as few as 6 characters, all of which may be weak. An HMAC under a key of 256
    random bits cannot be checked without the key, whatever the Secret holds, so the
    digest shows that something changed and nothing of what.
    """
    document = {
        f"{meta['namespace']}/{meta['name']}": {
            field: secret[field] for field in ("data", "stringData") if field in secret
        }
        for secret in secrets
        for meta in [secret["metadata"]]
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def with_secrets_digest(
    found: list[dict[str, Any]], secrets: list[dict[str, Any]], key: bytes
) -> list[dict[str, Any]]:
    """`found` with each long-running workload's pod template annotated with the digest of
    the Secrets its pods read, so a rotated value changes the template and the workload
    rolls its pods (a pod reads a Secret's environment once, at start).

    Raises ValueError naming a Secret a pod reads that `secrets` does not hold: a digest
    that left it out would miss its rotation.
    """
    by_name = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in secrets}
    annotated = []
    for document in found:
        if document.get("kind") in LONG_RUNNING:
            document = copy.deepcopy(document)
            namespace = document["metadata"]["namespace"]
            template = document["spec"]["template"]
            names = sorted(secrets_read(template["spec"]))
            missing = [name for name in names if (namespace, name) not in by_name]
            if missing:
                raise ValueError(
                    f"{document['kind']} {namespace}/{document['metadata']['name']} reads "
                    f"Secret {', '.join(missing)}, which the app does not render"
                )
            digest = secrets_digest([by_name[namespace, name] for name in names], key)
            template["metadata"].setdefault("annotations", {})[SECRETS_ANNOTATION] = digest
        annotated.append(document)
    return annotated


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing multi-line strings (a config file, the job's script) as literal
    blocks, so a file and its `--diff` read line by line as the embedded file does."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump(objects: list[dict[str, Any]]) -> bytes:
    """One YAML stream, objects in order (a Namespace before what lives in it)."""
    return (HEADER + yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False)).encode()


def secret_key_lines(content: bytes) -> tuple[tuple[str, int, int], ...]:
    """(`namespace/name: key`, first line, end line) of every Secret value in a rendered
    file, so `--diff` names the keys whose lines change (operations.managed)."""
    found = []
    for document in yaml.compose_all(content.decode()):
        if not isinstance(document, yaml.MappingNode):
            continue
        top = {key.value: value for key, value in document.value}
        if getattr(top.get("kind"), "value", None) != "Secret":
            continue
        meta = {k.value: v.value for k, v in getattr(top.get("metadata"), "value", [])}
        where = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
        for key, value in getattr(top.get("stringData"), "value", []):
            first = key.start_mark.line
            end = value.end_mark.line + (1 if value.end_mark.column else 0)
            found.append((f"{where}: {key.value}", first, max(end, first + 1)))
    return tuple(found)
