"""Contract: `make smoke`'s ML-backend checks against the real adapter process in front of the
real tritonserver (CPU), with a PDF from a file server as an operator's: health with the
credentials, a refusal without, and the PDF's sentence back from one prediction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oceanid.smoke import Result, Target, check_ml_backend
from tests.contract.conftest import Server
from tests.contract.ml_adapter import Adapter, FileServer, start_adapter
from tests.gpu.triton_smoke import minimal_pdf

pytestmark = pytest.mark.contract

SENTENCE = "Oceanid smoke reads this sentence (ml)"


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    with FileServer({"doc.pdf": minimal_pdf(SENTENCE)}) as server:
        yield server


@pytest.fixture(scope="module")
def adapter(triton: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adapter]:
    with start_adapter(tmp_path_factory.mktemp("adapter"), triton.url) as started:
        yield started


def run(adapter: Adapter, pdf_url: str | None, auth=None) -> tuple[list[Result], list[str]]:
    target = Target("ml", "ml.boathou.se", adapter.url, auth=auth or adapter.auth)
    said: list[str] = []
    return list(check_ml_backend(target, 60, pdf_url, said.append)), said


def test_every_ml_check_passes_and_the_sentence_comes_back(adapter, files) -> None:
    results, said = run(adapter, f"{files.url}/doc.pdf")
    assert [(r.ok, r.what) for r in results] == [
        (True, "ml.boathou.se ML backend"),
        (True, "ml.boathou.se ML backend refuses no credentials"),
        (True, "ml.boathou.se ML backend prediction"),
    ], [r.line() for r in results]
    assert "docling_granite_python@" in results[0].detail
    assert SENTENCE in results[2].detail and said == []


def test_wrong_credentials_fail_the_health_check(adapter) -> None:
    results, _ = run(adapter, None, auth=(adapter.user, "not-the-password"))
    assert not results[0].ok and "HTTP 401" in results[0].detail
    assert "not-the-password" not in "".join(r.line() for r in results)


def test_without_a_pdf_url_the_prediction_is_skipped_saying_why(adapter) -> None:
    results, said = run(adapter, None)
    assert [r.ok for r in results] == [True, True]
    assert said == [
        "SKIP ml.boathou.se ML backend prediction — no smoke_pdf_url setting: set it to a PDF "
        "its GPU host can fetch"
    ]


def test_a_pdf_the_backend_cannot_fetch_fails_the_prediction(adapter, files) -> None:
    results, _ = run(adapter, f"{files.url}/missing.pdf")
    assert not results[2].ok and "no text came back" in results[2].detail


def test_a_server_that_does_not_ask_for_credentials_fails(files) -> None:
    """An ML name whose origin answers without basic auth (here: a plain file server) fails
    the refusal check: Label Studio's credentials would guard nothing."""
    target = Target("ml", "ml.boathou.se", files.url, auth=("u", "p"))
    results = list(check_ml_backend(target, 10, None, lambda line: None))
    assert not results[1].ok and "must refuse" in results[1].detail
