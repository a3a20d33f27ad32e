"""Hybrid retrieval's fusion on both stacks (PostgreSQL + pgvector; MongoDB + Qdrant local),
with a fixed semantic-looking embedder: keyword noise must not outrank the chunk the vector side
ranks first, and a question naming a rare exact term still finds the chunk containing it when
the vector side ranks that chunk last."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tbd_agents.embeddings.base import EmbeddingSpace, normalise
from tbd_agents.knowledge.fusion import SEMANTIC, weights_for
from tests.integration.test_knowledge_ingestion import Stack, open_stack
from tests.support.vectors import BACKENDS

RIGHT = "The break statement leaves the innermost loop at once."
NOISE = "Press the End key to jump to the end of the line."
CODE = "E4711: the licence file is missing or unreadable."
OTHER = "Installing the tool needs an account."
PARAPHRASE = "How do I stop a repetition early, before the end?"
EXACT = "What does error E4711 mean?"

# Where each text lies: the paraphrase points at RIGHT, NOISE nearby; the exact-term question
# points at OTHER and away from CODE (a model that does not know the code).
VECTORS: dict[str, list[float]] = {
    RIGHT: [1.0, 0.0, 0.0, 0.0],
    NOISE: [0.8, 0.6, 0.0, 0.0],
    CODE: [0.0, 0.0, 1.0, 0.0],
    OTHER: [0.0, 0.0, 0.0, 1.0],
    PARAPHRASE: [1.0, 0.0, 0.0, 0.0],
    EXACT: [0.6, 0.0, 0.0, 0.8],
}


class FixedEmbedder:
    """Known vectors for known texts, in a space that is not the hashing embedder's (so the
    retriever uses the semantic weights)."""

    space = EmbeddingSpace("fixed-semantic-test", 384)  # the size the pgvector tables have

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [await self.embed_query(t) for t in texts]

    async def embed_query(self, text: str) -> list[float]:
        return normalise([*VECTORS[text], *([0.0] * 380)])


@pytest.fixture(params=BACKENDS)
async def stack(
    request: pytest.FixtureRequest, pg18_server: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    async for s in open_stack(request.param, pg18_server, tmp_path, FixedEmbedder()):
        yield s


async def ingest(stack: Stack) -> str:
    source = await stack.source("notes")
    for text in (RIGHT, NOISE, CODE, OTHER):
        await stack.ingestion.ingest_text(source.id, text, title=text[:10])
    return source.id


async def test_keyword_noise_does_not_outrank_the_vector_favourite(stack: Stack) -> None:
    assert weights_for(stack.embedder.space) == SEMANTIC
    source_id = await ingest(stack)
    # The full-text side alone ranks the noise chunk first (it shares "end" with the question).
    by_text = await stack.vectors.text_search("knowledge_chunks", PARAPHRASE, 5)
    assert [h.text for h in by_text] == [NOISE]
    hits = await stack.retriever.retrieve(PARAPHRASE, source_ids=[source_id], k=2)
    assert [h.text for h in hits] == [RIGHT, NOISE]
    assert hits[0].keyword_rank is None  # noise was not even fetched as a keyword hit


async def test_a_rare_exact_term_is_found_when_the_vector_side_misses_it(stack: Stack) -> None:
    source_id = await ingest(stack)
    vector_only = await stack.vectors.search(
        "knowledge_chunks", await stack.embedder.embed_query(EXACT), stack.embedder.space, 4
    )
    assert vector_only[-1].text == CODE  # the vector side ranks the code's chunk last
    # "error" and "mean" are not in the chunk: the strict all-words query finds nothing, the
    # named term E4711 does.
    assert await stack.vectors.text_search("knowledge_chunks", EXACT, 5, all_words=True) == []
    hits = await stack.retriever.retrieve(EXACT, source_ids=[source_id], k=2)
    assert hits[0].text == CODE
    assert hits[0].keyword_rank == 1
