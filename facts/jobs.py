"""
Failed Kubernetes Jobs, as the k3s server's API lists them: a backup that failed
(deploys/cluster_apps/backup.py) must show in `make status`, never pass silently.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from pyinfra.api.exceptions import FactProcessError
from typing_extensions import override

from facts.k3s import K3sApiFact


class FailedJob(TypedDict):
    namespace: str
    name: str
    reason: str  # the Failed condition's reason (BackoffLimitExceeded, DeadlineExceeded)
    since: str | None  # when it failed (the condition's lastTransitionTime)


def _failed(item: dict[str, Any]) -> FailedJob | None:
    for condition in item.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            meta = item["metadata"]
            return {
                "namespace": meta["namespace"],
                "name": meta["name"],
                "reason": condition.get("reason") or "Failed",
                "since": condition.get("lastTransitionTime"),
            }
    return None


class K3sFailedJobs(K3sApiFact[list[FailedJob]]):
    """
    Returns the Jobs of every namespace whose `Failed` condition is true (the Job gave up:
    its retries or its deadline spent), or ``None`` when the API does not answer.

    A Job kept by its CronJob's `failedJobsHistoryLimit` (or its `ttlSecondsAfterFinished`)
    stays listed until the next ones replace it, so a failed nightly backup shows the next
    morning.
    """

    KUBECTL_GET = "jobs -A -o json --request-timeout=10s"

    @override
    def parse(self, output: list[str]) -> list[FailedJob]:
        try:
            items = json.loads("\n".join(output))["items"]
            return [job for item in items if (job := _failed(item)) is not None]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise FactProcessError(
                f"not `kubectl get jobs -o json` output ({error!r}): {output[:1]!r}"
            ) from error
