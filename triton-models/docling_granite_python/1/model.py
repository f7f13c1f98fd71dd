"""Triton Python-backend model: the text of a PDF, optionally read by Granite-Docling.

pypdf always parses the PDF: it is small, needs no GPU, and rejects a malformed file before any
GPU time is spent on it. When config.pbtxt names a Granite-Docling checkpoint
(`granite_model_dir`, filled by the deploy from host data), each page is rendered and converted
by that model on this instance's device instead; the response says which path produced the text,
so a client never mistakes pypdf output for the model's.

Batched (config.pbtxt max_batch_size): each input of a request is [B, 1], one row per document,
and the response is [B, 1], one JSON document per row in the same order. A document that cannot
be read carries {"error": ...} in its own row while the others carry their text, so one bad file
never costs its batch; only a request that sends no input at all fails as a whole. Nothing is
allowed to escape execute: a crashed stub would take the whole model, and every other client's
request, down with it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from pypdf import PdfReader

DEFAULT_PROMPT = "Convert this page to docling."
MAX_NEW_TOKENS = 8192


class RequestError(Exception):
    """The request itself is wrong (missing input, unreadable PDF): the client's to fix."""


class TritonPythonModel:
    """Entry point the Python backend instantiates once per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read the config and load Granite once, on this instance's own device.

        Loading here rather than per request keeps requests fast; a checkpoint that will not
        load fails the model load, so a misconfigured host is caught at deploy time, not by the
        first client.
        """
        config = json.loads(args["model_config"])
        kind = args["model_instance_kind"]  # "CPU" or "GPU"
        device_id = args["model_instance_device_id"]
        self.device = f"cuda:{device_id}" if kind == "GPU" else "cpu"
        parameters = config.get("parameters", {})
        granite_dir = parameters.get("granite_model_dir", {}).get("string_value", "").strip()
        self.granite = Granite(Path(granite_dir), self.device) if granite_dir else None

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order; a request is a batch of documents."""
        return [self._respond(request) for request in requests]

    def _respond(self, request: Any) -> Any:
        """Every document of the request answered on its own, one response row each."""
        try:
            documents = _documents(request)
        except RequestError as exc:
            return _error(str(exc), pb_utils.TritonError.INVALID_ARG)
        rows = [[json.dumps(self._answer(*document)).encode()] for document in documents]
        payload = np.array(rows, dtype=np.object_).reshape(len(rows), 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("response", payload)])

    def _answer(
        self, pdf: bytes | None, text: bytes | None, prompt: bytes | None
    ) -> dict[str, Any]:
        """One document's response, or {"error": ...} naming what is wrong with it."""
        try:
            return self._read(pdf, _text("text", text), _text("prompt", prompt))
        except RequestError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # pypdf and torch raise many types on hostile input
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _read(self, pdf: bytes | None, text: str | None, prompt: str | None) -> dict[str, Any]:
        """Build the response document; pdf_data wins when both pdf_data and text are sent."""
        prompt = prompt or DEFAULT_PROMPT
        pages = None
        if pdf:
            text_out, pages = _pypdf_text(pdf)
            model = "pypdf (no granite model configured)"
            if self.granite is not None:
                text_out = self.granite.convert(pdf, prompt)
                model = f"granite-docling ({self.granite.path.name})"
        elif text:
            text_out = text
            model = "text input (passed through)"
        else:
            raise RequestError("send pdf_data (the PDF's bytes) or text; neither was given")
        return {
            "text": text_out,
            "length": len(text_out),
            "prompt": prompt,
            "model": model,
            "device": self.device,
            "pages": pages,
        }


class Granite:
    """A Granite-Docling checkpoint on one device: page image + prompt in, DocTags text out."""

    def __init__(self, path: Path, device: str) -> None:
        """Load processor and weights from a local folder; never from the network.

        Every failure is re-raised with the folder's name and what to do, because Triton shows
        only this message when the model fails to load.
        """
        self.path = path
        self.device = device
        if not (path / "config.json").is_file():
            raise RuntimeError(
                f"granite_model_dir {str(path)!r} is not a model folder (no config.json); "
                "fix the host's granite_model_dir or leave it empty for pypdf only"
            )
        try:
            import pypdfium2
            import torch
            import transformers
        except ImportError as exc:
            raise RuntimeError(
                f"granite_model_dir {str(path)!r} is set but {exc.name} is not importable in "
                "Triton's Python environment (needs torch, transformers, pypdfium2)"
            ) from exc
        self._torch, self._pdfium = torch, pypdfium2
        auto_model = getattr(transformers, "AutoModelForImageTextToText", None) or (
            transformers.AutoModelForVision2Seq
        )
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
            self.model = auto_model.from_pretrained(
                path, local_files_only=True, torch_dtype=dtype
            ).to(device)
        except Exception as exc:
            raise RuntimeError(
                f"granite_model_dir {str(path)!r} failed to load on {device}: {exc}"
            ) from exc
        self.model.eval()

    def convert(self, pdf: bytes, prompt: str) -> str:
        """Render each page and let the model read it; pages are joined by blank lines."""
        document = self._pdfium.PdfDocument(pdf)
        content = [{"type": "image"}, {"type": "text", "text": prompt}]
        messages = [{"role": "user", "content": content}]
        chat = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        pages = []
        for page in document:
            image = page.render(scale=2).to_pil().convert("RGB")
            inputs = self.processor(text=chat, images=[image], return_tensors="pt").to(self.device)
            with self._torch.inference_mode():
                generated = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS)
            new_tokens = generated[:, inputs["input_ids"].shape[1] :]
            pages.append(self.processor.batch_decode(new_tokens, skip_special_tokens=False)[0])
        return "\n\n".join(page.strip() for page in pages)


INPUTS = ("pdf_data", "text", "prompt")


def _documents(request: Any) -> list[tuple[bytes | None, ...]]:
    """(pdf_data, text, prompt) of each document, in row order; None where a row is empty or
    the client left that input out.

    Triton checks that every input of a request has the same batch size; the check is
    repeated here because a wrong row count would pair one document's PDF with another's text.
    """
    columns = {name: _column(request, name) for name in INPUTS}
    sizes = {len(column) for column in columns.values() if column is not None}
    if not sizes:
        raise RequestError("send pdf_data (the PDF's bytes) or text; neither was given")
    if len(sizes) > 1:
        raise RequestError(f"inputs have different batch sizes: {sorted(sizes)}")
    (size,) = sizes
    return [
        tuple(None if columns[name] is None else columns[name][row] for name in INPUTS)
        for row in range(size)
    ]


def _column(request: Any, name: str) -> list[bytes | None] | None:
    """An optional BYTES input of shape [B, 1] as B values (None for an empty one), or None
    when the client left the input out."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy()
    rows = [np.asarray(row).reshape(-1) for row in (values if values.ndim else [values])]
    return [_bytes(row[0]) if row.size else None for row in rows]


def _bytes(value: Any) -> bytes | None:
    value = value if isinstance(value, bytes) else str(value).encode()
    return value or None


def _text(name: str, value: bytes | None) -> str | None:
    """An optional BYTES value read as UTF-8; other bytes are the client's error."""
    try:
        return None if value is None else value.decode()
    except UnicodeDecodeError as exc:
        raise RequestError(f"{name} is not UTF-8 text: {exc}") from exc


def _pypdf_text(data: bytes) -> tuple[str, int]:
    """Every page's text and the page count; any pypdf failure is the client's broken file.

    Parsing and extraction both sit inside the guard because pypdf reads a page lazily, so a
    damaged page may only show itself during extraction.
    """
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        texts = [page.extract_text() for page in reader.pages]
    except Exception as exc:
        raise RequestError(f"pdf_data is not a readable PDF: {type(exc).__name__}: {exc}") from exc
    if not texts:
        raise RequestError("pdf_data is a PDF without pages")
    return "\n".join(texts), len(texts)


def _error(message: str, code: Any) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
