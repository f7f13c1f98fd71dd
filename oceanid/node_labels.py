"""Kubernetes node labels and taints: their grammar, the kubelet's rule, a taint's text.

The settings check a host's `k3s_labels` and `k3s_taints` with these (oceanid/settings.py), the
k3s role writes the accepted ones into config.yaml.d (deploys/k3s/config.py), the API step sets
the rest on the running node (operations/k3s.py), and smoke compares the node with them
(oceanid/smoke.py). One home, so a label the settings let through is one the role can set.
"""

from __future__ import annotations

import re

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# The kubelet's own rule for --node-labels (what k3s's node-label becomes): in the
# kubernetes.io and k8s.io namespaces it sets only these labels and these prefixes. Anything
# else there (node-role.kubernetes.io/* above all) makes the kubelet refuse to start.
KUBELET_LABELS = frozenset(
    {
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "beta.kubernetes.io/os",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "kubernetes.io/arch",
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    }
)
KUBELET_LABEL_PREFIXES = ("kubelet.kubernetes.io", "node.kubernetes.io")

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
KEY_RE = re.compile(rf"({_PREFIX}/)?{_NAME}")
VALUE_RE = re.compile(rf"({_NAME})?")
TAINT_RE = re.compile(r"(?P<key>[^=:]+)(=(?P<value>[^:]*))?:(?P<effect>\w+)")


def _check_key(key: str, what: str) -> None:
    prefix = key.rpartition("/")[0]
    if not KEY_RE.fullmatch(key) or len(prefix) > 253:
        raise ValueError(
            f"{what} key {key!r} is not a Kubernetes label key ([prefix/]name, name at most "
            "63 characters of letters, digits, '-', '_', '.')"
        )


def _check_value(value: str, what: str) -> None:
    if not VALUE_RE.fullmatch(value):
        raise ValueError(
            f"{what} value {value!r} is not a Kubernetes label value (at most 63 letters, "
            "digits, '-', '_', '.', starting and ending with a letter or digit)"
        )


def check_api_label(key: str, value: str) -> None:
    """Refuse a node label that is not valid Kubernetes (what the API itself refuses)."""
    _check_key(key, "node label")
    _check_value(value, f"node label {key}")


def check_label(key: str, value: str) -> None:
    """Refuse a node label that is not valid Kubernetes or that the kubelet would refuse."""
    _check_key(key, "node label")
    _check_value(value, f"node label {key}")
    prefix = key.rpartition("/")[0]
    if prefix.startswith("node-role.kubernetes.io"):
        raise ValueError(
            f"node label {key!r}: the kubelet refuses node-role.kubernetes.io/* labels at "
            "registration; they are set on the node through the API after it joins"
        )
    restricted = any(
        prefix == domain or prefix.endswith(f".{domain}") for domain in ("kubernetes.io", "k8s.io")
    )
    allowed = key in KUBELET_LABELS or any(
        prefix == allowed or prefix.endswith(f".{allowed}") for allowed in KUBELET_LABEL_PREFIXES
    )
    if restricted and not allowed:
        raise ValueError(
            f"node label {key!r}: the kubelet refuses labels in the kubernetes.io and k8s.io "
            "namespaces except kubelet.kubernetes.io/*, node.kubernetes.io/* and its own list; "
            "use a prefix of our own such as oceanid.cluster/"
        )


def check_taint(taint: str) -> None:
    """Refuse a taint that is not ``key[=value]:Effect`` with one of Kubernetes' effects."""
    match = TAINT_RE.fullmatch(taint)
    if not match:
        raise ValueError(f"node taint {taint!r} must be key[=value]:Effect")
    _check_key(match["key"], "node taint")
    _check_value(match["value"] or "", f"node taint {match['key']}")
    if match["effect"] not in TAINT_EFFECTS:
        raise ValueError(
            f"node taint {taint!r}: the effect must be one of {', '.join(TAINT_EFFECTS)}"
        )


def taint_text(key: str, value: str | None, effect: str) -> str:
    """A taint as settings write it and ``kubectl taint`` takes it: ``key[=value]:Effect``."""
    return f"{key}={value}:{effect}" if value else f"{key}:{effect}"
