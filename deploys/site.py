"""The whole site: `pyinfra inventory.py deploys/site.py` (add `--dry --diff` to preview).

Every host gets the base; each role adds its part (k3s: servers before agents). Settings
and secrets are validated for the whole inventory before the first operation is queued, and
each host's state is read in one round trip before any role decides what to change.
"""

from deploys import base, dns, gpu_host, k3s
from oceanid.site import site, this_host
from operations import managed

plan = this_host()
gpu_host.check(plan)
# Every role declares what it manages first; the host's state is then read in one command.
core = base.declare(plan)
gpu = gpu_host.declare(plan) if plan.gpu is not None else None
node = k3s.declare(plan, site())
managed.read_together(core, *([gpu.desired] if gpu else []), *(node.states() if node else []))
base.deploy(plan, core)
if gpu is not None:
    gpu_host.deploy(plan, gpu)  # before k3s: its agent finds the NVIDIA runtime when it starts
k3s.deploy(plan, site(), node)  # servers, then agents, then node labels (pyinfra's line order)
if gpu is not None:
    gpu_host.hand_over(plan, gpu, site())  # daemonset mode: the host connector stops last
dns.deploy(plan, site())
