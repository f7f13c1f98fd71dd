"""One GPU host: `pyinfra @ssh/calypso deploys/gpu.py`.

Or, with the inventory: `pyinfra inventory.py deploys/gpu.py --limit calypso`.

Data comes from group_data/ plus the host's entry in `hosts:` keyed by its name.
"""

from deploys import base
from oceanid.site import this_host

plan = this_host()
base.deploy(plan)
