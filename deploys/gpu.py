"""One GPU host: `pyinfra @ssh/calypso deploys/gpu.py`.

Or, with the inventory: `pyinfra inventory.py deploys/gpu.py --limit calypso`. Without an
inventory file the host's data comes from group_data/ plus its entry in `hosts:`, keyed
by the host's name.
"""

from pyinfra.api.exceptions import PyinfraError

from deploys import base, dns, gpu_host
from oceanid.site import site, this_host

plan = this_host()
if plan.gpu is None:
    raise PyinfraError(f"{plan.name}: not a GPU host (no hosts.{plan.name}.gpu in group_data)")
gpu_host.check(plan)
base.deploy(plan)
gpu_host.deploy(plan)
dns.deploy(plan, site())
