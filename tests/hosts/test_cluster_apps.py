"""testinfra checks of the cluster apps on a k3s server: k3s's auto-deploy manifests.

Every app's file the deploy writes (`deploys.cluster_apps.path`: `oceanid-<app>.yaml`, its
Secrets apart in `oceanid-<app>-secret.yaml`) is present, owned by root and writable by root
only, and a file holding a Kubernetes Secret is 0600: k3s reads the folder as root, nobody else
needs to.
"""

import yaml

from deploys.cluster_apps import MANIFEST_DIR


def _manifests(host) -> list[str]:
    with host.sudo():
        listed = host.check_output(
            f"find {MANIFEST_DIR} -maxdepth 1 -name 'oceanid-*.yaml' 2>/dev/null || true"
        )
    return sorted(listed.split())


def test_the_apps_manifests_are_there(host):
    assert _manifests(host), f"no oceanid-*.yaml in {MANIFEST_DIR}"


def test_manifests_present_and_owned(host):
    with host.sudo():
        for manifest_path in _manifests(host):
            manifest = host.file(manifest_path)
            assert (manifest.user, manifest.group) == ("root", "root"), manifest_path
            assert not manifest.mode & 0o022, f"{manifest_path} is writable by others"


def test_secrets_are_private(host):
    with host.sudo():
        for manifest_path in _manifests(host):
            manifest = host.file(manifest_path)
            documents = list(yaml.safe_load_all(manifest.content_string))
            secret = any(isinstance(d, dict) and d.get("kind") == "Secret" for d in documents)
            if secret or manifest_path.endswith("-secret.yaml"):
                assert manifest.mode == 0o600, f"{manifest_path} holds a Secret but is not 0600"
