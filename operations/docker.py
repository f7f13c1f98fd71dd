"""Docker on a host: the engine found or installed, daemon.json merged, images on disk.

Everything is decided from the role's one fact: its desired state's probes say whether a Docker
engine is installed (`command -v dockerd`, whichever package provides it) and whether each
image is on disk (`docker image inspect`); daemon.json's bytes are in its `read` list.

An image is made present by the deploy, never by the unit that runs it: a unit that pulls
at start cannot come back after a reboot while the registry is unreachable, although the
image is on disk. With an archive (a `docker save` file) the host needs no registry at all.
"""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.command import make_formatted_string_command

from operations import progress
from operations._diff import log_once, report
from operations._shell import download_commands, or_fail, replace_commands
from operations.failure import refuse
from operations.managed import DesiredState, ManagedBinary, ManagedFile

ENGINE_PROBE = "docker engine"
IMAGE_DOWNLOADS = "/var/tmp/oceanid-images"  # root's, 0700: archives between download and load
# `docker pull` has no time limit of its own: a registry that stops answering holds the run
# for good. Triton's image is some 10 GB, so an hour is generous for a working link; SIGTERM
# ends the client, and the daemon cancels a pull whose client went away.
PULL_WAIT = 3600  # seconds
PULL_KILL_AFTER = 30  # seconds after SIGTERM before `timeout` sends SIGKILL
# `<ID> <repo digests as JSON>`; Docker 20.10's `join` refuses .RepoDigests ("wrong type for
# value; expected []string; got []interface {}") for an image loaded from an archive
INSPECT = "docker image inspect -f '{{.Id}} {{json .RepoDigests}}'"


def probe_engine(desired: DesiredState) -> None:
    """Have the role's one fact say where dockerd is ("-" when no Docker is installed)."""
    desired.probes[ENGINE_PROBE] = "command -v dockerd || echo -"


def engine(desired: DesiredState) -> str | None:
    """dockerd's path as the role's fact read it, or None when no Docker is installed."""
    lines = [line for line in desired.probe(ENGINE_PROBE) if line.strip()]
    return None if not lines or lines[0] == "-" else lines[0]


def _image_probe(image: str) -> str:
    return f"docker image {image}"


def probe_image(desired: DesiredState, image: str) -> None:
    """Have the role's one fact read whether `image` is on disk: its ID and repo digests."""
    desired.probes[_image_probe(image)] = make_formatted_string_command(
        "{inspect} {image} 2>/dev/null || echo -", inspect=INSPECT, image=QuoteString(image)
    ).get_raw_value()  # a probe is text: the role's fact writes it into its script


def _digest(image: str) -> str | None:
    """`sha256:…` of an image given by digest (`name:tag@sha256:…`), else None."""
    return image.rsplit("@", 1)[1] if "@" in image else None


def on_disk(desired: DesiredState, image: str) -> str | None:
    """The image's ID when the fact found `image` on disk as pinned: an ID must be the
    image's own, a digest must be among its repo digests. None otherwise."""
    lines = [line for line in desired.probe(_image_probe(image)) if line.strip()]
    if not lines or lines[0].strip() == "-":
        return None
    image_id, _, listed = lines[0].strip().partition(" ")
    try:
        repo_digests = [str(d) for d in json.loads(listed or "null") or []]
    except ValueError:
        repo_digests = []
    if image.startswith("sha256:") and image_id != image:
        return None
    digest = _digest(image)
    if digest is not None and not any(d.endswith(f"@{digest}") for d in repo_digests):
        return None
    return image_id


def _check_command(image: str, message: str) -> StringCommand:
    """Fail with `message` unless Docker now has `image` as pinned (ID, or digest)."""
    wanted = _digest(image)
    if image.startswith("sha256:"):
        found = make_formatted_string_command("| grep -q {0}", QuoteString(f"^{image} "))
    elif wanted is not None:
        found = make_formatted_string_command("| grep -qF {0}", QuoteString(f"@{wanted}"))
    else:
        found = StringCommand(">/dev/null")
    return make_formatted_string_command(
        "{inspect} {image} 2>/dev/null {found} {fail}",
        inspect=INSPECT,
        image=QuoteString(image),
        found=found,
        fail=or_fail(message),
    )


def _pull_command(image: str, archive_setting: str) -> StringCommand:
    """`docker pull` under `timeout`: exit 124 (137 once SIGKILL was needed) is the time
    limit, said in words; any other failure is docker's own (its message is on stderr)."""
    late = (
        f"docker pull {image} did not finish in {PULL_WAIT} s (the limit set in "
        "operations/docker.py, PULL_WAIT): check that the host reaches the registry, or set "
        f"{archive_setting} to a `docker save` archive of the image"
    )
    # not -q: without a terminal docker prints a line per layer as each one is pulled, and
    # the wait says what it waits for every progress.EVERY seconds (a layer of gigabytes
    # prints nothing while it downloads); both shown as they come (issue 23)
    pull = ["timeout", "-k", str(PULL_KILL_AFTER), str(PULL_WAIT), "docker", "pull"]
    watched = progress.watch(f"docker pull {image}", PULL_WAIT, *pull, QuoteString(image))
    return progress.Shown(
        make_formatted_string_command(
            "{pull} || {{ rc=$?; case {rc} in 124|137) echo {late} >&2;; esac; exit {rc}; }}",
            pull=StringCommand(*watched),
            rc='"$rc"',
            late=QuoteString(late),
        )
    )


@operation()
def image(
    desired: DesiredState,
    image: str,
    *,
    archive_url: str | None = None,
    archive_sha256: str | None = None,
    setting: str = "image",
    archive_setting: str = "image_archive",
):
    """
    Make a container image present on disk before the unit that runs it starts.

    + desired: the role's DesiredState, probing the image (`probe_image`)
    + image: the reference the unit runs: ``registry/name:tag[@sha256:…]`` or an image ID
    + archive_url: a `docker save` archive holding the image, for a host without a registry
    + archive_sha256: the archive's pinned SHA-256
    + setting, archive_setting: the settings' names, for the messages

    With an archive: downloaded into a root-only folder, checked against its SHA-256,
    `docker load`ed and deleted; without: `docker pull`, given PULL_WAIT seconds (it has no
    time limit of its own; past it the run fails saying so). Either way Docker must then have
    the image as pinned (its ID; a digest among its repo digests), or the run fails saying
    which setting to fix. Docker must be running (the role starts it first).
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    found = on_disk(desired, image)
    if found is not None:
        host.noop(f"image {image} is on disk ({found[:19]})")
        return
    if archive_url is None and image.startswith("sha256:"):
        yield from refuse(
            f"{host.name}: {setting} is an image ID ({image}) that this host's Docker does not "
            f"have, and an ID cannot be pulled: set {archive_setting} (url, sha256) to an "
            "archive holding it, or load it on the host by hand"
        )
        return
    if archive_url is not None and _digest(image) is not None:
        yield from refuse(
            f"{host.name}: {setting} pins a registry digest, which `docker load` does not record "
            f"(and `docker run` would then pull it): with {archive_setting}, pin the image by "
            "its ID (sha256:…) or by its tag"
        )
        return
    if archive_url is None:
        log_once(image, f"image {image}: pulled")
        yield _pull_command(image, archive_setting)
        yield _check_command(
            image, f"docker pull {image} did not leave it on disk as pinned; check {setting}"
        )
        return
    tar = f"{IMAGE_DOWNLOADS}/{archive_sha256}.tar"
    log_once(image, f"image {image}: loaded from {archive_url} (SHA-256 {archive_sha256})")
    yield make_formatted_string_command(
        "mkdir -p {0} && chmod 0700 {0}", QuoteString(IMAGE_DOWNLOADS)
    )
    download = ManagedBinary(tar, archive_url, "", {}, mode="0600")
    yield from download_commands(download, archive_url, archive_sha256, kept="nothing was loaded")
    load = ["docker", "load", "-q", "-i", QuoteString(tar)]
    yield progress.Shown(  # says what it waits for every progress.EVERY seconds
        make_formatted_string_command(
            "{load} ; loaded=$?; rm -f {tar} ; [ {loaded} = 0 ] {fail}",
            load=StringCommand(*progress.watch(f"docker load of {archive_url}", None, *load)),
            tar=QuoteString(tar),
            loaded='"$loaded"',
            fail=or_fail(f"docker load of {archive_url} failed"),
        )
    )
    yield _check_command(
        image,
        f"{archive_setting} ({archive_url}) does not hold image {image} ({setting}): "
        "point it at a `docker save` archive of that image, or fix the reference",
    )


def merged_daemon_json(
    current: bytes | None, runtimes: dict[str, dict]
) -> tuple[dict | None, str | None]:
    """(daemon.json with `runtimes` merged in, or None when it already has them; or why the
    current file cannot be merged into). Every other key, and every other runtime, stays."""
    try:
        data = json.loads(current) if current is not None else {}
    except ValueError as error:
        return None, f"it is not valid JSON ({error})"
    if not isinstance(data, dict):
        return None, "it is not a JSON object"
    present = data.get("runtimes", {})
    if not isinstance(present, dict):
        return None, 'its "runtimes" is not a JSON object'
    if current is not None and all(present.get(k) == v for k, v in runtimes.items()):
        return None, None
    return {**data, "runtimes": {**present, **runtimes}}, None


def daemon_json_changes(desired: DesiredState, path: str, runtimes: dict[str, dict]) -> bool:
    """Whether `daemon_json` writes the file in this run (so Docker must restart).

    A file the role's record lists but no longer declares is removed by `sweep` before
    this step runs (an older deploy wrote it whole): it is written again, merged from what
    the fact read.
    """
    merged, problem = merged_daemon_json(desired.state()["contents"].get(path), runtimes)
    return problem is None and (merged is not None or path in desired.unwanted())


@operation()
def daemon_json(desired: DesiredState, path: str, runtimes: dict[str, dict]):
    """
    Merge container runtimes into Docker's daemon.json, keeping every other setting.

    + desired: the role's DesiredState; its `read` lists `path`
    + path: Docker's daemon.json
    + runtimes: runtime name -> its definition (``{"path": …, "args": []}``)

    The operator's data-root, log and registry settings stay; only the named runtimes are
    set, and the file is rewritten only when one of them differs, so Docker (restarted for
    a changed file) keeps its containers running otherwise. A file that is not a JSON
    object is refused, not replaced.
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    current = desired.state()["contents"].get(path)
    merged, problem = merged_daemon_json(current, runtimes)
    if problem is not None:
        yield from refuse(
            f"{host.name}: {path}: {problem}; make it a JSON object (or remove it), the "
            f"deploy merges the {', '.join(sorted(runtimes))} runtime into it"
        )
        return
    if merged is None and path not in desired.unwanted():
        host.noop(f"{path} has the {', '.join(sorted(runtimes))} runtime")
        return
    data = merged if merged is not None else json.loads(current or b"{}")
    new = ManagedFile(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    was = desired.state()["paths"].get(path)
    report(desired, new, was if current is not None else None)
    yield from replace_commands(new)
