"""One fact that reads everything a role manages on a host, in one command.

pyinfra's built-in operations read one fact per file (one SSH round trip each, about
170 ms here), so a no-op converge of a few dozen files costs seconds. A role instead
declares its files, directories, packages and accounts up front and reads their state
here in a single shell command; its operations then compare against that.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass

from pyinfra.api import FactBase

MARK = "@@oceanid"


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


def _script(
    files: tuple[str, ...],
    packages: tuple[str, ...],
    users: tuple[str, ...],
    read: tuple[str, ...],
    units: tuple[str, ...],
    trees: tuple[str, ...],
) -> str:
    lines = [
        "export LC_ALL=C",
        f"echo '{MARK} host'; dpkg --print-architecture 2>/dev/null || uname -m; "
        "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null || echo -",
    ]
    for path in files:
        q = shlex.quote(path)
        lines.append(
            f"echo '{MARK} path {path}'; "
            f"if [ -L {q} ]; then echo link; "
            f"elif [ -e {q} ]; then stat -c '%F|%a|%U|%G' {q}; "
            f"if [ -f {q} ]; then sha256sum {q} | cut -d' ' -f1; fi; "
            "else echo missing; fi"
        )
    if packages:
        names = " ".join(shlex.quote(p) for p in packages)
        lines.append(f"echo '{MARK} packages'")
        lines.append(
            f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}} ${{Version}}\\n' {names} "
            "2>/dev/null || true"
        )
    for user in users:
        q = shlex.quote(user)
        lines.append(
            f"echo '{MARK} user {user}'; getent passwd {q} || true; id -Gn {q} 2>/dev/null || true"
        )
    for path in read:
        q = shlex.quote(path)
        lines.append(f"echo '{MARK} read {path}'; [ -f {q} ] && base64 -w0 {q} && echo || echo -")
    for unit in units:
        q = shlex.quote(unit)
        lines.append(
            f"echo '{MARK} unit {unit}'; e=$(systemctl is-enabled {q} 2>/dev/null); "
            f"a=$(systemctl is-active {q} 2>/dev/null); "
            'echo "${e:-not-found} ${a:-unknown}"'
        )
    for tree in trees:
        q = shlex.quote(tree)
        lines.append(
            f"echo '{MARK} tree {tree}'; [ -d {q} ] && find {q} -mindepth 1 -printf '%y %P\\n'"
            " | sort || true"
        )
    lines.append(f"echo '{MARK} end'")
    return "\n".join(lines)


class ManagedState(FactBase):
    """
    Returns the state of the given paths, packages and accounts, read in one command.

    .. code:: python

        {
            "arch": "amd64", "python": "3.11",
            "units": {"ssh.service": {"enabled": "enabled", "active": "active"}},
            "trees": {"/opt/triton/models": {"m/1/model.py": "file", "m": "directory"}},
            "paths": {"/etc/sudoers.d/oceanid": PathState(...), "/missing": None},
            "packages": {"curl": "7.88.1-10+deb12u12", "jq": None},
            "users": {"oceanid": Account(...), "nobody-yet": None},
            "contents": {"/home/oceanid/.ssh/authorized_keys": b"..." or None},
        }

    + files: paths whose type, mode, owner and SHA-256 are compared
    + packages: Debian packages whose installed version is wanted
    + users: accounts to look up
    + read: small, non-secret files whose content is returned (for merges and diffs)
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
        return _script(
            tuple(files), tuple(packages), tuple(users), tuple(read), tuple(units), tuple(trees)
        )

    def process(self, output: list[str]) -> dict:
        result: dict = {
            "arch": None,
            "python": None,
            "paths": {},
            "packages": {},
            "users": {},
            "contents": {},
            "units": {},
            "trees": {},
        }
        section: list[str] = []
        for line in output:
            if line.startswith(MARK):
                if section:
                    _consume(result, section)
                section = [line[len(MARK) + 1 :]]
            elif section:
                section.append(line)
        if not section or section[0] != "end":
            raise ValueError("ManagedState: output ended early (the command did not finish)")
        return result


def _consume(result: dict, section: list[str]) -> None:
    head, body = section[0], section[1:]
    kind, _, rest = head.partition(" ")
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
            result["paths"][rest] = PathState(ftype, mode.zfill(4), user, group, sha)
    elif kind == "packages":
        for line in body:
            parts = line.split()
            if len(parts) >= 3:
                name, status, version = parts[0], parts[1], parts[2]
                result["packages"][name] = version if status == "ii" else None
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
        result["units"][rest] = {"enabled": enabled, "active": active or "unknown"}
    elif kind == "tree":
        entries = {}
        for line in body:
            ftype, _, relpath = line.partition(" ")
            if relpath:
                entries[relpath] = "directory" if ftype == "d" else "file"
        result["trees"][rest] = entries
    elif kind == "read":
        value = body[0].strip() if body else "-"
        result["contents"][rest] = None if value == "-" else base64.b64decode(value)
