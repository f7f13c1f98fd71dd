"""A node tunnel's ingress: which paths of a GPU host's public name reach its service.

One builder for every place the rules go: the host connector's config.yaml
(deploys/gpu_host/cloudflared_node.py), the cluster DaemonSet's (deploys/cluster_apps/
node_tunnel.py) and the configuration pushed through the Cloudflare API for a remotely
managed tunnel (deploys/dns), so the three can never disagree.

How cloudflared picks a rule (2025.8.1: ingress/ingress.go `FindMatchingRule`, ingress/rule.go
`Matches`): the first rule whose hostname equals the request's host (port stripped) and whose
`path`, a Go RE2 regex, matches the request's *decoded* path with `MatchString`, which is a
search anywhere in the text, not a full match. The last rule (no hostname, no path) takes the
rest. So each path here is anchored, `^…$` (without the `m` flag RE2's `$` is the end of the
text, never before a trailing newline), and the rules are an allow-list closed by the 404.

For the `triton` kind only Triton's inference plane is public: server health, server metadata,
each model's metadata, readiness, configuration and inference, with or without a version. The
model repository API (load and unload run code on the host), shared memory, trace, logging and
statistics stay on the host's loopback. The `http` kind is the operator's own server, so it
keeps every path.

A `triton` host also runs the ML-backend adapter (deploys/gpu_host/ml_backend) on
127.0.0.1:ML_BACKEND_PORT, published at its own name (oceanid/names.py `ml_hostname`: `gpu` ->
`ml`, `gpu7` -> `ml7`, design.md §7): every path of that name reaches it, since the adapter
itself refuses a request without its basic auth. Its rule comes before the catch-all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oceanid.names import ml_hostname

if TYPE_CHECKING:
    from oceanid.settings import GpuService

CATCH_ALL_SERVICE = "http_status:404"
ML_BACKEND_PORT = 9090  # the adapter's, as the stack we replace ran it (design.md §7)
# A model name as Triton's model routes take it (`[^/]+`, src/http_server.cc), but never starting
# with a dot: no segment can then be `.` or `..`, which an origin might resolve. cloudflared
# 2025.8.1 matches the decoded path and forwards the raw one, so an encoded `/` (%2F) adds a
# segment here and is refused. Versions are integers, as Triton's route has them.
_MODEL = r"/v2/models/[^/.][^/]*(/versions/[0-9]+)?"
# Triton reads `/v2/models/stats` as every model's statistics before it tries its model routes
# (HTTPAPIServer::Handle, src/http_server.cc), not as a model named `stats`: refused first.
MODEL_STATS_PATH = r"^/v2/models/stats$"
TRITON_PATHS = (
    r"^/v2/health/(live|ready)$",  # server liveness and readiness
    r"^/v2$",  # server metadata
    rf"^{_MODEL}(/(ready|config|infer))?$",  # model metadata, readiness, configuration, inference
)


def name_rules(hostname: str, service: GpuService) -> list[dict[str, Any]]:
    """The rules of one public name, in order (no catch-all): everything for the `http` kind,
    the allow-list above for `triton`."""
    origin = f"http://localhost:{service.port}"
    if service.kind != "triton":
        return [{"hostname": hostname, "service": origin}]
    rules = [{"hostname": hostname, "path": MODEL_STATS_PATH, "service": CATCH_ALL_SERVICE}]
    rules += [{"hostname": hostname, "path": path, "service": origin} for path in TRITON_PATHS]
    return rules


def ml_rules(hostname: str, service: GpuService) -> list[dict[str, Any]]:
    """The adapter's rule, for a `triton` host's GPU name `hostname` (none for `http`)."""
    if service.kind != "triton":
        return []
    return [{"hostname": ml_hostname(hostname), "service": f"http://localhost:{ML_BACKEND_PORT}"}]


def node_ingress(hostname: str, service: GpuService) -> list[dict[str, Any]]:
    """A node tunnel's whole ingress: the public name's rules, the adapter's, then the 404
    that cloudflared requires last (a rule with neither hostname nor path)."""
    return [
        *name_rules(hostname, service),
        *ml_rules(hostname, service),
        {"service": CATCH_ALL_SERVICE},
    ]
