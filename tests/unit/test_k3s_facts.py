"""k3s facts on output the fixtures do not cover: what is not k3s, and a node not yet reported.

The real output shapes are fixtures in ``fixtures/facts/k3s.*`` (run by test_facts.py).
"""

from __future__ import annotations

import json

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.k3s import K3sNodes, K3sVersion


def test_version_refuses_what_is_not_k3s() -> None:
    with pytest.raises(FactProcessError, match="not k3s --version output"):
        K3sVersion().process(["Usage: k3s [global options] command"])


def test_nodes_refuses_what_is_not_json() -> None:
    # `get nodes` without `-o json` (or a wrapper printing a table) must not read as "no nodes".
    with pytest.raises(FactProcessError, match="get nodes -o json"):
        K3sNodes().process(["NAME     STATUS   ROLES                  AGE   VERSION"])


def test_nodes_refuses_json_that_is_not_a_list_of_nodes() -> None:
    with pytest.raises(FactProcessError):
        K3sNodes().process(['{"kind": "Status", "status": "Failure"}'])


def test_a_node_without_a_ready_condition_is_not_ready() -> None:
    """A node that has just registered has no conditions yet, and no labels or taints."""
    output = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "styx"}}],
        },
        indent=4,
    )
    assert K3sNodes().process(output.splitlines()) == [
        {
            "name": "styx",
            "ready": False,
            "labels": {},
            "annotations": {},
            "taints": [],
            "kubelet_version": None,
        }
    ]
