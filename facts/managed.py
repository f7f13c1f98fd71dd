"""One fact that reads everything a role manages on a host, in one command.

pyinfra's built-in operations read one fact per file (one SSH round trip each, about
170 ms here), so a no-op converge of a few dozen files costs seconds. A role instead
declares its files, directories, packages and accounts up front and reads their state
here in a single shell command; its operations then compare against that.
`ManagedStates` reads several roles of a host the same way, in one command for them all.

The command is a constant `sh -s`; the script it runs comes on stdin (`script()`, passed
as pyinfra's `_stdin` by `DesiredState.state`). A script passed as the `sh -c` argument is
refused by the kernel past 128 KiB, which a few hundred model files with `--diff` reach.
The script is all function definitions and one call at the end, so the shell has read
all of it before it prints anything: a writer that sends the whole script before reading
the output (pyinfra's local connector does) cannot deadlock on a full pipe.

The same command takes the host's deploy lock (`_lock`, once however many roles are read):
a file naming the run, whose holder is the process on the host that holds the run's
connection (found by walking up from the script past shells and sudo: sshd's for SSH). The
lock is held while that process lives, and taken over once it is gone (pid and start time
both compared, so a reused pid is not it); `flock` on a guard file makes the look-and-take one
step. A dry run only looks.

Every path, user and unit name is single-quoted in the script and comes back base64
encoded in the section header, so a name with quotes, backslashes, newlines or `$(...)`
is just a name. A role's paths are read by one python3 (`_paths`), whose output is what
`stat -c '%F|%a|%U|%G'` and `sha256sum < path` print for each, never the file name; a host
without python3 runs those per path (`_path`).
"""

from __future__ import annotations

import base64
import binascii
import shlex
from dataclasses import dataclass

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

MARK = "@@oceanid"
PEEK_LIMIT = 256 * 1024  # --diff reads back at most this much of a file; past it, no diff

# Helpers, defined before `main` runs: $1 is the name as it is printed (base64), $2 the name.
# `_paths` for all of a role's paths in one process: the host's python3 prints what `_path`
# prints for each (stat's `%F|%a|%U|%G` in the C locale, then sha256sum's hash), which saves
# three programs per path (stat, sha256sum, cut; with `_host`, a lab GPU host's state read went
# from 86 to 70 ms of CPU).
# Without python3, or if it fails, `_path` runs for each; a path printed twice is read twice,
# the last one counting. No single quote in it: it is one shell word.
_PATHS_PY = """
import grp, hashlib, os, pwd, stat, sys
KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
         (stat.S_ISCHR, "character special file"), (stat.S_ISBLK, "block special file"))
def named(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return "UNKNOWN"
def kind(st):
    if stat.S_ISREG(st.st_mode):
        return "regular file" if st.st_size else "regular empty file"
    return next((name for test, name in KINDS if test(st.st_mode)), "weird file")
def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
out = []
args = sys.argv[1:]
for printed, path in zip(args[::2], args[1::2]):
    out.append("@@oceanid path " + printed)
    try:
        st = os.lstat(path)
    except OSError:
        out.append("missing")
        continue
    if stat.S_ISLNK(st.st_mode):
        out.append("link")
        continue
    out.append("|".join((kind(st), format(st.st_mode & 0o7777, "o"),
                         named(pwd.getpwuid, st.st_uid), named(grp.getgrgid, st.st_gid))))
    if stat.S_ISREG(st.st_mode):
        try:
            out.append(sha256(path))
        except OSError:
            pass
sys.stdout.write("\\n".join(out) + "\\n")
"""

_FUNCTIONS = (
    r"""
_path() {
  echo "@@oceanid path $1"
  if [ -L "$2" ]; then echo link
  elif [ -e "$2" ]; then
    stat -c '%F|%a|%U|%G' -- "$2"
    if [ -f "$2" ]; then sha256sum < "$2" | cut -d' ' -f1; fi
  else echo missing; fi
}
_host() {  # the architecture and the Python version, read once however many roles ask
  if [ -z "${_host_lines:-}" ]; then
    _host_lines=$(dpkg --print-architecture 2>/dev/null || uname -m
      python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo -)
  fi
  printf '%s\n' "$_host_lines"
}
_paths() {  # pairs of (printed name, path)
  if python3 -c "$_PATHS_PY" "$@" 2>/dev/null; then return; fi
  while [ $# -gt 1 ]; do _path "$1" "$2"; shift 2; done
}
"""
    + f"_PATHS_PY='{_PATHS_PY}'\n"
    + r"""_read() {  # $3: the section (read, peek, record); $4: at most this many bytes
  echo "@@oceanid $3 $1"
  if [ -f "$2" ] && [ -r "$2" ]; then
    if [ -n "$4" ]; then head -c "$4" < "$2"; else cat < "$2"; fi | base64 -w0; echo
  else echo -; fi
}
_lines() {  # $3: the salt; one salted SHA-256 per line, never the line (a secret's)
  echo "@@oceanid lines $1"
  if [ -f "$2" ] && [ -r "$2" ]; then
    while IFS= read -r l || [ -n "$l" ]; do
      printf '%s\n%s' "$3" "$l" | sha256sum | cut -d' ' -f1
    done < "$2"
  else echo -; fi
}
_user() {
  echo "@@oceanid user $1"
  getent passwd "$2" || true
  id -Gn "$2" 2>/dev/null || true
}
_unit() {  # $3: the folder of owed-restart markers (a killed run's), if any
  echo "@@oceanid unit $1"
  e=$(systemctl is-enabled "$2" 2>/dev/null)
  a=$(systemctl is-active "$2" 2>/dev/null)
  echo "${e:-not-found} ${a:-unknown}"
  if [ -n "${3:-}" ] && [ -e "$3/$2" ]; then echo owed; fi
}
_holder() {  # pid and start time of the process that holds this run's connection
  p=$$
  while [ "$p" -gt 1 ] 2>/dev/null; do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || break
    case $(cat "/proc/$p/comm" 2>/dev/null) in
      sh|bash|dash|zsh|ksh|mksh|busybox|sudo|su|doas|env|timeout|nice|setsid|chroot)
        set -- ${s##*) }; p=$2 ;;
      *) set -- ${s##*) }; echo "$p ${20}"; return ;;
    esac
  done
  echo "- -"
}
_alive() {  # $1 $2: a holder as `_holder` prints it; true while that process still runs
  [ "$1" != - ] && s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  h=$2; set -- ${s##*) }; [ "$h" = "${20}" ]
}
_lock_run() {  # $1 file; $2 take (1) or only look (0); $3 who; $4 pid; $5 run id
  me=$(_holder); old=-; status=free
  if [ -f "$1" ]; then
    old=$(base64 -w0 < "$1")
    h=$(sed -n 's/^holder=//p' "$1")
    if [ "$h" = "$me" ]; then status=again
    elif _alive $h; then status=held
    else status=stale; fi
  fi
  if [ "$2" = 1 ] && [ "$status" != held ] && [ "$status" != again ]; then
    if [ "$me" = "- -" ]; then status=unlockable
    elif printf 'who=%s\npid=%s\nrun=%s\nsince=%s\nholder=%s\n' "$3" "$4" "$5" \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$me" > "$1.$$" && mv -f "$1.$$" "$1"; then
      [ "$status" = stale ] && status=took-stale || status=taken
    else rm -f "$1.$$"; status=unlockable; fi
  fi
  if [ "$2" != 1 ] && [ "$status" = held ]; then status=seen; fi
  echo "$status"
  echo "$old"
}
_lock() {  # the deploy lock, taken (or looked at) once however many roles ask; see `lock_lines`
  if [ -z "${_lock_lines:-}" ]; then
    if [ "$2" = 1 ]; then
      mkdir -p "${1%/*}" 2>/dev/null && chmod 0755 "${1%/*}" 2>/dev/null
      if command -v flock >/dev/null 2>&1; then  # one state read at a time decides
        _lock_lines=$({ flock -w 10 9 && _lock_run "$@"; } 9>>"$1.guard" 2>/dev/null)
      else _lock_lines=$(_lock_run "$@"); fi
      [ -n "$_lock_lines" ] || _lock_lines="unlockable
-"
    else _lock_lines=$(_lock_run "$@"); fi
  fi
  echo "@@oceanid lock"
  printf '%s\n' "$_lock_lines"
}
_probe() {  # $3: a shell command; its stdout, whatever it holds, comes back as base64
  echo "@@oceanid probe $1"
  sh -c "$3" </dev/null 2>/dev/null | base64 -w0; echo
}
_tree() {
  echo "@@oceanid tree $1"
  if [ -d "$2" ]; then find "$2" -mindepth 1 -printf '%y %P\0' | tr '\n\0' '\1\n' | sort; fi
}
"""
)


@dataclass(frozen=True)
class PathState:
    """What a managed path is now: type, mode (octal string), owner, group, SHA-256."""

    kind: str  # "file", "directory", "link", "other"
    mode: str
    user: str
    group: str
    sha256: str | None = None


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    home: str
    shell: str
    groups: tuple[str, ...]


def _name(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _call(function: str, value: str, *extra: str) -> str:
    return " ".join([function, _name(value), shlex.quote(value), *extra])


def _body(
    files: tuple[str, ...] = (),
    packages: tuple[str, ...] = (),
    users: tuple[str, ...] = (),
    read: tuple[str, ...] = (),
    units: tuple[str, ...] = (),
    trees: tuple[str, ...] = (),
    peek: tuple[str, ...] = (),
    record: str | None = None,
    lines: tuple[str, ...] = (),
    salt: str = "",
    probes: tuple[tuple[str, str], ...] = (),
    owed: str | None = None,
    lock: tuple[str, ...] | None = None,
) -> list[str]:
    """The commands that read one role's state, for these arguments (see `ManagedState`), and:

    + peek: non-secret files read back for `--diff`, left out of ``peeks`` when missing or
      larger than PEEK_LIMIT
    + record: the file in which the role records the paths it manages
    + lines: secret files whose lines come back only as SHA-256 of `salt` and the line, so
      `--diff` can tell which Secret keys change without the content leaving the host
      (not even in a -vvv fact output)
    + probes: (name, shell command) pairs whose standard output comes back as lines in
      ``probes[name]``: another fact's command read in this same round trip (its exit
      status and stderr are dropped). The output is base64-encoded, so no line of it can
      be taken for a section of this script, whatever bytes it holds.
    + owed: the folder of owed-restart markers: a unit whose marker is there comes back
      with ``owed: True`` (a run wrote a file it reads and did not get to restart it)
    + lock: (file, "1" to take it or "0" only to look, who, pid, run id): the deploy lock,
      taken in this same command (``lock``; see `lock_state`)
    """
    body = [
        f"echo '{MARK} host'",
        "_host",
    ]
    if lock is not None:  # first: the state is read under the lock, not before it
        body.append(" ".join(["_lock", *(shlex.quote(str(word)) for word in lock)]))
    if files:  # one process for them all (`_paths`)
        body.append(" ".join(["_paths", *(f"{_name(p)} {shlex.quote(p)}" for p in files)]))
    if packages:
        names = " ".join(shlex.quote(p) for p in packages)
        body.append(f"echo '{MARK} packages'")
        body.append(
            f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}} ${{Version}}\\n' {names} "
            "2>/dev/null || true"
        )
    body += [_call("_user", user) for user in users]
    # `read` is whole files (merges need all of them); `peek` stops one byte past the limit
    body += [_call("_read", path, "read") for path in read]
    body += [_call("_read", path, "peek", str(PEEK_LIMIT + 1)) for path in peek]
    body += [_call("_lines", path, shlex.quote(salt)) for path in lines]
    if record is not None:
        body.append(_call("_read", record, "record"))
    body += [_call("_unit", unit, *([shlex.quote(owed)] if owed else [])) for unit in units]
    body += [_call("_tree", tree) for tree in trees]
    body += [_call("_probe", name, shlex.quote(command)) for name, command in probes]
    body.append(f"echo '{MARK} end'")
    return body


def script(**args) -> str:
    """The shell script `sh -s` runs for one role's arguments (`_body`; see `ManagedState`)."""
    main = "main() {\n" + "\n".join(_body(**args)) + "\n}\n"
    return "export LC_ALL=C\n" + _FUNCTIONS + main + "main </dev/null\n"


def script_together(roles: list[dict]) -> str:
    """One script for several roles' arguments (see `ManagedStates`): each role's part is a
    function of its own, all defined before the first runs, then run in order after a
    `role N` line, so a host's whole state comes back from one command."""
    mains = [
        f"main_{i}() {{\n" + "\n".join(_body(**args)) + "\n}\n" for i, args in enumerate(roles)
    ]
    calls = [f"echo '{MARK} role {i}'\nmain_{i} </dev/null\n" for i in range(len(roles))]
    return "export LC_ALL=C\n" + _FUNCTIONS + "".join(mains) + "".join(calls)


def empty_state() -> dict:
    """A host with none of what was asked for: where `process` starts, and what a host whose
    state could not be read is taken as (flagged there, so every operation on it refuses)."""
    return {
        "arch": None,
        "python": None,
        "paths": {},
        "packages": {},
        "users": {},
        "contents": {},
        "peeks": {},
        "record": None,
        "units": {},
        "trees": {},
        "probes": {},
        "lock": None,
    }


class ManagedState(FactBase):
    """
    Returns the state of the given paths, packages and accounts, read in one command.

    .. code:: python

        {
            "arch": "amd64", "python": "3.11",
            "units": {"ssh.service": {"enabled": "enabled", "active": "active", "owed": False}},
            "trees": {"/opt/triton/models": {"m/1/model.py": "file", "m": "directory"}},
            "paths": {"/etc/sudoers.d/oceanid": PathState(...), "/missing": None},
            "packages": {"curl": "7.88.1-10+deb12u12", "jq": None},
            "users": {"oceanid": Account(...), "nobody-yet": None},
            "contents": {"/home/oceanid/.ssh/authorized_keys": b"..." or None},
            "peeks": {"/etc/cloudflared/config.yaml": b"..."},  # small files only
            "record": b"..." or None,
            "probes": {"k3s": ["version k3s version v1.33.4+k3s1 (148243c4)", ...]},
            "lock": {"status": "taken", "holder": {}} or None,  # see `holder`
        }

    The command is `sh -s`: pass `script(...)` of the same arguments as `_stdin`; the
    script also takes `peek`, `record`, `lines` and `probes`, which name no state of their own
    (they are left out of the fact's arguments, on which pyinfra-testing keys its fixtures).

    + files: paths whose type, mode, owner and SHA-256 are compared
    + packages: Debian packages whose installed version is wanted
    + users: accounts to look up
    + read: small, non-secret files whose content is returned (for merges)
    + units: systemd units whose enabled/active state is wanted
    + trees: directories whose entries (relative paths) are listed, to find strays
    """

    def command(
        self,
        files: tuple[str, ...] = (),
        packages: tuple[str, ...] = (),
        users: tuple[str, ...] = (),
        read: tuple[str, ...] = (),
        units: tuple[str, ...] = (),
        trees: tuple[str, ...] = (),
    ) -> str:
        return "sh -s"

    def process(self, output: list[str]) -> dict:
        result = empty_state()
        section: list[str] = []
        for line in output:
            if line.startswith(MARK + " "):
                if section:
                    _consume(result, section)
                section = [line[len(MARK) + 1 :]]
            elif section:
                section.append(line)
        if not section or section[0] != "end":
            raise FactProcessError("ManagedState: output ended early (the command did not finish)")
        return result


class ManagedStates(FactBase):
    """
    Several roles' `ManagedState` read in one command: a list of their states, in order.

    A host with three roles would otherwise read its state in three round trips, one after
    the other. The command is `sh -s`: pass `script_together` of the roles' arguments as
    `_stdin`. A role whose part did not finish fails the whole fact.

    + roles: the roles' names (what the fact is cached under, with their arguments' digest)
    """

    def command(self, roles: tuple[str, ...] = (), digest: str = "") -> str:
        return "sh -s"

    def process(self, output: list[str]) -> list[dict]:
        parts: list[list[str]] = []
        for line in output:
            if line.startswith(f"{MARK} role "):
                parts.append([])
            elif parts:
                parts[-1].append(line)
        return [ManagedState().process(part) for part in parts]


def installed(status: str) -> bool:
    """dpkg's abbreviated status: any wanted state (install, hold...) with the package
    installed and no error flag; `hi` (held) is as installed as `ii`."""
    return len(status) == 2 and status[1] == "i"


def _decode(value: str) -> bytes | None:
    value = value.strip()
    if value == "-":
        return None
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise FactProcessError(f"ManagedState: unreadable content ({error})") from error


def _consume(result: dict, section: list[str]) -> None:
    head, body = section[0], section[1:]
    kind, _, encoded = head.partition(" ")
    rest = base64.b64decode(encoded).decode() if encoded else ""
    if kind == "host":
        result["arch"] = body[0].strip() if body else None
        python = body[1].strip() if len(body) > 1 else "-"
        result["python"] = None if python == "-" else python
    elif kind == "path":
        status = body[0] if body else "missing"
        if status == "missing":
            result["paths"][rest] = None
        elif status == "link":
            result["paths"][rest] = PathState("link", "", "", "")
        else:
            ftype, mode, user, group = status.split("|")
            ftype = {"regular file": "file", "regular empty file": "file"}.get(ftype, ftype)
            sha = body[1].strip() if ftype == "file" and len(body) > 1 else None
            result["paths"][rest] = PathState(ftype, mode.zfill(4), user, group, sha or None)
    elif kind == "packages":
        for line in body:
            parts = line.split()
            if len(parts) >= 3:
                name, status, version = parts[0], parts[1], parts[2]
                result["packages"][name] = version if installed(status) else None
    elif kind == "user":
        passwd = body[0].split(":") if body and body[0].count(":") == 6 else None
        if passwd is None:
            result["users"][rest] = None
        else:
            groups = tuple(body[1].split()) if len(body) > 1 else ()
            result["users"][rest] = Account(
                int(passwd[2]), int(passwd[3]), passwd[5], passwd[6], groups
            )
    elif kind == "unit":
        enabled, _, active = (body[0].strip() if body else "not-found unknown").partition(" ")
        owed = len(body) > 1 and body[1].strip() == "owed"
        result["units"][rest] = {"enabled": enabled, "active": active or "unknown", "owed": owed}
    elif kind == "tree":
        entries = {}
        for line in body:
            ftype, _, relpath = line.partition(" ")
            if relpath:
                entries[relpath.replace("\x01", "\n")] = "directory" if ftype == "d" else "file"
        result["trees"][rest] = entries
    elif kind == "read":
        result["contents"][rest] = _decode(body[0] if body else "-")
    elif kind == "peek":
        content = _decode(body[0] if body else "-")
        if content is not None and len(content) <= PEEK_LIMIT:
            result["peeks"][rest] = content
    elif kind == "lines":
        hashes = [line.strip() for line in body]
        # only where asked for (--diff of a secret file): other states stay as they were
        result.setdefault("line_hashes", {})[rest] = None if hashes == ["-"] else hashes
    elif kind == "probe":
        text = (_decode(body[0] if body else "") or b"").decode(errors="replace")
        result["probes"][rest] = text.removesuffix("\n").split("\n") if text else []
    elif kind == "lock":
        status = body[0].strip() if body else "unlockable"
        found = _decode(body[1] if len(body) > 1 else "-")
        result["lock"] = {"status": status, "holder": holder(found)}
    elif kind == "record":
        result["record"] = _decode(body[0] if body else "-")


def holder(content: bytes | None) -> dict[str, str]:
    """The fields of a deploy lock file (who, pid, run, since, holder), as the lock wrote them."""
    fields = {}
    for line in (content or b"").decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields
