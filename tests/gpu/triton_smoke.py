"""Stdlib-only helpers to run a tritonserver process and ask it for a PDF's text.

Stdlib only because this runs on a bare GPU machine that has Python and no network, so it cannot
install tritonclient; the contract test runs the same code against the CPU server here, so the GPU
check's client is proven before it ever meets a GPU.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF whose page shows `text` in Helvetica, with a correct xref table.

    Hand-written so the check needs no PDF library; pypdf reads the text back exactly.
    """
    stream = f"BT /F1 18 Tf 72 720 Td ({_escaped(text)}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        _stream(stream),
    ]
    return _pdf_file(objects)


def pages_pdf(pages: list[list[str]]) -> bytes:
    """A PDF of `len(pages)` letter pages, each showing its lines top to bottom in 11 pt
    Helvetica (13 pt apart, so about 50 lines fit a page), with a correct xref table.

    For documents longer than minimal_pdf's one line (make bench-predict's); pypdf reads each
    line back as a line, the pages in order.
    """
    if not pages:
        raise ValueError("a PDF needs at least one page")
    font = 3 + 2 * len(pages)
    kids = b" ".join(b"%d 0 R" % (3 + 2 * n) for n in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
    ]
    for n, lines in enumerate(pages):
        shown = " T* ".join(f"({_escaped(line)}) Tj" for line in lines)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (font, 4 + 2 * n)
        )
        objects.append(_stream(f"BT /F1 11 Tf 13 TL 72 740 Td {shown} ET".encode("latin-1")))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _pdf_file(objects)


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _stream(content: bytes) -> bytes:
    return b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)


def _pdf_file(objects: list[bytes]) -> bytes:
    """Objects 1..n (1 the catalog), their xref table and trailer."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def infer_bytes(
    url: str, model: str, inputs: dict[str, bytes], output: str, timeout: float = 120.0
) -> bytes:
    """One document through a batched model (a batch of one, shape [1, 1]): its output row."""
    (row,) = infer_rows(
        url, model, {name: [data] for name, data in inputs.items()}, output, timeout
    )
    return row


def infer_rows(
    url: str, model: str, inputs: dict[str, list[bytes]], output: str, timeout: float = 120.0
) -> list[bytes]:
    """One inference of a batch over Triton's HTTP API: each input a [B, 1] BYTES tensor sent as
    binary data (row i of every input is document i), the output's B rows back in order.

    The binary-tensor extension carries a PDF's raw bytes, which JSON strings cannot; each
    element is a 4-byte little-endian length and the bytes. Raises RuntimeError with Triton's own
    error message when the server refuses the request.
    """
    tensors = [
        (name, len(rows), b"".join(struct.pack("<I", len(data)) + data for data in rows))
        for name, rows in inputs.items()
    ]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": [count, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
                for name, count, blob in tensors
            ],
            "outputs": [{"name": output, "parameters": {"binary_data": False}}],
        }
    ).encode()
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer",
        data=header + b"".join(blob for _, _, blob in tensors),
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(
            f"Triton refused the request ({exc.code}): {exc.read().decode()}"
        ) from exc
    (tensor,) = [t for t in body["outputs"] if t["name"] == output]
    return [row.encode() for row in tensor["data"]]


def free_ports(count: int) -> list[int]:
    """Ephemeral ports on 127.0.0.1 that were free a moment ago (held open together)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll /v2/health/ready until 200; False on timeout or as soon as the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def stop_server(process: subprocess.Popen[bytes], timeout: float = 40) -> None:
    """SIGTERM our server by PID; SIGKILL its process group (it and its stubs) if it lingers.

    The server must have been started with start_new_session=True, so its group is its own.
    """
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
