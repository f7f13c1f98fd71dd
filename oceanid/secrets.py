"""Load the deploy's secrets from Pulumi ESC, the environment, or a local file.

Production keeps secrets in the ESC environment `default/oceanid-cluster` under
`pulumiConfig` as `oceanid-cluster:<key>`; the lab and CI have no ESC and use a file
named by `SECRETS_FILE`; an operator may override one value with an environment
variable. Keys have been written both camelCase and snake_case over the stack's life,
so lookups compare keys with case and underscores ignored.

The ESC environment is shared with the Pulumi stack, whose config also holds booleans,
numbers and lists (`enableNodeProvisioning: true`). `esc env open --format json` prints
every value as plain JSON (secrets decrypted, no wrapper), so only the keys the deploy
reads must be strings; anything else in the environment is none of its business.

Values are held in `Secrets` and never printed: its `repr` lists key names only, and
every error names the key and the source, not the value.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

from oceanid.settings import has_control

ESC_PREFIX = "oceanid-cluster:"

#: Every key the deploy may read, as design.md §3 names it.
KNOWN_KEYS = (
    "cloudflareAccountId",
    "cloudflareZoneId",
    "cloudflareApiToken",
    "cloudflareTunnelId",
    "cloudflareTunnelToken",
    "cloudflareNodeTunnelId",
    "cloudflareNodeTunnelToken",
    "cloudflareNodeTunnelHostname",
    "cloudflareNodeTunnelTarget",
    "k3s_token",
    "k3sAgentToken",  # design.md §7: optional; the first server generates one without it
    "labelStudioDbUrl",
    "labelStudioApiToken",
    "labelStudioAdminEmail",
    "labelStudioAdminPassword",
    "hfAccessToken",
    # design.md §7: the Cloudflare Access service token, with `access: service_token` on a GPU host
    "cloudflareAccessClientId",
    "cloudflareAccessClientSecret",
    # design.md §7: the ML-backend adapter's HTTP basic auth (deploys/gpu_host/ml_backend)
    "mlBackendUser",
    "mlBackendPassword",
    # design.md §7: the object store of Label Studio's backups and k3s's etcd snapshots
    "backupS3Endpoint",
    "backupS3Bucket",
    "backupS3AccessKeyId",
    "backupS3SecretAccessKey",
)

SOURCES = ("esc", "env", "file")

#: Keys whose value is a tunnel credential. oceanid.tunnel_credentials reads it in any of its
#: shapes, two of which span lines (base64 wrapped at 76 columns, the credentials.json text),
#: and the deploy writes what it parsed, never the value as given: only these may hold
#: newlines. A host's `tunnel_credential_key` names one more.
CREDENTIAL_KEYS = ("cloudflareTunnelToken", "cloudflareNodeTunnelToken")

_WHERE = {"esc": "ESC", "env": "the environment", "file": "the secrets file"}


class SecretsError(RuntimeError):
    """A source could not be read; the message says which and what to do."""


def canonical(key: str) -> str:
    """`cloudflare_api_token`, `cloudflareApiToken` and `CLOUDFLARE_API_TOKEN` are one key."""
    return key.replace("_", "").replace("-", "").lower()


def env_name(key: str) -> str:
    """The environment variable that carries `key`: `cloudflareApiToken` -> CLOUDFLARE_API_TOKEN."""
    out = []
    for i, char in enumerate(key):
        if char.isupper() and i and key[i - 1] != "_":
            out.append("_")
        out.append(char.upper())
    return "".join(out)


@dataclass
class Secrets:
    """Secret values by canonical key, with the source each came from."""

    values: dict[str, str] = field(default_factory=dict, repr=False)
    origins: dict[str, str] = field(default_factory=dict)
    #: canonical key -> the later sources that also held it and lost (an override made
    #: visible: `make check` names each, never its value)
    shadowed: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return self.values.get(canonical(key))

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and canonical(key) in self.values

    def origin(self, key: str) -> str | None:
        return self.origins.get(canonical(key))

    def all_values(self) -> list[str]:
        """Every secret value, for redaction filters."""
        return [v for v in self.values.values() if v]

    def line_problems(self, keys: Iterable[str], *, multiline: Iterable[str] = ()) -> list[str]:
        """One problem per key of `keys` whose value holds a newline or another control
        character, unless it is a tunnel credential (CREDENTIAL_KEYS, and the keys of
        `multiline`, those the hosts name); no value is echoed.

        Each of these values reaches a Kubernetes Secret, a token file, an env file or an
        HTTP header as it is: a token stored as `abc\\n` is not the token `abc` there, and a
        newline inside one ends a line of an env file. Such a value is refused, not
        stripped: the deploy never quietly makes a password or a token other than the one
        the operator stored, and the message says where it came from and how to store it
        without (a YAML `|` block is the usual way a trailing newline gets in).
        """
        seen = {canonical(k) for k in (*CREDENTIAL_KEYS, *multiline)}
        problems = []
        for key in keys:
            value = self.get(key)
            if canonical(key) in seen or value is None or not has_control(value):
                continue
            seen.add(canonical(key))
            origin = self.origin(key) or "its source"
            what = (
                "ends in a newline"
                if not has_control(value.removesuffix("\n"))
                else "holds a newline or another control character"
            )
            how = " (in YAML: a quoted string, or |- rather than |)" if origin == "file" else ""
            problems.append(
                f"{key}: {what} (from {_WHERE.get(origin, origin)}); a secret the deploy copies "
                f"into files and Secrets must be one line without control characters: store "
                f"it without{how}"
            )
        return problems


def _normalise(
    mapping: Mapping[str, object], origin: str, wanted: Iterable[str] | None = None
) -> dict[str, str]:
    """String values by canonical key. A value that is not a string (or a number) stops the
    run only for a key in `wanted`; the stack's own flags and lists are passed over."""
    wanted_keys = None if wanted is None else {canonical(k) for k in wanted}
    out: dict[str, str] = {}
    for key, value in mapping.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue  # an empty value is an unset one
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            if wanted_keys is None or canonical(str(key)) in wanted_keys:
                raise SecretsError(
                    f"{origin}: key {key} holds a {type(value).__name__}; secrets are "
                    "strings: store it as a quoted string"
                )
            continue
        out[canonical(str(key))] = str(value)
    return out


def read_esc(
    environment: str,
    *,
    keys: Iterable[str] = KNOWN_KEYS,
    esc_binary: str = "esc",
    timeout: float = 60,
) -> dict[str, str]:
    """Open the ESC environment with the `esc` CLI and return its `pulumiConfig` values.

    Only `keys` must hold strings; the stack's other config (flags, lists) is left out."""
    binary = shutil.which(esc_binary)
    if binary is None:
        raise SecretsError(
            f"secrets: the Pulumi ESC CLI `{esc_binary}` is not on PATH. Install it and run "
            "`esc login`, or leave ESC out (secret_sources: [env, file]) and provide secrets "
            "through environment variables or SECRETS_FILE"
        )
    try:
        done = subprocess.run(
            [binary, "env", "open", environment, "--format", "json"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SecretsError(
            f"secrets: `esc env open {environment}` did not answer in {timeout:.0f}s"
        ) from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
        hint = " (run `esc login` first)" if "login" in reason.lower() or "auth" in reason else ""
        raise SecretsError(
            f"secrets: `esc env open {environment}` failed with exit {done.returncode}: "
            f"{reason}{hint}"
        )
    try:
        document = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SecretsError(f"secrets: `esc env open {environment}` did not print JSON") from None
    config = document.get("pulumiConfig") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise SecretsError(
            f"secrets: ESC environment {environment} has no pulumiConfig object; "
            f"expected values under pulumiConfig as {ESC_PREFIX}<key>"
        )
    stripped = {
        key.removeprefix(ESC_PREFIX): value for key, value in config.items() if isinstance(key, str)
    }
    return _normalise(stripped, f"ESC {environment}", keys)


def read_env(keys: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Values of `keys` from the environment, by their exact or upper-snake names."""
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for key in keys:
        for name in (key, env_name(key)):
            if environ.get(name):
                out[canonical(key)] = environ[name]
                break
    return out


def read_file(
    path: str | os.PathLike[str], *, keys: Iterable[str] = KNOWN_KEYS, name: str = "SECRETS_FILE"
) -> dict[str, str]:
    """A YAML or JSON mapping of ESC key names to values (the lab's source).

    `name` says where the path came from (the variable or the `secrets_file` setting), so
    an error points at what to change. As in ESC, only `keys` must hold strings."""
    file = Path(path).expanduser()
    try:
        text = file.read_text()
        mode = file.stat().st_mode & 0o777
    except OSError as exc:
        raise SecretsError(f"secrets: {name} {file} cannot be read: {exc.strerror}") from None
    if mode & 0o077:
        raise SecretsError(
            f"secrets: {name} {file} is mode {mode:04o}, readable by others; "
            f"run `chmod 600 {file}` (nothing was read from it)"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SecretsError(f"secrets: {name} {file} is not YAML or JSON{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SecretsError(f"secrets: {name} {file} must hold a mapping of key: value")
    if isinstance(data.get("pulumiConfig"), dict):
        data = {k.removeprefix(ESC_PREFIX): v for k, v in data["pulumiConfig"].items()}
    return _normalise(data, f"{name} {file}", keys)


def load(
    *,
    sources: Iterable[str],
    esc_environment: str,
    environ: Mapping[str, str] | None = None,
    keys: Iterable[str] = KNOWN_KEYS,
    secrets_file: str | None = None,
) -> Secrets:
    """Merge the sources; the first source in `sources` that has a key wins. The default
    order (group_data: env, esc, file) makes an environment variable an explicit override of
    one value for one run; `Secrets.shadowed` records every value that lost.

    The file source reads SECRETS_FILE when it is set, else the `secrets_file` setting: a
    site (the lab) names its own file, and an operator can still point one run elsewhere."""
    environ = os.environ if environ is None else environ
    keys = list(keys)
    secrets = Secrets()
    for source in sources:
        if source == "esc":
            found = read_esc(esc_environment, keys=keys)
        elif source == "env":
            found = read_env(keys, environ)
        elif source == "file":
            found = {}
            if environ.get("SECRETS_FILE"):
                found = read_file(environ["SECRETS_FILE"], keys=keys)
            elif secrets_file:
                found = read_file(secrets_file, keys=keys, name="secrets_file")
        else:
            raise SecretsError(f"secret_sources: unknown source {source!r}; use {SOURCES}")
        for key, value in found.items():
            if key not in secrets.values:
                secrets.values[key] = value
                secrets.origins[key] = source
            elif value != secrets.values[key]:
                secrets.shadowed.setdefault(key, []).append(source)
    return secrets


def override_lines(secrets: Secrets, keys: Iterable[str]) -> list[str]:
    """One line per key of `keys` whose value came from one source while a later source held
    another (with the default order, an environment variable over ESC): an override is
    explicit and wins, and is said, by name only."""
    lines = []
    for key in dict.fromkeys(keys):
        lost = secrets.shadowed.get(canonical(key))
        if lost:
            origin = secrets.origin(key) or "?"
            where = _WHERE.get(origin, origin)
            if origin == "env":
                where += f" ({env_name(key)})"
            others = " and ".join(_WHERE.get(o, o) for o in lost)
            lines.append(f"{key}: the value from {where} wins over {others}'s")
    return lines


DB_URL_SHAPE = "postgresql://user:password@host:5432/database"


@dataclass(frozen=True)
class DatabaseUrl:
    """A PostgreSQL URL's parts, percent-decoded; the password never in its repr."""

    host: str
    port: int
    name: str
    user: str
    password: str = field(repr=False)


def database_url(url: str, *, key: str = "labelStudioDbUrl") -> DatabaseUrl:
    """The parts of Label Studio's database URL (ESC `labelStudioDbUrl`), checked.

    Here, beside the secrets, because `make check` refuses a bad URL before any host is
    touched (oceanid/preflight.py) and the Label Studio app builds its `POSTGRE_*` variables
    from the same parts (deploys/cluster_apps/label_studio.py `database_env`).

    Raises ValueError naming `key` (never the URL: it holds the password) when the URL
    is not a complete postgresql:// URL; user, password, host and database are all
    required, since Label Studio would otherwise fall back to `postgres` defaults.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"{key}: not a URL; expected {DB_URL_SHAPE}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"{key}: scheme {parts.scheme or '(none)'} is not postgresql; Label Studio must "
            f"run on PostgreSQL, never SQLite; expected {DB_URL_SHAPE}"
        )
    missing = [
        what
        for what, value in (
            ("user", parts.username),
            ("password", parts.password),
            ("host", parts.hostname),
            ("database", parts.path.lstrip("/")),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"{key}: no {', '.join(missing)} in the URL; expected {DB_URL_SHAPE}")
    if parts.query or parts.fragment or "/" in parts.path.lstrip("/"):
        raise ValueError(
            f"{key}: Label Studio's POSTGRE_* variables take no path beyond the database name "
            f"and no ?options; expected {DB_URL_SHAPE}"
        )
    return DatabaseUrl(
        host=parts.hostname,
        port=port or 5432,
        name=unquote(parts.path.lstrip("/")),
        user=unquote(parts.username),
        password=unquote(parts.password),
    )
