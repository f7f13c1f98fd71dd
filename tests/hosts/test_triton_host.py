"""testinfra checks of Triton's `host` runtime: the wheel's tritonserver, run by systemd.

Which hosts: the GPU hosts whose Triton runs on the host (see conftest.py).
"""


def test_runs_unprivileged(host):
    assert host.process.get(comm="tritonserver").user == "triton"
