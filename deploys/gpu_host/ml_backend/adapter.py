"""Label Studio's ML-backend protocol in front of the host's Triton: a task's PDF in, its text out.

Label Studio 1.23.2 calls an ML backend as label_studio/ml/api_connector.py (MLApi) says, and
reads the answers as ml/models.py and ml/serializers.py do:

- `GET /health`: any 2xx JSON answer is healthy (MLApi._request: raise_for_status, then
  .json()); a 401 makes the backend form say the credentials are wrong. Basic auth is sent on
  every call, health included (BaseHTTPAPI._prepare_kwargs), so every endpoint requires it.
- `POST /setup` {project, schema (the label config), hostname, access_token, extra_params}:
  answers {model_version}; an error status marks the backend ERROR. Label Studio keeps only
  `str(HTTPError)` of a failed call ("<code> Client Error: <reason> for url: …"), never the
  body, so an error's words travel in the HTTP reason phrase as well as in {"error": …}.
- `POST /predict` {tasks, project, label_config, params: {login, password, context}}: answers
  {"results": [...]}, one entry per task, in order (models.py
  _get_predictions_from_ml_backend). An entry is a prediction {result, score, model_version}
  or a list of them; an empty list gives that task no prediction while the others keep theirs
  (a shorter list would make Label Studio drop or re-request the whole batch).
- `POST /webhook`: Label Studio registers `<url>/webhook` for every event when it creates the
  backend (models.py create_ml_webhook); this adapter does not train, so it acknowledges.

A prediction is one `textarea` result holding the document's text, addressed to the label
config's first <TextArea> (`from_name`) and its `toName`. The PDF is `data[<pdf_field>]`: an
http(s) URL, or a path on Label Studio (`/data/upload/…`, `/data/local-files/…`, any path
starting with "/"), fetched from Label Studio with its API token; the token goes to Label
Studio's own origin only, and never along a redirect.

Tasks that arrive together go to Triton together: one request per batch of up to `batch`
documents (capped by the model's max_batch_size, read from Triton), its pdf_data a [B, 1]
tensor whose rows come back as B response documents in the same order; a row holding
{"error": ...} is that document's failure alone. A batch goes out as soon as its files are in,
while the next ones download; at most as many requests are in flight as the model has
instances (one per GPU on a multi-GPU host), the others wait their turn.

Stdlib http.server (ThreadingHTTPServer) and tritonclient[http] only: the host venv pins just
tritonclient with hashes, and four small endpoints need no framework. Run:

    python3 adapter.py --config /etc/oceanid-ml-backend/config.json

The config (JSON, not secret) is described by Config; the credentials file it names (JSON,
mode 0600 or stricter, owned by the service user) holds {"user", "password"} for basic auth
and optionally {"label_studio_token"}.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import logging
import os
import stat
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

log = logging.getLogger("oceanid-ml-backend")

MAX_BODY_BYTES = 64 * 1024 * 1024  # a /predict body of many tasks' data, never their files
REALM = "oceanid-ml-backend"


class ConfigError(Exception):
    """The config or credentials file is wrong; the message names the key and the fix."""


class SetupError(Exception):
    """The project cannot be served (no <TextArea>, Triton down): said to Label Studio."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class DocumentError(Exception):
    """Triton answered the batch, and this document's row holds the model's {"error"}."""


@dataclass(frozen=True)
class Config:
    """The adapter's settings; every key of the JSON file is a field here.

    + listen_host / listen_port: where to listen (127.0.0.1:9090; the node tunnel publishes it)
    + triton_url: the host's Triton HTTP endpoint (http://127.0.0.1:8000)
    + model: the Triton model that reads a PDF (docling_granite_python)
    + label_studio_url: Label Studio's base URL for `/data/...` paths; empty: the `hostname`
      Label Studio sends in /setup
    + pdf_field: the task data key that holds the PDF's URL (pdf)
    + batch: how many documents of one /predict go to Triton in one request (8; capped by
      the model's max_batch_size); also how many files are fetched at once
    + fetch_timeout_s / infer_timeout_s / triton_connect_timeout_s: limits on outbound calls
    + max_pdf_bytes: a larger file is refused (100 MiB)
    + credentials_file: the 0600 JSON file with the basic-auth user and password
    """

    credentials_file: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 9090
    triton_url: str = "http://127.0.0.1:8000"
    model: str = "docling_granite_python"
    label_studio_url: str = ""
    pdf_field: str = "pdf"
    batch: int = 8
    fetch_timeout_s: float = 30.0
    infer_timeout_s: float = 300.0
    triton_connect_timeout_s: float = 5.0
    max_pdf_bytes: int = 100 * 1024 * 1024

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> Config:
        """Check every key's type and range; a wrong one is named with what to do."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: must be a JSON object of settings")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}"
            )
        if "credentials_file" not in data:
            raise ConfigError(f"{source}: credentials_file is missing; give the 0600 file's path")
        for name, value in data.items():
            expected = {"int": int, "float": (int, float), "str": str}[str(known[name].type)]
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ConfigError(f"{source}: {name} must be a {known[name].type}, not {value!r}")
        config = cls(**data)
        for name in ("batch", "listen_port", "max_pdf_bytes"):
            if getattr(config, name) < 1:
                raise ConfigError(f"{source}: {name} must be at least 1")
        if config.listen_port > 65535:
            raise ConfigError(f"{source}: listen_port must be at most 65535")
        for name in ("fetch_timeout_s", "infer_timeout_s", "triton_connect_timeout_s"):
            if getattr(config, name) <= 0:
                raise ConfigError(f"{source}: {name} must be a positive number of seconds")
        for name in ("triton_url", "label_studio_url"):
            value = getattr(config, name)
            if value and urllib.parse.urlsplit(value).scheme not in ("http", "https"):
                raise ConfigError(f"{source}: {name} must be an http:// or https:// URL")
        if not config.triton_url:
            raise ConfigError(f"{source}: triton_url must not be empty")
        if not config.pdf_field or not config.model:
            raise ConfigError(f"{source}: pdf_field and model must not be empty")
        return config

    @classmethod
    def load(cls, path: str) -> Config:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read the config: {exc}") from exc
        return cls.from_dict(data, path)


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)
    label_studio_token: str = field(default="", repr=False)

    @classmethod
    def load(cls, path: str) -> Credentials:
        """Read the file, refusing one that others could read: it holds the password."""
        try:
            mode = os.stat(path).st_mode
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read the credentials file: {exc}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{path}: mode {stat.S_IMODE(mode):04o} lets others read the password; "
                "make it 0600 (chmod 600)"
            )
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) and data.get(k) for k in ("user", "password")
        ):
            raise ConfigError(f"{path}: must be a JSON object with non-empty user and password")
        extra = set(data) - {"user", "password", "label_studio_token"}
        if extra:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(extra))}")
        token = data.get("label_studio_token", "")
        if not isinstance(token, str):
            raise ConfigError(f"{path}: label_studio_token must be a string")
        return cls(data["user"], data["password"], token)

    def accepts(self, header: str | None) -> bool:
        """Whether an Authorization header carries this user and password.

        Both parts are always compared, each in constant time, so the answer's timing says
        nothing about which part, or how much of it, was right.
        """
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        user_ok = hmac.compare_digest(user, self.user.encode())
        password_ok = hmac.compare_digest(password, self.password.encode())
        return bool(sep) and user_ok and password_ok


@dataclass(frozen=True)
class Target:
    """Where a project's prediction goes: its first <TextArea> and the object it names."""

    from_name: str
    to_name: str


def text_area(label_config: str) -> Target:
    """The label config's first <TextArea> (document order) and its toName.

    The config comes from Label Studio over basic auth; Python's expat refuses entity
    amplification, and the parser resolves no external entities.
    """
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as exc:
        raise SetupError(422, f"the label config is not valid XML: {exc}") from exc
    for element in root.iter("TextArea"):
        name = element.get("name", "").strip()
        to_name = element.get("toName", "").split(",")[0].strip()
        if not name or not to_name:
            raise SetupError(422, "the label config's first <TextArea> needs name and toName")
        return Target(name, to_name)
    raise SetupError(
        422,
        "the label config has no <TextArea>: add one (name, toName) to receive the document text",
    )


@dataclass
class Project:
    """What Label Studio told us in /setup about one project (kept in memory only)."""

    hostname: str = ""
    access_token: str = field(default="", repr=False)


class Adapter:
    """The protocol's logic, independent of HTTP: setup, predict, health."""

    def __init__(self, config: Config, credentials: Credentials):
        self.config = config
        self.credentials = credentials
        self._projects: dict[str, Project] = {}
        self._lock = threading.Lock()

    # --- Triton -------------------------------------------------------------------------

    def _client(self) -> triton_http.InferenceServerClient:
        """A client for this call alone: tritonclient's HTTP client runs on gevent, whose
        hub belongs to one OS thread, and every request here has a thread of its own."""
        return triton_http.InferenceServerClient(
            urllib.parse.urlsplit(self.config.triton_url).netloc,
            ssl=self.config.triton_url.startswith("https://"),
            connection_timeout=self.config.triton_connect_timeout_s,
            network_timeout=self.config.infer_timeout_s,
        )

    def model_version(self) -> str:
        """`<model>@<version>` of the version Triton serves now; SetupError when not ready."""
        client = self._client()
        try:
            metadata = client.get_model_metadata(self.config.model)
            versions = sorted(metadata.get("versions") or [], key=lambda v: int(v))
            if not versions or not client.is_model_ready(self.config.model):
                raise SetupError(503, f"Triton's model {self.config.model} is not ready")
        except (InferenceServerException, OSError) as exc:  # OSError: refused, timed out
            raise SetupError(
                503, f"Triton at {self.config.triton_url} cannot serve {self.config.model}: {exc}"
            ) from exc
        finally:
            client.close()
        return f"{self.config.model}@{versions[-1]}"

    def health(self) -> dict[str, Any]:
        version = self.model_version()
        return {"status": "UP", "model_class": "TritonDocling", "model_version": version}

    def _batching(self) -> tuple[int, int]:
        """(documents per request, requests in flight) from the config Triton serves: `batch`
        capped by max_batch_size, which Triton enforces; one request per model instance."""
        client = self._client()
        try:
            served = client.get_model_config(self.config.model)
        finally:
            client.close()
        bound = served.get("max_batch_size") or 0
        if not isinstance(bound, int) or bound < 1:
            raise ValueError(
                f"Triton's model {self.config.model} declares max_batch_size {bound!r}: it takes "
                "no batch of documents, and this adapter sends pdf_data as [B, 1]"
            )
        instances = sum(
            max(1, int(group.get("count") or 1)) * max(1, len(group.get("gpus") or []))
            for group in served.get("instance_group") or [{}]
        )
        return min(self.config.batch, bound), instances

    def infer(self, pdfs: list[bytes]) -> list[dict[str, Any] | Exception]:
        """One batch in one Triton request: each document's response, or the error that kept
        it from one, in order. A row with {"error"} fails that document alone; a refused
        request, every document of its batch. A client of its own, so any thread may call it.
        """
        tensor = triton_http.InferInput("pdf_data", [len(pdfs), 1], "BYTES")
        rows = np.array([[pdf] for pdf in pdfs], dtype=np.object_).reshape(len(pdfs), 1)
        tensor.set_data_from_numpy(rows, binary_data=True)
        output = triton_http.InferRequestedOutput("response", binary_data=True)
        client = self._client()
        try:
            result = client.infer(
                self.config.model,
                [tensor],
                outputs=[output],
                timeout=int(self.config.infer_timeout_s * 1_000_000),
            )
            answers = result.as_numpy("response").reshape(-1)
            if len(answers) != len(pdfs):
                raise ValueError(f"{len(answers)} response rows for a batch of {len(pdfs)}")
            version = result.get_response().get("model_version", "")
            bodies = [json.loads(answer) for answer in answers]
        except (InferenceServerException, OSError, ValueError, LookupError, TypeError) as exc:
            return [exc] * len(pdfs)
        finally:
            client.close()
        return [_document(body, version) for body in bodies]

    # --- Label Studio -------------------------------------------------------------------

    def setup(self, body: dict[str, Any]) -> dict[str, Any]:
        text_area(str(body.get("schema") or ""))  # says what is missing before anything else
        project = str(body.get("project") or "")
        with self._lock:
            self._projects[project] = Project(
                str(body.get("hostname") or ""), str(body.get("access_token") or "")
            )
        return {"model_version": self.model_version()}

    def _label_studio(self, project: str) -> tuple[str, str]:
        """(base URL, token) for files on Label Studio: the config's, else /setup's."""
        with self._lock:
            known = self._projects.get(project, Project())
        base = (self.config.label_studio_url or known.hostname).rstrip("/")
        token = self.credentials.label_studio_token or known.access_token
        return base, token

    def fetch(self, url: str, project: str) -> bytes:
        """The file at a task's URL; a path is on Label Studio, fetched with its token."""
        base, token = self._label_studio(project)
        if url.startswith("/") and not url.startswith("//"):
            if not base:
                raise ValueError(
                    f"{url} is a Label Studio path but no Label Studio URL is known "
                    "(set label_studio_url in the config)"
                )
            url = base + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url[:200]!r} is neither an http(s) URL nor a Label Studio path")
        request = urllib.request.Request(url, headers={"User-Agent": REALM})
        if token and base and _origin(url) == _origin(base):
            # unredirected: a redirect elsewhere must not carry the token along
            request.add_unredirected_header("Authorization", f"Token {token}")
        limit = self.config.max_pdf_bytes
        with urllib.request.urlopen(request, timeout=self.config.fetch_timeout_s) as answer:
            data = answer.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"the file is larger than max_pdf_bytes ({limit})")
        return data

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        """One entry per task, in order; a task whose PDF fails gets [] and one log line."""
        target = text_area(str(body.get("label_config") or ""))
        project = str(body.get("project") or "")
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise SetupError(400, "tasks must be a list")
        field_name = self.config.pdf_field
        urls: dict[int, str] = {}
        for index, task in enumerate(tasks):
            data = task.get("data") if isinstance(task, dict) else None
            url = data.get(field_name) if isinstance(data, dict) else None
            if isinstance(url, str) and url:
                urls[index] = url
            else:
                log.warning("task %s: no prediction: data.%s holds no URL", _id(task), field_name)
        answers: dict[int, dict[str, Any] | Exception] = {}
        size, parallel = 1, 1
        try:
            if urls:
                size, parallel = self._batching()
        except (InferenceServerException, OSError, ValueError, TypeError) as exc:
            answers, urls = dict.fromkeys(urls, exc), {}  # Triton cannot take them: none fetched
        # Files are fetched `batch` at a time (each waits on the network, not on this machine);
        # a batch goes to Triton as soon as its files are in, while the next ones download.
        with (
            ThreadPoolExecutor(max_workers=self.config.batch) as fetcher,
            ThreadPoolExecutor(max_workers=parallel) as sender,
        ):
            fetched = {i: fetcher.submit(self.fetch, url, project) for i, url in urls.items()}
            sent: list[tuple[list[int], Future[list[dict[str, Any] | Exception]]]] = []

            def send(batch: dict[int, bytes]) -> None:
                sent.append((list(batch), sender.submit(self.infer, list(batch.values()))))

            batch: dict[int, bytes] = {}
            for index, future in fetched.items():
                try:
                    batch[index] = future.result()
                except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
                    log.warning(
                        "task %s: no prediction: cannot fetch %s: %s",
                        _id(tasks[index]), urls[index], exc,
                    )  # fmt: skip
                if len(batch) == size:
                    send(batch)
                    batch = {}
            if batch:
                send(batch)
            for indexes, infer in sent:
                answers.update(zip(indexes, infer.result(), strict=True))
        results: list[Any] = []
        versions = set()
        for index, task in enumerate(tasks):
            answer = answers.get(index)
            if isinstance(answer, Exception):
                log.warning("task %s: no prediction: Triton: %s", _id(task), answer)
            if not isinstance(answer, dict):
                results.append([])
                continue
            version = f"{self.config.model}@{answer['model_version']}"
            versions.add(version)
            results.append(prediction(target, answer, version))
        response: dict[str, Any] = {"results": results}
        if len(versions) == 1:
            response["model_version"] = versions.pop()
        return response


def _document(body: Any, version: str) -> dict[str, Any] | Exception:
    """One response row of docling_granite_python: its document, or the error it carries."""
    if not isinstance(body, dict) or "error" in body:
        error = body.get("error") if isinstance(body, dict) else body
        return DocumentError(f"the model could not read it: {error}")
    return {**body, "model_version": version}


def prediction(target: Target, answer: dict[str, Any], version: str) -> dict[str, Any]:
    """A Label Studio prediction: one textarea result with the document's text."""
    result = {
        "from_name": target.from_name,
        "to_name": target.to_name,
        "type": "textarea",
        "value": {"text": [str(answer.get("text", ""))]},
    }
    out: dict[str, Any] = {"result": [result], "model_version": version}
    score = answer.get("score")
    if isinstance(score, int | float) and not isinstance(score, bool):
        out["score"] = float(score)
    return out


def _id(task: Any) -> Any:
    return task.get("id") if isinstance(task, dict) else None


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, f"{(parts.hostname or '').lower()}:{port}"


def _reason(message: str) -> str:
    """An HTTP reason phrase: one line of printable Latin-1, which Label Studio shows."""
    line = " ".join(message.split())
    return line.encode("latin-1", "replace").decode("latin-1")[:300]


def handler(adapter: Adapter) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to one Adapter."""
    routes: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
        ("GET", "/health"): lambda _body: adapter.health(),
        ("GET", "/"): lambda _body: adapter.health(),
        ("POST", "/setup"): adapter.setup,
        ("POST", "/predict"): adapter.predict,
        ("POST", "/webhook"): lambda _body: {"status": "ok"},
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = REALM
        # An answer goes out as two writes, headers then body. On a kept-alive connection (the
        # node tunnel's cloudflared pools its connections to us) Nagle holds the body until the
        # client ACKs the headers, which it delays by 40 ms: every call would wait that long.
        disable_nagle_algorithm = True

        def _answer(self, status: int, body: dict[str, Any], reason: str | None = None) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status, _reason(reason) if reason else None)
            if status == 401:
                self.send_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _route(self, method: str) -> None:
            path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = MAX_BODY_BYTES + 1  # unreadable: refused below, unread
            if not adapter.credentials.accepts(self.headers.get("Authorization")):
                self.close_connection = True  # the body, if any, stays unread
                self._answer(401, {"error": "basic auth required"}, "Unauthorized")
                return
            if not 0 <= length <= MAX_BODY_BYTES:
                self.close_connection = True
                self._answer(413, {"error": "the body's length is unreadable or too large"})
                return
            raw = self.rfile.read(length) if length else b""
            route = routes.get((method, path))
            if route is None:
                self._answer(404, {"error": f"no {method} {path}"})
                return
            try:
                body = json.loads(raw) if raw else {}
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
            except ValueError as exc:
                self._answer(400, {"error": f"bad JSON body: {exc}"}, "bad JSON body")
                return
            try:
                self._answer(200, route(body))
            except SetupError as exc:
                log.warning("%s %s: %s", method, path, exc)
                self._answer(exc.status, {"error": str(exc)}, str(exc))
            except Exception as exc:  # an unforeseen bug answers 500, the server lives on
                log.exception("%s %s failed", method, path)
                self._answer(500, {"error": f"{type(exc).__name__}: {exc}"})

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.info("%s %s", self.address_string(), format % args)

    return Handler


class Server(ThreadingHTTPServer):
    """A thread per connection. The listen backlog is http.server's 5 otherwise: a sixth
    connection arriving at once has its SYN dropped and waits a second to retry."""

    request_queue_size = 128
    daemon_threads = True


def serve(config: Config, credentials: Credentials) -> Server:
    """A bound server (not yet serving); the caller runs serve_forever."""
    return Server((config.listen_host, config.listen_port), handler(Adapter(config, credentials)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the JSON config file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = Config.load(args.config)
        credentials = Credentials.load(config.credentials_file)
    except ConfigError as exc:
        print(f"oceanid-ml-backend: {exc}", file=sys.stderr)
        return 2
    server = serve(config, credentials)
    log.info("listening on %s:%d, Triton %s", config.listen_host, config.listen_port, config.model)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
