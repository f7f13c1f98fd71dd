"""The GPU check's container variant (issue 13): Triton in a container image, on a real GPU.

Run by check.sh when TRITON_IMAGE names an image already on this machine (the device machine
reaches no registry) and Docker has NVIDIA's runtime. It does what the deploy's container
runtime does: the model environment built by the image itself (`operations.triton`'s own
command, offline from the bundle's wheels), the models rendered for the container (the GPU
passed by its host index, named 0 inside), the container run with the unit's options
(deploys/gpu_host/tritonserver-container.service), one PDF. Prints PASS/FAIL lines.

Usage: python -m tests.gpu.container_check WORK --image IMAGE --bundle BUNDLE
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from oceanid.triton_repo import render_repository, write_repository
from operations.triton import IMAGE_ENV_FILE, IMAGE_MOUNT, IMAGE_PYTHON, image_build_command
from tests.gpu.triton_check import MODEL, PHRASE, READY_TIMEOUT_S, REPO, Report
from tests.gpu.triton_smoke import free_ports, infer_bytes, minimal_pdf

NAME = "oceanid-gpu-check"


def sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True)


def check(report: Report, work: Path, image: str, bundle: Path) -> None:
    runtimes = sh("docker info --format '{{json .Runtimes}}'").stdout
    if not report.check("nvidia" in runtimes, "Docker has NVIDIA's runtime", runtimes.strip()):
        return
    gpus = [line for line in sh("nvidia-smi -L").stdout.splitlines() if line.startswith("GPU ")]
    device = len(gpus) - 1  # the last GPU: on a machine with several, not the one seen as 0
    models, env = work / "container-models", work / "container-env"
    write_repository(
        render_repository(REPO / "triton-models", instance_kind="KIND_GPU", gpus=[0]), models
    )
    env.mkdir(parents=True, exist_ok=True)
    requirements = sorted((REPO / "triton-models").glob("*/requirements.txt"))
    (env / "requirements.txt").write_text("".join(p.read_text() for p in requirements))
    offline = ("-v", f"{bundle}:/bundle:ro", "-e", "PIP_NO_INDEX=1", "-e", "PIP_FIND_LINKS=/bundle")
    build = sh(str(image_build_command(str(env), image, offline).get_raw_value()))
    built = (env / IMAGE_PYTHON).read_text().strip() if (env / IMAGE_PYTHON).exists() else ""
    if not report.check(build.returncode == 0, "the image builds the model environment",
                        built or build.stderr[-800:]):  # fmt: skip
        return
    http, grpc, metrics = free_ports(3)
    run = [
        "docker", "run", "-d", "--rm", "--name", NAME, "--gpus", f"device={device}",
        "--shm-size=1g", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864",
        *(x for p in (http, grpc, metrics) for x in ("-p", f"127.0.0.1:{p}:{p}")),
        "-v", f"{models}:/models:ro", "-v", f"{env}:{IMAGE_MOUNT}:ro",
        "--env-file", str(env / IMAGE_ENV_FILE), image, "tritonserver",
        "--model-repository=/models", "--model-control-mode=explicit", "--load-model=*",
        f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
    ]  # fmt: skip
    started = subprocess.run(run, capture_output=True, text=True)
    if not report.check(started.returncode == 0, f"container started on GPU {device}",
                        started.stderr.strip()):  # fmt: skip
        return
    url = f"http://127.0.0.1:{http}"
    try:
        deadline, ready = time.monotonic() + READY_TIMEOUT_S, False
        while time.monotonic() < deadline and not ready:
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as answer:
                    ready = answer.status == 200
            except OSError:
                time.sleep(1)
        if not report.check(ready, "Triton in the container answers ready"):
            return
        with urllib.request.urlopen(f"{url}/v2/models/{MODEL}/config", timeout=10) as answer:
            groups = json.loads(answer.read())["instance_group"]
        served = [(group["kind"], group["gpus"]) for group in groups]
        report.check(served == [("KIND_GPU", [0])], "instance_group names the device as 0",
                     str(served))  # fmt: skip
        body = json.loads(infer_bytes(url, MODEL, {"pdf_data": minimal_pdf(PHRASE)}, "response"))
        report.check(PHRASE in body.get("text", ""), "PDF text comes back", str(body)[:300])
        report.check(body.get("device") == "cuda:0", "model runs on cuda:0", body.get("device"))
    finally:
        if report.failures:
            print(sh(f"docker logs --tail 60 {NAME}").stdout, flush=True)
        sh(f"docker rm -f {NAME}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--image", required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    args = parser.parse_args()
    report = Report()
    try:
        check(report, args.work, args.image, args.bundle)
    except Exception as exc:  # a crash is one more FAIL line, not a silent traceback
        report.check(False, "container check finished", f"{type(exc).__name__}: {exc}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
