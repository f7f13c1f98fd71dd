"""The lab's file server: an operator's documents, on this machine's side of the bridge.

A Label Studio task names its PDF by URL; in production that is often an operator's own file
server, which the ML-backend adapter on a GPU host fetches. The lab serves FILES_DIR at
FILES_URL (10.77.0.1, a port of its own) with Python's static HTTP server, and puts there a
PDF whose page shows SAMPLE_SENTENCE, so `make smoke` and the lab tests can ask calypso's
adapter for a prediction and read the sentence back.
"""

from __future__ import annotations

import sys

from lab.topology import FILES_DIR, FILES_PORT, FILES_URL, GATEWAY
from tests.gpu.triton_smoke import minimal_pdf

# plain ASCII: text extraction turns an apostrophe into a typographic one (U+2019)
SAMPLE_SENTENCE = "The operator of the lab keeps this sentence in a PDF for the ML backend."
SAMPLE_NAME = "sample.pdf"
SAMPLE_URL = f"{FILES_URL}/{SAMPLE_NAME}"


def populate() -> None:
    """Write the sample document (the same bytes every time)."""
    FILES_DIR.mkdir(parents=True, exist_ok=True)
    path = FILES_DIR / SAMPLE_NAME
    content = minimal_pdf(SAMPLE_SENTENCE)
    if not path.exists() or path.read_bytes() != content:
        staged = path.with_suffix(".new")
        staged.write_bytes(content)
        staged.replace(path)


def argv() -> list[str]:
    """The server: static files, read-only, on the bridge address only."""
    return [
        sys.executable, "-m", "http.server", "--bind", GATEWAY, "--directory", str(FILES_DIR),
        str(FILES_PORT),
    ]  # fmt: skip
