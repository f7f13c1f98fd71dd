"""`make bootstrap HOST=…`: the deploy user on a fresh host, made once as root.

The normal deploy reaches a host as `admin_user` (calypso: `oceanid`, with sudo) and owns
that account, its keys and its sudo rule from then on (deploys/base); but its first login has
to find them. This runs the same base role (the same manifest, the same operations: packages
with sudo among them, the account, `admin_ssh_keys` in its authorized_keys, the sudo rule
checked by `visudo`) logged in as root, or as a user with a sudo password (prompted), so the
first real deploy finds everything as it would have made it and changes nothing of it.

    pyinfra inventory.py deploys/bootstrap.py --limit calypso --data ssh_user=root
        --data _sudo=False   (what `make bootstrap HOST=calypso` runs)

Only settings are needed, no secret: the tunnels and the cluster are not touched.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.exceptions import PyinfraError

from deploys import base
from oceanid.model import HostPlan
from oceanid.preflight import BASE_DOMAIN_PENDING
from oceanid.settings import SettingsError, from_data, short_name
from operations import managed

data = host.data.dict()
data["base_domain"] = data.get("base_domain") or BASE_DOMAIN_PENDING  # no name is made here
try:
    settings = from_data(data)
except SettingsError as error:
    raise PyinfraError("bootstrap: " + "; ".join(error.problems)) from None
if not settings.admin_ssh_keys:
    raise PyinfraError(
        f"bootstrap: admin_ssh_keys is empty, so {settings.admin_user} could not log in "
        "afterwards: add your public key (ssh-ed25519 AAAA…) to admin_ssh_keys in group_data/all.py"
    )
plan = HostPlan(name=short_name(host.name), settings=settings, roles=frozenset())
core = base.declare(plan)
managed.read_together(core)
base.deploy(plan, core)
