"""`make bench-predict [N=16] [PAGES=10] [BATCH=8]`: what the adapter costs over Triton alone.

What the ML-backend adapter adds to a prediction. Starts the real tritonserver (CPU) as the
contract tests do (tests/contract/conftest.py start_triton) and the real adapter process in
front of it (tests/contract/ml_adapter.py), then, in the same run, sends the same N PDFs both
ways:

- straight to Triton: docling_granite_python on one tritonclient HTTP client, one request per
  BATCH documents (pdf_data [BATCH, 1]), as a client that already holds the files would;
- through the adapter: one /predict of N tasks, as Label Studio sends a batch (ml/models.py
  predict_tasks), each task's PDF an http URL on a local file server that the adapter fetches;
  the adapter sends the same batches of BATCH (its `batch` setting).

The documents: PAGES pages (default 10), each a full page of prose (PAGE_LINES lines of about
80 characters, about 3,300 characters: a single-spaced printed page). The adapter's overhead
only means something next to the model work it wraps, and a document of one sentence is not
what annotators upload: ten pages is a short report or article, the kind of document a
transcription project holds. pypdf, the CPU model here, is the cheapest reader there is (on a
GPU host Granite spends seconds on a page), so this is the adapter's worst realistic case.
The same run also measures one-page, one-sentence PDFs (minimal_pdf, the contract tests'
documents) as a second row, so the fixed cost per document is never hidden: each row gives
both rates, their ratio and what the adapter adds per document in milliseconds.

Each path runs once to warm up, then `--rounds` times per row, the rows and paths interleaved;
medians give the rates (documents per second) and the ratio, adapter time over Triton time.
Target: at most TARGET (the adapter adds at most 20%) for the PAGES-page documents; the
one-page row is informative. Every prediction is checked (the first page's sentence, and each
page's heading in order), so a fast wrong answer cannot pass. Exit status 1 when the target is
missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
import tritonclient.http as triton_http

from tests.contract.conftest import start_triton
from tests.contract.ml_adapter import FileServer, start_adapter
from tests.gpu.triton_smoke import minimal_pdf, pages_pdf

MODEL = "docling_granite_python"
TARGET = 1.2
PAGES = 10
PAGE_LINES = 42
CONFIG = """<View><Pdf name="document" value="$pdf"/>
<TextArea name="transcript" toName="document"/></View>"""
VOCABULARY = (  # the words of the prose lines
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will more can said what about into than them only other new some could time these "
    "two may first then do any like my now over such our man me even most made after also did "
    "many before must through back years where much your way well down should because each "
    "just those people how too little state good very make world still own see men work long "
    "get here between both life being under never day same another know while last might us "
    "great old year off come since against go came right used take three report section table "
    "figure annotation transcript vessel harbour survey record station sample measurement"
)
WORDS = VOCABULARY.split()


def sentence(n: int) -> str:
    return f"Bench document {n}: the adapter reads this line."


def heading(n: int, page: int, pages: int) -> str:
    return f"Document {n}, page {page} of {pages}."


def document(n: int, pages: int) -> tuple[bytes, list[str]]:
    """Document n's PDF and the texts its prediction must hold, in order.

    One page: minimal_pdf's single sentence. More: each page a heading and PAGE_LINES lines of
    words (seeded by n, so every run sends the same bytes), the sentence first on page 1.
    """
    if pages == 1:
        return minimal_pdf(sentence(n)), [sentence(n)]
    words = random.Random(n)
    texts, content = [], []
    for page in range(1, pages + 1):
        lines = [heading(n, page, pages)] + ([sentence(n)] if page == 1 else [])
        while len(lines) < PAGE_LINES:
            line = words.choice(WORDS).capitalize()
            while len(line) < 75:
                line += " " + words.choice(WORDS)
            lines.append(line + ".")
        content.append(lines)
        texts += lines[:2] if page == 1 else lines[:1]
    return pages_pdf(content), texts


def straight(url: str, pdfs: list[bytes], batch: int) -> list[str]:
    """Every PDF's text from Triton directly, one request per `batch` documents."""
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    texts = []
    try:
        for start in range(0, len(pdfs), batch):
            rows = pdfs[start : start + batch]
            tensor = triton_http.InferInput("pdf_data", [len(rows), 1], "BYTES")
            values = np.array([[pdf] for pdf in rows], dtype=np.object_).reshape(len(rows), 1)
            tensor.set_data_from_numpy(values, binary_data=True)
            response = client.infer(MODEL, [tensor]).as_numpy("response").reshape(-1)
            texts.extend(json.loads(row).get("text", "") for row in response)
    finally:
        client.close()
    return texts


def model_bound(url: str) -> int:
    """The model's max_batch_size: a larger BATCH would be refused by Triton."""
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    try:
        return int(client.get_model_config(MODEL)["max_batch_size"])
    finally:
        client.close()


def through(adapter_url: str, auth: tuple[str, str], urls: list[str]) -> list[str]:
    """Every task's text from one /predict, as Label Studio asks for a batch."""
    tasks = [{"id": i, "data": {"pdf": url}} for i, url in enumerate(urls)]
    body = {"tasks": tasks, "project": "1.1", "label_config": CONFIG, "params": {}}
    answer = requests.post(f"{adapter_url}/predict", json=body, auth=auth, timeout=600)
    answer.raise_for_status()
    return [r["result"][0]["value"]["text"][0] if r else "" for r in answer.json()["results"]]


def in_order(text: str, parts: list[str]) -> bool:
    at = 0
    for part in parts:
        at = text.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def timed(run: Callable[[], list[str]], expected: list[list[str]]) -> float:
    started = time.perf_counter()
    texts = run()
    elapsed = time.perf_counter() - started
    wrong = [i for i, text in enumerate(texts) if not in_order(text, expected[i])]
    if len(texts) != len(expected) or wrong:
        raise SystemExit(f"wrong answers for documents {wrong or 'all'}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="documents per round")
    parser.add_argument("--batch", type=int, default=8, help="documents per Triton request")
    parser.add_argument("--pages", type=int, default=PAGES, help="pages per judged document")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if min(args.n, args.batch, args.pages, args.rounds) < 1:
        parser.error("--n, --batch, --pages and --rounds must be at least 1")
    sizes = [args.pages] + ([1] if args.pages != 1 else [])  # judged row first
    documents = {size: [document(i, size) for i in range(args.n)] for size in sizes}
    files = {
        f"p{size}/doc{i}.pdf": pdf
        for size, docs in documents.items()
        for i, (pdf, _) in enumerate(docs)
    }
    times: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="oceanid-bench-predict-") as folder:
        work = Path(folder)
        print("starting tritonserver (CPU) and the adapter ...", flush=True)
        with (
            start_triton(work / "triton") as triton,
            FileServer(files) as server,
            start_adapter(work / "adapter", triton.url, batch=args.batch) as adapter,
        ):
            bound = model_bound(triton.url)
            if args.batch > bound:
                raise SystemExit(f"--batch {args.batch} is over the model's max_batch_size {bound}")
            runs = {}
            for size, docs in documents.items():
                pdfs = [pdf for pdf, _ in docs]
                urls = [f"{server.url}/p{size}/doc{i}.pdf" for i in range(args.n)]
                expected = [texts for _, texts in docs]
                runs[size, "triton"] = (
                    lambda pdfs=pdfs: straight(triton.url, pdfs, args.batch),
                    expected,
                )
                runs[size, "adapter"] = (
                    lambda urls=urls: through(adapter.url, adapter.auth, urls),
                    expected,
                )
            for run, expected in runs.values():
                timed(run, expected)  # warm-up
            for _ in range(args.rounds):
                for key, (run, expected) in runs.items():
                    times.setdefault(key, []).append(timed(run, expected))
    medians = {key: statistics.median(values) for key, values in times.items()}
    print(
        f"machine: {len(os.sched_getaffinity(0))} CPUs (nproc); documents: {args.n} per round, "
        f"batch size {args.batch}, {args.rounds} rounds (medians)"
    )
    print(
        f"  {'pages':>5}  {'straight to Triton':>24}  {'through the adapter':>24}  "
        f"{'adapter/Triton':>14}  {'adapter adds':>15}"
    )
    for size in sizes:
        triton_s, adapter_s = medians[size, "triton"], medians[size, "adapter"]
        cells = [
            f"{args.n / seconds:7.1f} docs/s ({seconds * 1000:5.0f} ms)"
            for seconds in (triton_s, adapter_s)
        ]
        extra = (adapter_s - triton_s) * 1000 / args.n
        note = "" if size == args.pages else "  (informative)"
        print(
            f"  {size:>5}  {cells[0]:>24}  {cells[1]:>24}  {adapter_s / triton_s:>14.2f}  "
            f"{extra:>8.2f} ms/doc{note}"
        )
    ratio = medians[args.pages, "adapter"] / medians[args.pages, "triton"]
    verdict = "ok" if ratio <= TARGET else "MISSED"
    print(f"  target: adapter/Triton <= {TARGET} for {args.pages}-page documents: {verdict}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
