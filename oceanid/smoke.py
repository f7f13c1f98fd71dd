"""`make smoke` and `make status`: the public URLs and the tunnels, checked from outside.

A deploy that converged can still leave the site unreachable (a tunnel without a connector, a
Triton that never loaded its models, a DNS name on the wrong tunnel), and only a request from
outside shows that. This command asks what a user would ask, through the same names:

- each tunnel's health from the Cloudflare API (when ``manage_dns`` gives API access);
- ``https://<public_name>.<base>/v2/health/ready``, every model's readiness and one real inference
  on each GPU host (``tritonclient.http``, as a client would call it), and its model repository
  API refused (``POST /v2/repository/index`` answers 404 or 403, never 200: oceanid/ingress.py);
- ``https://ml.<base>`` (``mlN``: the ML backend beside each ``triton`` GPU name):
  ``/health`` answers 200 with the basic auth of ESC ``mlBackendUser``/``mlBackendPassword``
  and 401 without, and ``/predict`` returns the text of the ``smoke_pdf_url`` PDF (SKIP, saying
  so, when that setting is not given);
- ``https://label.<base>/health`` (Label Studio, at ``cluster_apps.label_studio.public_name``)
  and its ``/`` redirecting to the login page, when the inventory has a k3s server;
- every k3s node of the inventory Ready in the cluster, with the labels and taints its
  ``hosts:`` entry gives (the ``kubernetes`` client through ``cluster/kubeconfig.yaml`` and the
  SSH tunnel of ``make tunnel``; without them the check says which to run).

A public name is reached through Cloudflare's edge. Where there is none (the lab: its
``cloudflare_api_base_url`` points at a stand-in, not at Cloudflare), a name without a ``--url``
is ``SKIP`` with the reason, never a pass; the API checks still run against the stand-in.

Every request is made once, with a timeout: a smoke check reports the site as it is, it does not
wait for it to get better. ``--url NAME=URL`` sends a public name's checks elsewhere without
touching DNS; a GPU name keeps its name as the Host header there, so a connector routes it by its
own rules (the lab: a port forward to the cloudflared stand-in's edge). Output is one
``PASS|FAIL|SKIP what — detail`` line per check and a summary; any failure exits 1, a bad
inventory or bad arguments exit 2. No secret is printed: the API token only travels inside
``CloudflareAccess``, whose repr hides it. Tunnel IDs are printed; they are public anyway, as the
targets of the CNAMEs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from oceanid import exitcodes, model, names, preflight
from oceanid.model import K3S_AGENTS, K3S_SERVERS, Site
from oceanid.node_labels import taint_text
from oceanid.settings import GpuService, Settings, short_name

if TYPE_CHECKING:  # imported where used: they load ssl, which must wait for gevent (see main)
    import requests

    from oceanid.cloudflare_dns import CloudflareAccess

DEFAULT_TIMEOUT_S = 20.0
SMOKE_MODEL = "docling_granite_python"
LABEL_HEALTH = "/health"
LABEL_LOGIN = "/user/login/"
TRITON_READY = "/v2/health/ready"
REPOSITORY_INDEX = "/v2/repository/index"
REFUSED_STATUSES = (403, 404)  # Access without a valid token; the connector's catch-all
# Where `make kubeconfig` writes it, relative to where the command runs (the repository's root
# for `make smoke`): a test in another folder never reaches a real cluster by accident.
KUBECONFIG = Path("cluster/kubeconfig.yaml")
Kind = Literal["label", "gpu", "ml", "k3s"]
ML_HEALTH = "/health"
ML_PREDICT = "/predict"
# The task data key and label config the smoke prediction sends: the adapter's default PDF
# field, and a project that shows the document and has a <TextArea> for its text.
SMOKE_PDF_FIELD = "pdf"
SMOKE_LABEL_CONFIG = (
    '<View><Pdf name="document" value="$pdf"/><TextArea name="text" toName="document"/></View>'
)


class UsageError(Exception):
    """Bad arguments for this inventory (an unknown ``--url`` name…): exit 2, one line."""


@dataclass(frozen=True)
class Result:
    """One check's outcome, printed as one line."""

    ok: bool
    what: str
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.what} — {self.detail}"


@dataclass(frozen=True)
class Target:
    """A public name to check and where its requests go (``https://<name>`` or an override)."""

    kind: Kind
    name: str
    url: str
    service: GpuService | None = None
    # A GPU name behind Cloudflare Access (`access: service_token`): the service token's
    # CF-Access-Client-Id/-Secret, sent with every request to it; never printed.
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    # an ML backend's basic auth (ESC mlBackendUser, mlBackendPassword); never printed
    auth: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Tunnel:
    """A tunnel to read from the API, with the public name it carries (for the reader)."""

    kind: Kind
    what: str
    tunnel_id: str
    key: str = ""  # the setting (ESC key) the ID came from, named when the tunnel is missing


# -- what to check, from the validated site -------------------------------------------------------


def _settings(site: Site) -> Settings:
    """Site-wide settings: group data, so every host's copy holds the same values."""
    return next(iter(site.hosts.values())).settings


def _base(site: Site) -> str:
    return _settings(site).base_domain


def _full_name(name: str, base: str) -> str:
    name = name.strip().lower().rstrip(".")
    return name if "." in name else f"{name}.{base}"


def parse_overrides(values: Sequence[str], base: str) -> dict[str, str]:
    """``NAME=URL`` pairs; a bare label (``gpu``) means ``gpu.<base>``."""
    overrides: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name.strip() or urlsplit(url).scheme not in ("http", "https"):
            raise UsageError(f"--url {value!r}: expected NAME=http(s)://HOST[:PORT][/PATH]")
        if not urlsplit(url).hostname:
            raise UsageError(f"--url {value!r}: the URL has no host")
        overrides[_full_name(name, base)] = url.rstrip("/")
    return overrides


def targets(site: Site, overrides: dict[str, str], only: Kind | None = None) -> list[Target]:
    """Label Studio's name when there is a k3s server, then each GPU host's public name and
    its adapter's (oceanid/names.py, as DNS and the tunnels name them)."""
    found: list[Target] = []
    for public in names.site_names(site):
        name = public.fqdn
        url = overrides.get(name, f"https://{name}")
        # an overridden name stays the Host: a connector routes by it
        host_header = {"Host": name} if name in overrides else {}
        if public.host is None:
            found.append(Target("label", name, url))
            continue
        plan = site.hosts[public.host]
        if public.kind == "gpu":
            headers = {**host_header, **_access_headers(site, plan)}
            found.append(Target("gpu", name, url, plan.gpu.service, headers))
        elif plan.ml_backend_auth is not None:  # the adapter's name, with its basic auth
            auth = plan.ml_backend_auth
            found.append(Target("ml", name, url, plan.gpu.service, host_header, auth))
    unknown = sorted(set(overrides) - {target.name for target in found})
    if unknown:
        known = ", ".join(target.name for target in found) or "none"
        raise UsageError(f"--url {unknown[0]}: not a public name of this inventory ({known})")
    return [target for target in found if only in (None, target.kind)]


def _access_headers(site: Site, plan: model.HostPlan) -> dict[str, str]:
    """The headers Cloudflare Access reads a service token from (a name without Access: none)."""
    if plan.gpu is None or plan.gpu.access != "service_token":
        return {}
    return {
        "CF-Access-Client-Id": site.secrets["cloudflareAccessClientId"].strip(),
        "CF-Access-Client-Secret": site.secrets["cloudflareAccessClientSecret"].strip(),
    }


def tunnels(site: Site, only: Kind | None = None) -> list[Tunnel]:
    """The cluster tunnel (Label Studio's name) and each GPU host's own node tunnel."""
    settings = _settings(site)
    found: list[Tunnel] = []
    if site.cluster_tunnel_id:
        what = f"cluster tunnel ({names.label_name(settings)})"
        found.append(Tunnel("label", what, site.cluster_tunnel_id, "cloudflareTunnelId"))
    for plan in sorted(site.hosts.values(), key=lambda plan: plan.name):
        if plan.gpu is not None and plan.node_tunnel_id:
            name = names.gpu_name(settings, plan.gpu, plan.name)
            what = f"{plan.name}'s node tunnel ({name})"
            found.append(Tunnel("gpu", what, plan.node_tunnel_id, plan.gpu.tunnel_id_key))
    return [tunnel for tunnel in found if only in (None, tunnel.kind)]


def api_access(site: Site) -> CloudflareAccess | None:
    """API access exactly as the DNS deploy builds it; None when ``manage_dns`` is off."""
    from oceanid.cloudflare_dns import CloudflareAccess

    settings = _settings(site)
    if not settings.manage_dns:
        return None
    return CloudflareAccess.of(settings, site.secrets)


# -- the checks -----------------------------------------------------------------------------------


def check_tunnels(site: Site, wanted: Sequence[Tunnel], timeout: float) -> Iterator[Result]:
    """Each tunnel must be serving: healthy or degraded, with at least one live connection."""
    from oceanid.cloudflare_dns import CloudflareError, tunnel_status

    try:
        access = api_access(site)
        if access is None:  # manage_dns off: no API access to ask with
            return
        client = access.client()
    except CloudflareError as error:
        for tunnel in wanted:
            yield Result(False, tunnel.what, str(error))
        return
    # One retry at most, within --timeout: the SDK's own 3 retries with back-off are for deploys.
    client.timeout = timeout
    client.max_retries = 1
    for tunnel in wanted:
        try:
            status = tunnel_status(client, access.account_id, tunnel.tunnel_id, tunnel.key)
        except CloudflareError as error:
            yield Result(False, tunnel.what, str(error))
            continue
        detail = status.describe()
        if not status.serving:
            detail += "; not serving: no live connection (is its cloudflared running?)"
        yield Result(status.serving, tunnel.what, detail)


def _reason(error: BaseException) -> str:
    """The innermost cause of a connection failure, e.g. ``Connection refused``, not the whole
    urllib3 retry chain with object addresses in it."""
    seen: set[int] = set()
    deepest: BaseException = error
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        deepest = current
        nested = [getattr(current, "reason", None), current.__cause__, current.__context__]
        nested += list(current.args[:1])
        todo += [n for n in nested if isinstance(n, BaseException)]
    return f"{type(deepest).__name__}: {deepest}".splitlines()[0]


def _get(
    url: str,
    timeout: float,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    auth: tuple[str, str] | None = None,
    body: Any = None,
) -> tuple[requests.Response | None, str]:
    """One GET (or `method`, with a JSON `body`), no redirects (a redirect to a login page is
    not the service), no retries."""
    import requests

    started = time.monotonic()
    try:
        answer = requests.request(
            method,
            url,
            timeout=timeout,
            allow_redirects=False,
            headers=headers,
            auth=auth,
            json=body,
        )
    except requests.Timeout:
        return None, f"no answer in {timeout:g}s"
    except requests.RequestException as error:
        return None, _reason(error)
    took = time.monotonic() - started
    detail = f"HTTP {answer.status_code} in {took:.2f}s"
    if answer.is_redirect:
        detail += f", redirected to {answer.headers.get('location', '?')}"
    return answer, detail


def check_label(target: Target, timeout: float) -> Result:
    """Label Studio's own health endpoint must answer 200."""
    url = target.url + LABEL_HEALTH
    answer, detail = _get(url, timeout)
    ok = answer is not None and answer.status_code == 200
    return Result(ok, f"{target.name} Label Studio", f"GET {url}: {detail}")


def check_label_login(target: Target, timeout: float) -> Result:
    """``/`` must send a visitor to the login page: the app itself answers, not a placeholder."""
    url = target.url + "/"
    answer, detail = _get(url, timeout)
    location = urlsplit(answer.headers.get("location", "")).path if answer is not None else ""
    ok = answer is not None and answer.is_redirect and location == LABEL_LOGIN
    if answer is not None and not ok:
        detail += f"; expected a redirect to {LABEL_LOGIN}"
    return Result(ok, f"{target.name} Label Studio login", f"GET {url}: {detail}")


def check_http_service(target: Target, timeout: float) -> Result:
    """A GPU host serving something else than Triton: the tunnel reaches an answering server
    (Cloudflare itself answers 502/530 when the origin is down)."""
    answer, detail = _get(target.url + "/", timeout, target.headers)
    ok = answer is not None and answer.status_code < 500
    return Result(ok, f"{target.name} service", f"GET {target.url}/: {detail}")


def check_ml_backend(
    target: Target, timeout: float, pdf_url: str | None, say: Callable[[str], None]
) -> Iterator[Result]:
    """The ML backend Label Studio calls: healthy with its basic auth, refusing without, and
    one prediction of `pdf_url` whose text comes back (deploys/gpu_host/ml_backend/adapter.py
    speaks Label Studio 1.23.2's protocol: POST /predict {tasks, label_config} -> {results})."""
    url = target.url + ML_HEALTH
    answer, detail = _get(url, timeout, target.headers, auth=target.auth)
    ok = answer is not None and answer.status_code == 200
    if ok:
        version = _json(answer).get("model_version")
        detail += f", {version}" if version else ""
    elif answer is None:
        detail += "; nothing more checked"
    yield Result(ok, f"{target.name} ML backend", f"GET {url} with its credentials: {detail}")
    if answer is None:
        return
    answer, detail = _get(url, timeout, target.headers)
    refused = answer is not None and answer.status_code == 401
    if answer is not None and not refused:
        detail += "; it must refuse a request without basic auth (401)"
    yield Result(
        refused, f"{target.name} ML backend refuses no credentials", f"GET {url}: {detail}"
    )
    what = f"{target.name} ML backend prediction"
    if pdf_url is None:
        say(f"SKIP {what} — no smoke_pdf_url setting: set it to a PDF its GPU host can fetch")
        return
    yield _check_prediction(target, timeout, pdf_url, what)


def _json(answer: requests.Response) -> dict:
    try:
        value = answer.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _check_prediction(target: Target, timeout: float, pdf_url: str, what: str) -> Result:
    """One task whose PDF is `pdf_url`: its prediction must hold a non-empty text."""
    url = target.url + ML_PREDICT
    body = {
        "tasks": [{"id": 1, "data": {SMOKE_PDF_FIELD: pdf_url}}],
        "project": "oceanid-smoke",
        "label_config": SMOKE_LABEL_CONFIG,
        "params": {},
    }
    answer, detail = _get(url, timeout, target.headers, "POST", target.auth, body)
    if answer is None or answer.status_code != 200:
        return Result(False, what, f"POST {url} ({pdf_url}): {detail}")
    results = _json(answer).get("results")
    entry = results[0] if isinstance(results, list) and len(results) == 1 else None
    entry = entry[0] if isinstance(entry, list) and entry else entry
    try:
        text = entry["result"][0]["value"]["text"][0]
    except (TypeError, KeyError, IndexError):
        text = None
    if not isinstance(text, str) or not text.strip():
        return Result(
            False, what, f"POST {url}: {detail}; no text came back for {pdf_url} (the host's log "
            "says why: journalctl -u oceanid-ml-backend)",
        )  # fmt: skip
    version = entry.get("model_version", "?")
    shown = " ".join(text.split())[:60]
    return Result(True, what, f"{detail}, {version}: {shown!r} from {pdf_url}")


def model_names(source: Path = preflight.MODEL_SOURCE) -> list[str]:
    """The models the deploy uploads: every model folder under triton-models/."""
    return sorted(
        child.name
        for child in source.iterdir()
        if child.is_dir() and not child.name.startswith((".", "__"))
    )


def _attempt(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """Run one tritonclient call; any failure is this check's failure, as one line.

    tritonclient raises its own exception for HTTP errors but lets socket errors and gevent's
    Timeout (a BaseException) through; to the operator each is simply "this check failed".
    """
    import gevent

    try:
        return call(), None
    except gevent.Timeout:
        return None, "timed out"
    except Exception as error:
        message = getattr(error, "message", None)
        text = message() if callable(message) else None
        return None, (text or _reason(error)).splitlines()[0]


def check_triton(
    target: Target, timeout: float, models: Sequence[str] | None = None
) -> Iterator[Result]:
    """Ready, every repository model ready, and one real inference that echoes its text.

    A server that answers "not ready" is still asked about each model: Triton's readiness
    covers every model, and the model lines say which one is the problem. A server that does not
    answer at all is asked nothing more, so a dead host costs one timeout, not one per check.
    """
    ready_url = target.url + TRITON_READY
    answer, detail = _get(ready_url, timeout, target.headers)
    if answer is None:
        detail += "; models and inference not checked"
    ok = answer is not None and answer.status_code == 200
    yield Result(ok, f"{target.name} Triton", f"GET {ready_url}: {detail}")
    if answer is None:
        return
    yield check_repository_closed(target, timeout)

    import tritonclient.http as triton_http

    parts = urlsplit(target.url)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    client = triton_http.InferenceServerClient(
        parts.netloc + parts.path.rstrip("/"),
        ssl=parts.scheme == "https",
        # the roots requests was told to trust (a lab CA, a TLS-inspecting proxy) apply here too
        ssl_options={"ca_certs": bundle} if bundle else None,
        connection_timeout=timeout,
        network_timeout=timeout,
    )
    try:
        models = model_names() if models is None else models
        ready: set[str] = set()
        for model in models:
            is_ready, error = _attempt(
                lambda model=model: client.is_model_ready(model, headers=target.headers)
            )
            if is_ready:
                ready.add(model)
            yield Result(
                bool(is_ready),
                f"{target.name} model {model}",
                "ready" if is_ready else (error or "not ready"),
            )
        yield _check_inference(client, target, ready)
    finally:
        client.close()


def check_repository_closed(target: Target, timeout: float) -> Result:
    """The model repository API must be refused on the public name: through it anyone could
    load a model of their own (Python that runs on the host) or unload the served ones. The
    connector's 404 (oceanid/ingress.py) or Access's 403 pass; a 200, or any answer that came
    from Triton, fails."""
    url = target.url + REPOSITORY_INDEX
    answer, detail = _get(url, timeout, target.headers, method="POST")
    refused = answer is not None and answer.status_code in REFUSED_STATUSES
    if answer is not None and not refused:
        detail += (
            "; it must be refused (404 at the connector): through it anyone can load and unload "
            "models, running their code on the host"
        )
    return Result(refused, f"{target.name} repository API refused", f"POST {url}: {detail}")


def _check_inference(client: Any, target: Target, ready: set[str]) -> Result:
    """A unique text through the model and back: proves the Python stub really executes."""
    import numpy as np
    import tritonclient.http as triton_http

    what = f"{target.name} inference {SMOKE_MODEL}"
    if SMOKE_MODEL not in ready:
        return Result(False, what, "not run: the model is not ready")
    text = f"oceanid smoke {uuid.uuid4().hex[:12]}"
    tensor = triton_http.InferInput("text", [1, 1], "BYTES")  # a batch of one document
    tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
    output = triton_http.InferRequestedOutput("response")
    started = time.monotonic()
    result, error = _attempt(
        lambda: client.infer(SMOKE_MODEL, [tensor], outputs=[output], headers=target.headers)
    )
    if error is not None:
        return Result(False, what, error)
    took = time.monotonic() - started
    try:
        (row,) = result.as_numpy("response").reshape(-1)
        answer = json.loads(row)
    except (AttributeError, TypeError, ValueError, IndexError) as exc:
        return Result(False, what, f"response is not one JSON document: {exc}")
    if isinstance(answer, dict) and "error" in answer:
        return Result(False, what, f"the model answered an error: {answer['error']}")
    if not isinstance(answer, dict) or answer.get("text") != text:
        got = answer.get("text") if isinstance(answer, dict) else answer
        return Result(False, what, f"sent {text!r}, got back {got!r}")
    return Result(
        True, what, f"text came back in {took:.2f}s ({answer.get('model')}, {answer.get('device')})"
    )


def run_checks(
    site: Site,
    *,
    overrides: dict[str, str],
    only: Kind | None,
    timeout: float,
    status_only: bool,
    say: Callable[[str], None],
    kubeconfig: Path = KUBECONFIG,
) -> list[Result]:
    """Tunnels first (they explain a URL failure), then the URLs; each line as it is known."""
    results: list[Result] = []

    def record(result: Result) -> None:
        results.append(result)
        say(result.line())

    wanted_targets = [] if status_only else targets(site, overrides, only)
    if not _settings(site).manage_dns:
        say("SKIP tunnels — manage_dns is off, so no Cloudflare API access is configured")
    elif only != "k3s":
        for result in check_tunnels(site, tunnels(site, only), timeout):
            record(result)
    api_url = _settings(site).cloudflare_api_base_url
    for target in wanted_targets:
        if api_url is not None and target.name not in overrides:
            say(
                f"SKIP {target.name} — no Cloudflare edge serves it here (cloudflare_api_base_url "
                f"is {api_url}, not Cloudflare); --url {target.name}=URL checks it another way"
            )
            continue
        if target.kind == "label":
            record(check_label(target, timeout))
            record(check_label_login(target, timeout))
        elif target.kind == "ml":
            pdf_url = _settings(site).smoke_pdf_url
            for result in check_ml_backend(target, timeout, str(pdf_url) if pdf_url else None, say):
                record(result)
        elif target.service is not None and target.service.kind != "triton":
            record(check_http_service(target, timeout))
        else:
            for result in check_triton(target, timeout):
                record(result)
    if not status_only and only in (None, "k3s"):
        for result in check_nodes(site, kubeconfig, timeout, say):
            record(result)
    return results


def _node_result(name: str, node: Any, labels: dict[str, str], taints: list[str]) -> Result:
    """One node: Ready, and the labels and taints its host's settings give it."""
    what = f"k3s node {name}"
    if node is None:
        return Result(False, what, "not a node of the cluster (has its k3s joined?)")
    conditions = {c.type: c for c in (node.status.conditions or [])}
    ready = conditions.get("Ready")
    problems = []
    if ready is None or ready.status != "True":
        why = f" ({ready.reason})" if ready is not None and ready.reason else ""
        problems.append(f"NOT Ready{why}")
    have_labels = node.metadata.labels or {}
    problems += [
        f"label {key}={value} missing" for key, value in labels.items()
        if have_labels.get(key) != value
    ]  # fmt: skip
    have_taints = {taint_text(t.key, t.value, t.effect) for t in (node.spec.taints or [])}
    problems += [f"taint {taint} missing" for taint in taints if taint not in have_taints]
    version = node.status.node_info.kubelet_version if node.status.node_info else "?"
    state = f"Ready, {version}" if not problems else "; ".join(problems)
    if labels or taints:
        state += f"; wants {len(labels)} label(s), {len(taints)} taint(s)"
    return Result(not problems, what, state)


def check_nodes(
    site: Site, kubeconfig: Path, timeout: float, say: Callable[[str], None]
) -> Iterator[Result]:
    """Every k3s host of the inventory is a Ready node with its labels and taints.

    The API is reached as an operator reaches it: the kubeconfig ``make kubeconfig`` wrote, whose
    server is the local end of ``make tunnel``. Without either the check is ``SKIP`` (not a pass)
    and its line says which to run; an API that does not answer through an open tunnel fails.
    """
    wanted = sorted(
        (plan for plan in site.hosts.values() if plan.roles & {K3S_SERVERS, K3S_AGENTS}),
        key=lambda plan: plan.name,
    )
    if not wanted:
        return
    what = "k3s nodes"
    if not kubeconfig.exists():
        say(f"SKIP {what} — no {kubeconfig}: run `make kubeconfig`, then `make tunnel`")
        return
    import urllib3
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        api = config.new_client_from_config(config_file=str(kubeconfig))
    except (ConfigException, OSError, ValueError) as error:
        yield Result(False, what, f"cannot use {kubeconfig}: {error}; run `make kubeconfig`")
        return
    api.configuration.retries = 0
    server = api.configuration.host
    try:
        with api:
            nodes = client.CoreV1Api(api).list_node(_request_timeout=timeout).items
    except ApiException as error:
        yield Result(False, what, f"the API at {server} answered {error.status} {error.reason}")
        return
    except (urllib3.exceptions.HTTPError, OSError) as error:
        reason = _reason(error)
        local = urlsplit(server).hostname in ("127.0.0.1", "localhost", "::1")
        if local and reason == "Connection refused":  # nothing listens: the tunnel is not open
            say(f"SKIP {what} — nothing listens on {server}: run `make tunnel`")
        else:  # the tunnel answers but the API behind it does not, or a remote API is down
            yield Result(False, what, f"the API at {server} does not answer ({reason})")
        return
    by_name = {node.metadata.name: node for node in nodes}
    for plan in wanted:
        name = short_name(plan.name)
        host = plan.settings.host(name)
        k3s = getattr(host, "k3s", None)
        labels = dict(getattr(k3s, "labels", None) or {})
        taints = list(getattr(k3s, "taints", None) or [])
        yield _node_result(name, by_name.get(name), labels, taints)


# -- command line ---------------------------------------------------------------------------------


def check_record(line: str) -> dict[str, str]:
    """A check's printed line as the object `--json` prints: `PASS label.boathou.se /health —
    200` is {"status": "pass", "check": "label.boathou.se /health", "detail": "200"}."""
    status, _, rest = line.partition(" ")
    if status not in ("PASS", "FAIL", "SKIP"):  # a note, not a check
        return {"status": "info", "check": "", "detail": line}
    what, _, detail = rest.partition(" — ")
    return {"status": status.lower(), "check": what, "detail": detail}


def _parser() -> argparse.ArgumentParser:
    parser = exitcodes.inventory_parser(
        prog="python -m oceanid.smoke",
        description="Check the public URLs and the tunnels from outside: exit 0 all passed, "
        "1 a check failed, 3 nothing checked (bad inventory, settings, secrets or arguments).",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per check on stdout (JSON lines), for monitoring",
    )
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="send a public name's checks to URL instead (gpu.boathou.se=http://127.0.0.1:18000)",
    )
    parser.add_argument(
        "--only",
        choices=["label", "gpu", "ml", "k3s"],
        help="only the label, gpu, ml (ML backend) or k3s node checks",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=KUBECONFIG,
        help="kubeconfig for the node checks (default: cluster/kubeconfig.yaml, make kubeconfig)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds each request may take (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--status-only",
        action="store_true",
        help="only each tunnel's status and connections, from the Cloudflare API (make status)",
    )
    return parser


def _patch_for_gevent() -> None:
    """Patch the stdlib for gevent before anything loads ssl.

    load_inventory imports pyinfra's CLI, which monkey-patches the stdlib on import; done after
    requests or the Cloudflare SDK have loaded ssl, that patch breaks TLS in subtle ways (gevent
    issue 1016) and warns. Patching first, as pyinfra's own CLI does, makes its patch a no-op.
    tritonclient runs on gevent too, so the checks themselves are at home in a patched process.
    """
    from gevent import monkey

    monkey.patch_all()


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when every check passed, 1 when one failed, 3 when nothing could be checked
    (oceanid/exitcodes.py). With --json, each check is one JSON object on stdout.

    Meant for a process of its own: like pyinfra's CLI, it patches the stdlib for gevent.
    """
    args = _parser().parse_args(argv)
    _patch_for_gevent()
    prog = "status" if args.status_only else "smoke"
    if args.timeout <= 0:
        print(f"{prog}: --timeout must be positive", file=sys.stderr)
        return exitcodes.USAGE
    try:
        site = preflight.check(
            preflight.views_from_inventory(preflight.load_inventory(args.inventory))
        )
    except preflight.PreflightError as exc:
        for line in exc.problems:
            print(f"{prog}: {line}", file=sys.stderr)
        print(f"{prog}: {len(exc.problems)} problem(s) in {args.inventory}", file=sys.stderr)
        return exitcodes.USAGE
    except SystemExit as exc:  # an inventory that refuses to load (the lab while it is down)
        print(f"{prog}: {args.inventory}: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if args.status_only and not _settings(site).manage_dns:
        print(
            f"{prog}: manage_dns is off, so no Cloudflare API access is configured",
            file=sys.stderr,
        )
        return exitcodes.USAGE

    def say(line: str) -> None:
        print(json.dumps(check_record(line)) if args.json else line, flush=True)

    try:
        overrides = parse_overrides(args.url, _base(site))
        results = run_checks(
            site,
            overrides=overrides,
            only=args.only,
            timeout=args.timeout,
            status_only=args.status_only,
            say=say,
            kubeconfig=args.kubeconfig,
        )
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if not results:
        print(f"{prog}: nothing to check in {args.inventory}", file=sys.stderr)
        return exitcodes.USAGE
    failed = sum(not result.ok for result in results)
    summary = f"{prog}: {len(results) - failed} passed, {failed} failed"
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return exitcodes.FAILED if failed else exitcodes.OK


if __name__ == "__main__":
    raise SystemExit(main())
