"""One GPU host: `pyinfra @ssh/calypso deploys/gpu.py`.

Or, with the inventory: `pyinfra inventory.py deploys/gpu.py --limit calypso`. Without an
inventory file the host's data comes from group_data/ plus its entry in `hosts:`, keyed
by the host's name.
"""

import sys

from deploys import base, gpu_host
from oceanid.site import this_host

plan = this_host()
if plan.gpu is None:
    sys.exit(f"{plan.name}: no hosts.{plan.name}.gpu entry in group_data; not a GPU host")
base.deploy(plan)
gpu_host.deploy(plan)
