"""The two halves of the GPU check that need more than shell; each prints PASS/FAIL lines.

`facts FILE`: the JSON that `pyinfra @local fact <GpuDevices>` printed must list the GPUs that
`nvidia-smi -L` lists. `triton WORK`: the Triton from the bundle, with the repository rendered by
oceanid.triton_repo for `--kind` (KIND_GPU on GPU 0 by default), must load the docling model,
answer one PDF, and answer a batch of PDFs in one request, row by row, an unreadable one with
an error in its own row. Stdlib only (plus this repository on PYTHONPATH): the GPU machine has
no network to install anything else. Exit status is the number of FAILs, capped at 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from oceanid.triton_repo import render_repository, write_repository
from oceanid.triton_runtime import (
    TritonDistribution,
    assemble_backends,
    python_env,
    server_command,
    server_env,
)
from tests.gpu.triton_smoke import (
    free_ports,
    infer_bytes,
    infer_rows,
    minimal_pdf,
    stop_server,
    wait_ready,
)

REPO = Path(__file__).resolve().parents[2]
MODEL = "docling_granite_python"
PHRASE = "Oceanid GPU check page"
READY_TIMEOUT_S = 180


class Report:
    """Collects PASS/FAIL lines as they happen, so a later crash still leaves the earlier ones."""

    def __init__(self) -> None:
        self.failures = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        print(f"{'PASS' if ok else 'FAIL'}: {what}{f' ({detail})' if detail else ''}", flush=True)
        self.failures += not ok
        return ok


def check_facts(report: Report, fact_json: Path) -> None:
    """The pyinfra fact, run through @local against the real nvidia-smi, agrees with nvidia-smi."""
    try:  # pyinfra --json prints {"<fact>": {"@local": [...]}}
        (by_host,) = json.loads(fact_json.read_text()).values()
        devices = by_host["@local"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        report.check(False, "GPU fact printed JSON", f"{exc}: {fact_json.read_text()[:500]!r}")
        return
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    expected = [line for line in listed.splitlines() if line.startswith("GPU ")]
    summary = "; ".join(
        f"{d.get('index')}: {d.get('name')} {d.get('memory_total_mib')} MiB" for d in devices
    )
    report.check(
        isinstance(devices, list) and len(devices) == len(expected) > 0,
        "GPU fact lists every GPU nvidia-smi -L lists",
        f"fact: {summary or 'none'}; nvidia-smi -L: {len(expected)}",
    )
    if devices:
        first = devices[0]
        report.check(
            first.get("index") == 0 and bool(first.get("uuid")) and bool(first.get("name")),
            "GPU 0 has index, uuid and name",
            json.dumps(first),
        )


def check_triton(report: Report, work: Path, python: Path, kind: str) -> None:
    """Render, assemble, start, ask once, stop; the server log tail is printed on any FAIL."""
    distribution = TritonDistribution(work / "triton")
    env = python_env(python)
    missing = distribution.missing(env.version)
    if not report.check(
        not missing, f"bundle has Triton for Python {env.version}", ", ".join(missing)
    ):
        return
    gpus = [0] if kind == "KIND_GPU" else None
    write_repository(
        render_repository(REPO / "triton-models", instance_kind=kind, gpus=gpus), work / "models"
    )
    backends = assemble_backends(distribution, work / "backends", env.version)
    environment = server_env(distribution, env, os.environ)
    stub = backends / "python" / "triton_python_backend_stub"
    ldd = subprocess.run(["ldd", str(stub)], env=environment, capture_output=True, text=True).stdout
    unresolved = "; ".join(line.strip() for line in ldd.splitlines() if "not found" in line)
    hint = (
        f" - install libpython{env.version} (Ubuntu 24.04: libpython{env.version}t64) or point "
        "PYTHON at a Python with a shared libpython"
    )
    found = str(env.libdir or "system libpython")
    report.check(
        not unresolved,
        "Python stub's libraries resolve",
        unresolved + hint if unresolved else found,
    )

    ports = free_ports(3)
    command = server_command(
        distribution,
        backends=backends,
        model_repository=work / "models",
        http_port=ports[0],
        grpc_port=ports[1],
        metrics_port=ports[2],
    )
    url = f"http://127.0.0.1:{ports[0]}"
    log = work / "tritonserver.log"
    print("INFO: " + " ".join(command), flush=True)
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        ready = wait_ready(url, process, READY_TIMEOUT_S)
        if report.check(ready, "tritonserver ready", f"{time.monotonic() - started:.1f} s"):
            _ask(report, url, kind)
    finally:
        stop_server(process)
        if report.failures:
            print(f"--- last lines of {log}", flush=True)
            print("\n".join(log.read_text(errors="replace").splitlines()[-60:]), flush=True)


def _ask(report: Report, url: str, kind: str) -> None:
    with urllib.request.urlopen(f"{url}/v2/models/{MODEL}/config", timeout=10) as answer:
        groups = json.loads(answer.read())["instance_group"]
    served = [(group["kind"], group["gpus"]) for group in groups]
    expected = [(kind, [0] if kind == "KIND_GPU" else [])]
    report.check(served == expected, f"served instance_group is {expected}", str(served))
    started = time.monotonic()
    try:
        body = json.loads(infer_bytes(url, MODEL, {"pdf_data": minimal_pdf(PHRASE)}, "response"))
    except (RuntimeError, OSError, ValueError) as exc:
        report.check(False, "one PDF inference", str(exc))
        return
    elapsed = f"{time.monotonic() - started:.2f} s"
    report.check(PHRASE in body.get("text", ""), "PDF text comes back", f"{elapsed}: {body}")
    device = "cuda:0" if kind == "KIND_GPU" else "cpu"
    report.check(
        body.get("device") == device, f"model instance runs on {device}", str(body.get("device"))
    )
    _ask_batch(report, url, device)


def _ask_batch(report: Report, url: str, device: str) -> None:
    """Three documents in one request ([3, 1]): two PDFs and a broken one, answered in order."""
    phrases = [f"{PHRASE} {n}" for n in (1, 2)]
    pdfs = [minimal_pdf(phrases[0]), minimal_pdf(PHRASE)[:60], minimal_pdf(phrases[1])]
    started = time.monotonic()
    try:
        rows = [json.loads(row) for row in infer_rows(url, MODEL, {"pdf_data": pdfs}, "response")]
    except (RuntimeError, OSError, ValueError) as exc:
        report.check(False, "a batch of 3 PDFs in one request", str(exc))
        return
    elapsed = f"{time.monotonic() - started:.2f} s"
    if not report.check(len(rows) == 3, "a batch of 3 PDFs: 3 rows back", f"{elapsed}: {rows}"):
        return
    first, broken, last = rows
    report.check(
        phrases[0] in first.get("text", "") and phrases[1] in last.get("text", ""),
        "each PDF's text in its own row, in order",
        f"{elapsed}: {first.get('text')!r}, {last.get('text')!r}",
    )
    report.check(
        str(broken.get("error", "")).startswith("pdf_data is not a readable PDF"),
        "the unreadable PDF's row is an error, its neighbours unharmed",
        str(broken)[:300],
    )
    report.check(
        first.get("device") == last.get("device") == device,
        f"the batch ran on {device}",
        f"{first.get('device')}, {last.get('device')}",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    facts = sub.add_parser("facts")
    facts.add_argument("fact_json", type=Path)
    triton = sub.add_parser("triton")
    triton.add_argument("work", type=Path, help="holds triton/ (the unpacked bundle)")
    triton.add_argument("--python", type=Path, required=True, help="the model env's python3")
    triton.add_argument("--kind", choices=("KIND_GPU", "KIND_CPU"), default="KIND_GPU")
    args = parser.parse_args()
    report = Report()
    try:
        if args.step == "facts":
            check_facts(report, args.fact_json)
        else:
            check_triton(report, args.work, args.python, args.kind)
    except Exception as exc:  # a crash is one more FAIL line, not a silent traceback
        report.check(False, f"{args.step} step finished", f"{type(exc).__name__}: {exc}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
