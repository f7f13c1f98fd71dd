"""Kubernetes objects as plain data, and the YAML k3s's auto-deploy folder receives.

Every object carries `app.kubernetes.io/managed-by: oceanid-deploys`: the deploy is the
only owner (two tools fought over the same objects in the stack we replace), and the
label is how what the deploy made is found again. `app.kubernetes.io/instance` names the
app file an object came from, so an app switched off can be deleted by that label alone.
"""

from __future__ import annotations

from typing import Any

import yaml

MANAGED_BY = "oceanid-deploys"
HEADER = "# Managed by oceanid-deploys (deploys/cluster_apps); local edits are overwritten.\n"


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


def _secret_values(content: bytes | str | None) -> dict[str, str]:
    """`namespace/name: key` -> value for every Secret in a rendered file."""
    if content is None:
        return {}
    found: dict[str, str] = {}
    for document in yaml.safe_load_all(content):
        if not isinstance(document, dict) or document.get("kind") != "Secret":
            continue
        meta = document.get("metadata") or {}
        where = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
        for key, value in (document.get("stringData") or {}).items():
            found[f"{where}: {key}"] = value
        for key, value in (document.get("data") or {}).items():
            found.setdefault(f"{where}: {key}", value)
    return found


def secret_key_changes(old: bytes | str | None, new: bytes | str | None) -> list[str]:
    """Which Secret keys differ between two renderings, by name only (for --dry --diff).

    Lines such as `apps/label-studio: LABEL_STUDIO_PASSWORD changes`; a value never
    appears, so the list is safe to print.
    """
    before, after = _secret_values(old), _secret_values(new)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if key not in before:
            changes.append(f"{key} added")
        elif key not in after:
            changes.append(f"{key} removed")
        elif before[key] != after[key]:
            changes.append(f"{key} changes")
    return changes
