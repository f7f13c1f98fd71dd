"""Role-based selection: the GPU checks run only on the GPU hosts.

testinfra runs every test module against every host given with `--hosts`; the GPU
module's tests are deselected (not skipped) for hosts outside OCEANID_GPU_HOSTS
(`ssh://calypso` by default), so a run counts only checks that apply.
"""

import os


def gpu_hosts() -> set[str]:
    return set(os.environ.get("OCEANID_GPU_HOSTS", "ssh://calypso").split(","))


def pytest_collection_modifyitems(config, items):
    wanted = gpu_hosts()
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        host = spec.params.get("_testinfra_host") if spec else None
        if item.module.__name__.endswith("test_gpu") and host is not None and host not in wanted:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
