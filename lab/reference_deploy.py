"""The bench's reference: the site's state through pyinfra's built-in operations only.

`pyinfra -y inventories/lab.py lab/reference_deploy.py` (the lab running) manages the
packages, accounts, directories, files, pinned binaries and units that deploys/site.py's
roles declare for each host, the way an operator would write it with `apt.packages`,
`server.user`, `files.put`, `files.download` and `systemd.service`, so `make bench` can set
its no-op converge against ours. It is built from the roles' declarations each run
(lab/reference.py), never a copy of them. Each host is reached as for deploys/site.py: its
login and sudo come from its host data (calypso: `oceanid` with `_sudo`, from its `hosts:`
entry), so no operation here names `_sudo`.

It is no supported deploy: it does not restart a service whose files changed, sweep what
the site no longer declares, validate a file before it replaces the old one, roll back a
binary, or do the roles' other steps (k3s's token and kernel settings, Triton's environment,
DNS). `--diff` is refused: pyinfra's `files.put` prints a file's new content there, and
some of these files are secrets.
"""

from pyinfra import host, state
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.deb import DebArch

from lab.reference import OPERATIONS, declared, host_ops
from oceanid.site import site, this_host

if state.config.DIFF:
    raise PyinfraError(
        "lab/reference_deploy.py: --diff would print secret files' content (pyinfra's "
        "files.put shows it); run the reference without --diff"
    )

plan = this_host()
manifests = declared(plan, site())
arch = host.get_fact(DebArch) if any(m.binaries for m in manifests) else None
for operation, kwargs in host.loop(host_ops(plan, manifests, arch)):
    OPERATIONS[operation](**kwargs)
