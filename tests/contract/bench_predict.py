"""`make bench-predict [N=16] [BATCH=8]`: what the ML-backend adapter costs over Triton alone.

Starts the real tritonserver (CPU) as the contract tests do (tests/contract/conftest.py
start_triton) and the real adapter process in front of it (tests/contract/ml_adapter.py),
then, in the same run, sends the same N PDFs (each a page with its own sentence):

- straight to Triton: N requests of docling_granite_python on one tritonclient HTTP client,
  at most BATCH in flight, as a client that already holds the files would;
- through the adapter: one /predict of N tasks, as Label Studio sends a batch (ml/models.py
  predict_tasks), each task's PDF an http URL on a local file server that the adapter fetches.

Each path runs once to warm up, then `--rounds` times; the medians give the rates
(documents per second) and their ratio, adapter time over Triton time. Target: at most
TARGET (the adapter adds at most 20%). Every prediction's text is checked against its
sentence, so a fast wrong answer cannot pass. Exit status 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import tritonclient.http as triton_http

from tests.contract.conftest import start_triton
from tests.contract.ml_adapter import FileServer, start_adapter
from tests.gpu.triton_smoke import minimal_pdf

MODEL = "docling_granite_python"
TARGET = 1.2
CONFIG = """<View><Pdf name="document" value="$pdf"/>
<TextArea name="transcript" toName="document"/></View>"""


def sentence(n: int) -> str:
    return f"Bench document {n}: the adapter reads this line."


def straight(url: str, pdfs: list[bytes], batch: int) -> list[str]:
    """Every PDF's text from Triton directly, at most `batch` requests in flight."""
    client = triton_http.InferenceServerClient(url.removeprefix("http://"), concurrency=batch)
    texts = []
    try:
        for start in range(0, len(pdfs), batch):
            pending = []
            for pdf in pdfs[start : start + batch]:
                tensor = triton_http.InferInput("pdf_data", [1], "BYTES")
                tensor.set_data_from_numpy(np.array([pdf], dtype=np.object_), binary_data=True)
                pending.append(client.async_infer(MODEL, [tensor]))
            for request in pending:
                body = json.loads(request.get_result().as_numpy("response").reshape(-1)[0])
                texts.append(body["text"])
    finally:
        client.close()
    return texts


def through(adapter_url: str, auth: tuple[str, str], files_url: str, n: int) -> list[str]:
    """Every task's text from one /predict, as Label Studio asks for a batch."""
    tasks = [{"id": i, "data": {"pdf": f"{files_url}/doc{i}.pdf"}} for i in range(n)]
    body = {"tasks": tasks, "project": "1.1", "label_config": CONFIG, "params": {}}
    answer = requests.post(f"{adapter_url}/predict", json=body, auth=auth, timeout=600)
    answer.raise_for_status()
    return [r["result"][0]["value"]["text"][0] if r else "" for r in answer.json()["results"]]


def timed(run, n: int) -> float:
    started = time.perf_counter()
    texts = run()
    elapsed = time.perf_counter() - started
    wrong = [i for i, text in enumerate(texts) if sentence(i) not in text]
    if len(texts) != n or wrong:
        raise SystemExit(f"wrong answers for documents {wrong or 'all'}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="documents per round")
    parser.add_argument("--batch", type=int, default=8, help="requests in flight to Triton")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.n < 1 or args.batch < 1 or args.rounds < 1:
        parser.error("--n, --batch and --rounds must be at least 1")
    pdfs = [minimal_pdf(sentence(i)) for i in range(args.n)]
    with tempfile.TemporaryDirectory(prefix="oceanid-bench-predict-") as folder:
        work = Path(folder)
        print("starting tritonserver (CPU) and the adapter ...", flush=True)
        with (
            start_triton(work / "triton") as triton,
            FileServer({f"doc{i}.pdf": pdf for i, pdf in enumerate(pdfs)}) as files,
            start_adapter(work / "adapter", triton.url, batch=args.batch) as adapter,
        ):
            paths = {
                "triton": lambda: straight(triton.url, pdfs, args.batch),
                "adapter": lambda: through(adapter.url, adapter.auth, files.url, args.n),
            }
            times: dict[str, list[float]] = {name: [] for name in paths}
            for run in paths.values():
                timed(run, args.n)  # warm-up
            for _ in range(args.rounds):
                for name, run in paths.items():
                    times[name].append(timed(run, args.n))
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["adapter"] / medians["triton"]
    print(f"documents: {args.n} per round, {args.rounds} rounds (median), batch size {args.batch}")
    for name, label in (("triton", "straight to Triton"), ("adapter", "through the adapter")):
        seconds = medians[name]
        print(f"  {label:20} {args.n / seconds:8.1f} docs/s  ({seconds * 1000:.0f} ms per round)")
    verdict = "ok" if ratio <= TARGET else "MISSED"
    print(f"  adapter / Triton time: {ratio:.2f} (target <= {TARGET}): {verdict}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
