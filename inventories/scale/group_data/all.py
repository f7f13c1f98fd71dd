"""The bench-scale hosts' settings: the lab's (inventories/group_data/all.py), with a `hosts:`
entry for each extra GPU host in place of the lab's own hosts.

An extra GPU host is what the site's docs promise a new GPU host costs: an inventory line, this
entry and its two ESC keys (the lab's secrets file has them, lab/fake_secrets.py). Like calypso,
it runs Triton from the wheel on the CPU (the lab has no GPU); unlike calypso, it is reached as
root and joins no cluster.
"""

import runpy
from pathlib import Path

from lab.topology import SCALE_HOSTS, scale_number
from oceanid.settings import run_login_data

_lab = runpy.run_path(str(Path(__file__).resolve().parents[2] / "group_data" / "all.py"))
_login = run_login_data(_lab["hosts"])
__all__ = [name for name in _lab["__all__"] if name not in _login and name != "hosts"]
globals().update({name: _lab[name] for name in __all__})

hosts = {
    lab_host.name: {
        "gpu": {
            "public_name": f"gpu{scale_number(lab_host)}",
            "tunnel_id_key": f"cloudflareNode{scale_number(lab_host)}TunnelId",
            "tunnel_credential_key": f"cloudflareNode{scale_number(lab_host)}TunnelToken",
            "require_gpu": False,
            "service": {"kind": "triton", "runtime": "host", "port": 8000},
        },
    }
    for lab_host in SCALE_HOSTS
}
_scale_login = run_login_data(hosts)
globals().update(_scale_login)
__all__ += ["hosts", *_scale_login]
