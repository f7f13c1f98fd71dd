"""The artifact mirror the lab serves to its hosts, laid out like the upstream releases.

An air-gapped site points the artifact URL templates at a mirror like this one; the lab
does the same, with the stand-in `k3s` and `cloudflared` from tests/standins (nothing
reachable here provides the real ones). Each release folder carries the binary and a
SHA-256 list, and the hashes are recorded for the lab's settings to pin.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from lab.topology import ARTIFACTS_FILE, MIRROR_DIR, MIRROR_URL, REPO

STANDINS = REPO / "tests" / "standins"
K3S_VERSION = "v1.33.4+k3s1"
CLOUDFLARED_VERSION = "2025.8.1"

RELEASES = {
    "k3s": {
        "version": K3S_VERSION,
        "folder": f"k3s-io/k3s/releases/download/{K3S_VERSION}",
        "files": {"k3s": STANDINS / "k3s"},
        "sums": "sha256sum-amd64.txt",
        "url": MIRROR_URL + "/k3s-io/k3s/releases/download/{version}/k3s",
    },
    "cloudflared": {
        "version": CLOUDFLARED_VERSION,
        "folder": f"cloudflare/cloudflared/releases/download/{CLOUDFLARED_VERSION}",
        "files": {"cloudflared-linux-amd64": STANDINS / "cloudflared"},
        "sums": "sha256sums.txt",
        "url": MIRROR_URL + "/cloudflare/cloudflared/releases/download/{version}"
        "/cloudflared-linux-{arch}",
    },
}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def populate() -> dict[str, dict]:
    """Lay out the mirror and write the pins the lab's settings read."""
    if MIRROR_DIR.exists():
        shutil.rmtree(MIRROR_DIR)
    pins: dict[str, dict] = {}
    for name, release in RELEASES.items():
        folder = MIRROR_DIR / release["folder"]
        folder.mkdir(parents=True)
        lines = []
        digest = ""
        for filename, source in release["files"].items():
            target = folder / filename
            shutil.copyfile(source, target)
            target.chmod(0o755)
            digest = sha256_of(target)
            lines.append(f"{digest}  {filename}")
        (folder / release["sums"]).write_text("\n".join(lines) + "\n")
        pins[name] = {
            "version": release["version"],
            "url": release["url"],
            "sha256": {"amd64": digest},
        }
    ARTIFACTS_FILE.write_text(json.dumps(pins, indent=2) + "\n")
    return pins


def place(source: Path, target: Path) -> None:
    """`source` at `target` in the mirror, replacing what is there: a hard link (the cache and
    the mirror share .lab, so a 500 MB image is no copy), or a copy where linking fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def record(pins: dict[str, dict]) -> None:
    """Add entries to .lab/artifacts.json next to populate()'s (the lab's images, lab/images.py)."""
    current = json.loads(ARTIFACTS_FILE.read_text()) if ARTIFACTS_FILE.exists() else {}
    ARTIFACTS_FILE.write_text(json.dumps(current | pins, indent=2) + "\n")
