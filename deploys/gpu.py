"""One GPU host: `pyinfra @ssh/calypso deploys/gpu.py`.

Or, with the inventory: `pyinfra inventory.py deploys/gpu.py --limit calypso`. Without an
inventory file the host's data comes from group_data/ plus its entry in `hosts:`, keyed
by the host's name.
"""

from pyinfra.api.exceptions import PyinfraError

from deploys import base, dns, gpu_host
from oceanid.site import site, this_host
from operations import managed

plan = this_host()
if plan.gpu is None:
    raise PyinfraError(f"{plan.name}: not a GPU host (no hosts.{plan.name}.gpu in group_data)")
gpu_host.check(plan)
core = base.declare(plan)
role = gpu_host.declare(plan)
managed.read_together(core, role.desired)  # the host's state in one round trip
base.deploy(plan, core)
gpu_host.deploy(plan, role)
gpu_host.hand_over(plan, role, site())  # daemonset mode: once the cluster's connector is up
dns.deploy(plan, site())
