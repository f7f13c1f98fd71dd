"""testinfra checks of the cluster apps on a k3s server: k3s's auto-deploy manifests.

Every manifest the cluster-apps role wrote (its record in /var/lib/oceanid, see
operations/managed.py) is present and owned by root, and a manifest holding a Kubernetes
Secret is 0600: k3s reads the folder as root, nobody else needs to.
"""

import yaml

from oceanid.status import MANIFESTS

RECORD_GLOB = "/var/lib/oceanid/cluster-apps*.paths"


def _manifests(host) -> list[str]:
    with host.sudo():
        listed = host.check_output(f"cat {RECORD_GLOB} 2>/dev/null || true").split()
    return [path for path in listed if path.startswith(MANIFESTS + "/")]


def test_the_role_wrote_manifests(host):
    assert _manifests(host), f"no manifest of the cluster apps is recorded in {RECORD_GLOB}"


def test_manifests_present_and_owned(host):
    with host.sudo():
        for path in _manifests(host):
            manifest = host.file(path)
            assert manifest.is_file, f"{path} is missing"
            assert (manifest.user, manifest.group) == ("root", "root"), path
            assert not manifest.mode & 0o022, f"{path} is writable by others ({manifest.mode:o})"


def test_secrets_are_private(host):
    with host.sudo():
        for path in _manifests(host):
            documents = list(yaml.safe_load_all(host.file(path).content_string))
            if any(isinstance(doc, dict) and doc.get("kind") == "Secret" for doc in documents):
                manifest = host.file(path)
                assert manifest.mode == 0o600, f"{path} holds a Secret but is {manifest.mode:o}"
