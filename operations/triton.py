"""Triton's Python environment and its model repository, kept without restarts.

The environment is built beside the one Triton runs on (in a new folder under
/opt/triton/venvs) and switched to by renaming a symlink, only once it is
complete: a failed pip leaves the running environment and the link as they were. The
stamp is written into the new environment as its last build step, so a failed build is
retried on the next run rather than taken for done. Older environments are removed only
after Triton answered ready on the new one.

Models are loaded through Triton's repository API after their files changed; files the
repository no longer has are removed, but only inside the models the deploy manages, and
model folders the deploy created and no longer wants are unloaded and deleted.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.command import make_formatted_string_command

from operations import progress
from operations._shell import fail, in_double_quotes
from operations.failure import first_time
from operations.managed import DesiredState

READY_WAIT = 60  # seconds to wait for Triton before loading a model
START_WAIT = 300  # seconds a (re)started Triton has to load every model and answer ready
# Every call to Triton's API has a time limit: curl has none of its own, and a Triton that
# hangs in a model's initialize() would hold the run for good.
CONNECT_WAIT = 5  # seconds to connect: Triton is on localhost, it answers at once or not at all
PROBE_WAIT = 5  # seconds for a health or readiness answer
LOAD_WAIT = START_WAIT  # a load runs the model's initialize(), as a start does for each model
UNLOAD_WAIT = 120  # an unload waits for the model's requests in flight and its finalize()
LOG_LINES = 40  # journal lines shown when Triton did not come up


IMAGE_MOUNT = "/opt/oceanid/env"  # where the image's containers see the environment: build and run
IMAGE_REQUIREMENTS = "requirements.txt"  # copied into the environment for the image's pip
IMAGE_VENV = "venv"  # a venv of the image's Python, its own packages visible (system site)
IMAGE_PYTHON = "python-version"  # the image's Python, `3.12`: what the packages were built for
IMAGE_ENV_FILE = "container.env"  # PATH with the venv first, for the running container
VERSION = 'import sys; print("%d.%d" % sys.version_info[:2])'


def image_build_command(env: str, image: str, extra: tuple[str, ...] = ()) -> StringCommand:
    """A one-shot container of `image` builds a venv of its own Python in `env` and installs
    the requirements there; `--network host` lets its pip reach the host's proxy or the
    internet.

    Triton's Python backend stub finds its interpreter's packages the way `python3` would:
    through the first `python3` on PATH, so a venv whose bin/ comes first on PATH is what
    the models import from (PYTHONPATH is not read by the stub). The build writes that PATH,
    the venv's bin/ before the image's own PATH, to `container.env` for the unit's
    `--env-file`; the venv is made and run at the same path (IMAGE_MOUNT), so its scripts'
    paths hold. `--without-pip`: the image's own pip (a system site package) installs into
    it, so an image without Debian's ensurepip works too. `extra`: more `docker run` options
    (the GPU check's offline build mounts its wheels and points pip at them).
    """
    mount = IMAGE_MOUNT
    venv = f"{mount}/{IMAGE_VENV}"
    script = make_formatted_string_command(
        "python3 -m venv --without-pip --system-site-packages {venv} && "
        "{python} -m pip install -q --disable-pip-version-check --no-cache-dir "
        "-r {requirements} && "
        "{python} -c {version} > {python_version} && "
        "printf {path_line} {path} > {env_file}",
        venv=QuoteString(venv),
        python=QuoteString(f"{venv}/bin/python"),
        requirements=QuoteString(f"{mount}/{IMAGE_REQUIREMENTS}"),
        version=QuoteString(VERSION),
        python_version=QuoteString(f"{mount}/{IMAGE_PYTHON}"),
        path_line=QuoteString("PATH=%s\\n"),
        path=f'"{in_double_quotes(venv)}/bin:$PATH"',  # $PATH: the image's, in the container
        env_file=QuoteString(f"{mount}/{IMAGE_ENV_FILE}"),
    )
    return make_formatted_string_command(
        "docker run --rm --network host {options} {image} sh -c {script}",
        options=StringCommand("-v", QuoteString(f"{env}:{mount}"), *map(QuoteString, extra)),
        image=QuoteString(image),
        script=QuoteString(script),
    )


@operation()
def environment(
    desired: DesiredState,
    *,
    link: str,
    env: str,
    stamp_name: str,
    stamp: bytes,
    wheel_requirements: str | None,
    model_requirements: str | None,
    finish: StringCommand | None,
    image: str | None = None,
    what: str = "Triton's environment",
):
    """
    Build Triton's Python environment beside the current one when its inputs changed (or
    another service's: the ML-backend adapter's, from a hash-pinned file alone).

    + desired: the role's DesiredState (its `read` includes `<link>/<stamp_name>`)
    + link: the stable path the service uses: a symlink to the current environment
    + env: where the new environment is built: a new folder, never the one `link` names
    + stamp_name: the file in an environment that records what it was built from
    + stamp: what it should have been built from
    + wheel_requirements: a hash-pinned requirements file for the Triton wheel, if any
    + model_requirements: the models' requirements file (None: none besides the pinned file)
    + finish: a shell command run in the new environment after the installs (backends, links)
    + image: build it with this container image's Python instead of the host's: the image
      makes a venv of its Python in `<env>/venv`, installs the requirements there, writes its
      Python's version to `<env>/python-version` and the PATH that puts the venv first to
      `<env>/container.env`; the container runtime mounts the environment read-only
    + what: the environment's name in the message when it is up to date

    `link` moves to the new environment (a rename of a new link over it, which is atomic)
    only after every step passed; until then Triton keeps the environment it runs on. A
    `link` that is still a real folder (the layout before environments were kept side by
    side) is moved beside the new environment first, so it is removed with the old ones.
    """
    if desired.state()["contents"].get(f"{link}/{stamp_name}") == stamp:
        host.noop(f"{what} at {link} is built from the pinned inputs")
        return
    new, pip = QuoteString(env), QuoteString(f"{env}/bin/pip")
    # `$(readlink <link> )`: the environment the link names now, never the one rebuilt here
    fresh = make_formatted_string_command(
        "if [ {linked} = {new} ]; then {refuse} fi; rm -rf {new} &&",
        linked=StringCommand('"$(readlink', QuoteString(link), ')"'),
        new=new,
        refuse=fail(f"{link} links to {env}, the environment in use; build it elsewhere"),
    )
    if image is not None:
        yield make_formatted_string_command(
            "{fresh} install -d -m 0755 {new} && install -m 0644 {requirements} {copy}",
            fresh=fresh,
            new=new,
            requirements=QuoteString(model_requirements),
            copy=QuoteString(f"{env}/{IMAGE_REQUIREMENTS}"),
        )
        yield image_build_command(env, image)
    else:
        yield make_formatted_string_command("{0} python3 -m venv {1}", fresh, new)
        pip_install = "{pip} install -q --disable-pip-version-check"
        if wheel_requirements:
            yield make_formatted_string_command(
                pip_install + " --no-deps --require-hashes -r {requirements}",
                pip=pip,
                requirements=QuoteString(wheel_requirements),
            )
        if model_requirements:
            yield make_formatted_string_command(
                pip_install + " -r {requirements}",
                pip=pip,
                requirements=QuoteString(model_requirements),
            )
    if finish is not None:
        yield finish
    yield make_formatted_string_command(
        "printf %s {stamp} > {path}",
        stamp=QuoteString(stamp.decode()),
        path=QuoteString(f"{env}/{stamp_name}"),
    )
    # a real folder at `link` (the layout before environments were kept side by side) moves
    # aside first; then a new link is renamed over the old one, which is atomic
    yield make_formatted_string_command(
        "if [ -d {link} ] && [ ! -L {link} ]; then "
        "rm -rf {legacy} && mv -T {link} {legacy} ; fi && "
        "ln -sfn {new} {staged} && mv -T {staged} {link}",
        link=QuoteString(link),
        legacy=QuoteString(f"{env.rsplit('/', 1)[0]}/previous"),
        new=new,
        staged=QuoteString(f"{link}.oceanid-new"),
    )


@operation()
def old_environments(link: str, envs: str, leftovers: list[str], *, rebuilt: bool):
    """
    Remove the environments Triton no longer runs on, once it answered ready on the new one.

    + link: the stable symlink to the current environment
    + envs: the folder the environments are built in; all but the link's target go
    + leftovers: paths of an older layout to remove with them
    + rebuilt: whether this run built and switched to a new environment
    """
    if not rebuilt:
        host.noop(f"no new environment was built: nothing beside {link}'s to remove")
        return
    every_other = make_formatted_string_command(
        "current=$(readlink {link} ) && "
        "for old in {envs}/*; do [ {old} = {current} ] || rm -rf {old}; done && rm -rf",
        link=QuoteString(link),
        envs=QuoteString(envs),
        old='"$old"',
        current='"$current"',
    )
    yield StringCommand(every_other, *map(QuoteString, leftovers))


def _curl(limit: int, *words: object) -> list:
    """`curl words…` that gives up after CONNECT_WAIT seconds to connect and `limit` in all
    (curl's exit 28)."""
    return ["curl", *words, "--connect-timeout", str(CONNECT_WAIT), "--max-time", str(limit)]


def _repository_call(url: str, limit: int, doing: str, refused: str) -> StringCommand:
    """POST to Triton's repository API, `limit` seconds at most; a time limit reached and
    a refusal are told apart in the message (Triton's log says why)."""
    late = (
        f"Triton did not finish {doing} in {limit} s (the limit set in operations/triton.py); "
        "see its log"
    )
    post = [*_curl(limit, "-fsS", "-X", "POST", "-o", "/dev/null"), QuoteString(url)]
    return make_formatted_string_command(
        "{post} || "
        "{{ if [ {status} = 28 ]; then echo {late} >&2; else echo {refused} >&2; fi; exit 1; }}",
        post=StringCommand(*progress.watch(f"Triton to finish {doing}", limit, *post)),
        status='"$?"',
        late=QuoteString(late),
        refused=QuoteString(refused),
    )


def _failed_with_journal(unit: str, message: str) -> list:
    return [
        "{", "echo", QuoteString(f"{message}; its last log lines:"), ">&2;",
        "journalctl", "-u", unit, "-n", str(LOG_LINES), "--no-pager", ">&2;", "exit", "1;", "}",
    ]  # fmt: skip


@operation()
def wait_ready(unit: str, port: int, models: list[str], started: bool, timeout: int = START_WAIT):
    """
    After a start or restart, wait until Triton is ready and serves every managed model.

    + unit: Triton's systemd unit
    + port: Triton's HTTP port on localhost
    + models: the models the deploy manages; each must be READY
    + started: whether this run started or restarted the unit
    + timeout: seconds to wait at most

    systemd calls Triton "active" as soon as the process runs, but Triton loads its models
    afterwards and exits when one fails to load ("failed to load all models"), often long
    after the unit's own check. So the run waits on Triton's answers: it fails with Triton's
    log lines when the process exits or restarts meanwhile, or when the wait runs out.
    """
    if not started:
        host.noop(f"{unit} was neither started nor restarted: nothing to wait for")
        return
    base = f"http://127.0.0.1:{port}/v2"
    probes: list = [*_curl(PROBE_WAIT, "-fs", "-o", "/dev/null"), f"{base}/health/ready"]
    for model in models:
        probes += ["&&", *_curl(PROBE_WAIT, "-fs", "-o", "/dev/null")]
        probes.append(QuoteString(f"{base}/models/{model}/ready"))
    show = ["systemctl", "show", "--value", "-p"]
    loop = [
        "{", "restarts=$(", *show, "NRestarts", unit, ");", "waited=0;",
        "until", *probes, ";", "do",
        'case "$(', *show, "SubState", unit, ')"', "in", "start*|running)", ";;",
        "*)", *_failed_with_journal(unit, f"{unit} exited before Triton was ready"), ";;",
        "esac;",
        '[ "$(', *show, "NRestarts", unit, ')" = "$restarts" ]', "||",
        *_failed_with_journal(unit, f"{unit} restarted before Triton was ready"), ";",
        "waited=$((waited+1));", '[ "$waited" -lt', str(timeout), "]", "||",
        *_failed_with_journal(
            unit,
            f"Triton on 127.0.0.1:{port} was not ready with model(s) {', '.join(models)} "
            f"after {timeout} s",
        ),
        ";", "sleep", "1;", "done;", "}",
    ]  # fmt: skip
    # says what it waits for every progress.EVERY seconds, for as long as the loop's tries last
    what = f"{unit} to be ready (models: {', '.join(models)})"
    yield progress.Shown(*progress.watch(what, timeout, *loop, bounded=False))


def strays(desired: DesiredState, root: str, models: set[str]) -> list[str]:
    """Entries under `root` inside managed models that the repository no longer has."""
    prefix = root.rstrip("/") + "/"
    wanted = {f.path.removeprefix(prefix) for f in desired.files if f.path.startswith(prefix)}
    parents = {p.rsplit("/", n)[0] for p in wanted for n in range(1, p.count("/") + 1)}
    found = desired.state()["trees"].get(root, {})
    return sorted(
        (
            rel
            for rel in found
            if rel.split("/", 1)[0] in models and rel not in wanted and rel not in parents
        ),
        key=lambda rel: -rel.count("/"),
    )


@operation()
def prune(desired: DesiredState, root: str, models: list[str]):
    """
    Remove files and folders of managed models that the repository no longer has.

    + desired: the role's DesiredState (its trees include `root`)
    + root: the model repository on the host
    + models: the models the deploy manages; nothing else under `root` is touched
    """
    extra = strays(desired, root, set(models))
    if not extra:
        host.noop(f"no stray files in the {len(models)} managed model(s)")
        return
    for rel in extra:
        yield StringCommand("rm", "-rf", QuoteString(f"{root}/{rel}"))


def retired(desired: DesiredState, root: str, models: set[str]) -> list[str]:
    """Model folders under `root` this deploy created and no longer has: the host's record
    of the desired state lists paths in them, and they are not among the current `models`."""
    prefix = root.rstrip("/") + "/"
    unwanted = [path for path in desired.unwanted() if path.startswith(prefix)]
    return sorted({path.removeprefix(prefix).split("/", 1)[0] for path in unwanted} - models)


@operation()
def retire(desired: DesiredState, root: str, models: list[str], port: int = 8000):
    """
    Unload and delete the model folders this deploy created and no longer wants.

    + desired: the role's DesiredState (its record on the host says which paths it wrote)
    + root: the model repository on the host
    + models: the models the deploy manages now
    + port: Triton's HTTP port on localhost

    A model removed from (or renamed in) the repository would otherwise stay on disk, be
    served until the next restart, and be loaded again by `--load-model=*` at every start.
    A running Triton unloads it first; folders the deploy never wrote are left alone.
    """
    gone = retired(desired, root, set(models))
    if not gone:
        host.noop(f"no retired model folder under {root}")
        return
    base = f"http://127.0.0.1:{port}/v2"
    for model in gone:
        if first_time("retire", model):
            host.log(
                f"model {model}: no longer in the repository; unloaded from Triton and deleted"
            )
        yield progress.Shown(
            make_formatted_string_command(
                "if {live} {url}; then {unload} ; fi",
                live=StringCommand(*_curl(PROBE_WAIT, "-fs", "-o", "/dev/null")),
                url=QuoteString(f"{base}/health/live"),
                unload=_repository_call(
                    f"{base}/repository/models/{model}/unload",
                    UNLOAD_WAIT,
                    f"unloading model {model}",
                    f"Triton refused to unload model {model}; see its log",
                ),
            )
        )
        yield StringCommand("rm", "-rf", QuoteString(f"{root}/{model}"))


@operation()
def load(models: list[str], port: int = 8000):
    """
    Ask a running Triton (explicit model control) to load these models again.

    + models: model names whose files changed
    + port: Triton's HTTP port on localhost

    Triton answers a load once the model's initialize() returned, so each load is given
    LOAD_WAIT seconds, as long as a start gives every model; past it the run fails saying
    the limit was reached, not that Triton refused.
    """
    if not models:
        host.noop("no model changed")
        return
    base = f"http://127.0.0.1:{port}"
    live = [
        "for", "i", "in", "$(seq", str(READY_WAIT) + ");", "do",
        *_curl(PROBE_WAIT, "-fs", "-o", "/dev/null"), f"{base}/v2/health/live", "&&", "break;",
        "sleep", "1;", "done",
    ]  # fmt: skip
    what = f"Triton on 127.0.0.1:{port} to answer"
    yield progress.Shown(*progress.watch(what, READY_WAIT, *live, bounded=False))
    for model in models:
        yield progress.Shown(
            _repository_call(
                f"{base}/v2/repository/models/{model}/load",
                LOAD_WAIT,
                f"loading model {model}",
                f"Triton refused to load model {model}; see its log",
            )
        )
