"""The whole site: `pyinfra inventory.py deploys/site.py` (add `--dry --diff` to preview).

Every host gets the base; each role adds its part (k3s: servers before agents). Settings
and secrets are validated for the whole inventory before the first operation is queued.
"""

from deploys import base, dns, gpu_host, k3s
from oceanid.site import site, this_host

plan = this_host()
gpu_host.check(plan)
base.deploy(plan)
if plan.gpu is not None:
    gpu_host.deploy(plan)  # before k3s: its agent finds the NVIDIA runtime when it starts
k3s.deploy(plan, site())  # servers, then agents, then node labels (pyinfra's line order)
dns.deploy(plan, site())
