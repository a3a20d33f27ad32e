"""One behavioural suite for both vector stores: pgvector (embedded PostgreSQL 18) and Qdrant
(local mode). Upsert, delete, filtered top-k, embedding-space mismatch, collection metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.errors import InvalidData, UnsupportedQuery
from tbd_agents.storage.protocol import Filter, Op, contains_any, eq, in_, is_null, ne, not_in
from tbd_agents.vectors.base import EmbeddingMismatch, VectorRecord, Where
from tests.support.vectors import BACKENDS, SPACE, VectorBackend, open_backend, unit_vectors

KC = "knowledge_chunks"


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, pg18_server: str, tmp_path: Path
) -> AsyncIterator[VectorBackend]:
    async with open_backend(request.param, pg18_server, tmp_path) as b:
        yield b


def chunk(
    i: int,
    vec: np.ndarray,
    *,
    item: str = "item-0",
    source: str = "src",
    tags: tuple[str, ...] = (),
    text: str | None = None,
) -> VectorRecord:
    return VectorRecord(
        id=f"{item}:{i}",
        vector=[float(x) for x in vec],
        text=text if text is not None else f"chunk number {i}",
        payload={
            "item_id": item,
            "source_id": source,
            "chunk_index": i,
            "start_offset": i * 10,
            "end_offset": i * 10 + 9,
            "tags": list(tags),
        },
    )


async def test_collection_records_model_and_dimension(backend: VectorBackend) -> None:
    store = backend.store
    assert await store.collection_info(KC) is None
    info = await store.ensure_collection(KC, SPACE)
    assert info.space == SPACE
    assert info.count == 0
    await backend.knowledge_items(["item-0"])
    await store.upsert(KC, [chunk(i, v) for i, v in enumerate(unit_vectors(3))], SPACE)
    again = await store.ensure_collection(KC, SPACE)
    assert again.space == SPACE
    assert (await store.collection_info(KC)).count == 3


async def test_other_model_or_dimension_is_refused_with_the_fix(backend: VectorBackend) -> None:
    store = backend.store
    await store.ensure_collection(KC, SPACE)
    other_model = EmbeddingSpace("another-model", 384)
    with pytest.raises(EmbeddingMismatch) as err:
        await store.ensure_collection(KC, other_model)
    msg = str(err.value)
    assert "'test-model' (384 dimensions)" in msg
    assert "'another-model' (384 dimensions)" in msg
    assert "tbd-agents vectors reembed knowledge_chunks" in msg
    await backend.knowledge_items(["item-0"])
    vec = unit_vectors(1)[0]
    with pytest.raises(EmbeddingMismatch):
        await store.upsert(KC, [chunk(0, vec)], other_model)
    wider = EmbeddingSpace("test-model", 768)
    with pytest.raises(EmbeddingMismatch, match="768 dimensions"):
        await store.search(KC, [0.1] * 768, wider, 5)
    assert await store.count(KC) == 0


async def test_upsert_replaces_by_id_and_get_returns_payload(backend: VectorBackend) -> None:
    store = backend.store
    await backend.knowledge_items(["item-0"])
    vecs = unit_vectors(4, seed=1)
    await store.upsert(KC, [chunk(i, v, tags=("a",)) for i, v in enumerate(vecs[:3])], SPACE)
    await store.upsert(KC, [chunk(1, vecs[3], tags=("b", "c"), text="replaced")], SPACE)
    assert await store.count(KC) == 3
    (hit,) = await store.get(KC, ["item-0:1"])
    assert hit.text == "replaced"
    assert hit.payload["tags"] == ["b", "c"]
    assert hit.payload["chunk_index"] == 1
    assert hit.payload["end_offset"] == 19
    top = await store.search(KC, vecs[3].tolist(), SPACE, 1)
    assert top[0].id == "item-0:1"
    assert top[0].score == pytest.approx(1.0, abs=1e-3)


async def test_search_orders_by_similarity(backend: VectorBackend) -> None:
    store = backend.store
    await backend.knowledge_items(["item-0"])
    vecs = unit_vectors(50, seed=2)
    await store.upsert(KC, [chunk(i, v) for i, v in enumerate(vecs)], SPACE)
    q = vecs[7] + 0.05 * vecs[8]
    q = q / np.linalg.norm(q)
    hits = await store.search(KC, q.tolist(), SPACE, 5)
    expected = np.argsort(-(vecs @ q))[:5]
    assert [h.id for h in hits] == [f"item-0:{i}" for i in expected]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_filtered_top_k_returns_k_when_k_match(backend: VectorBackend) -> None:
    """10 rare records far from the query among 600: a post-filtered ANN would miss them."""
    store = backend.store
    items = ["common", "rare"]
    await backend.knowledge_items(items)
    vecs = unit_vectors(600, seed=3)
    query = vecs[0]
    # The rare records are the 10 farthest from the query.
    far = set(np.argsort(vecs @ query)[:10].tolist())
    records = [
        chunk(i, v, item="rare" if i in far else "common", tags=("rare",) if i in far else ("x",))
        for i, v in enumerate(vecs)
    ]
    await store.upsert(KC, records, SPACE)
    hits = await store.search(KC, query.tolist(), SPACE, 10, Where((eq("item_id", "rare"),)))
    assert len(hits) == 10
    assert {h.payload["item_id"] for h in hits} == {"rare"}
    by_tag = await store.search(
        KC, query.tolist(), SPACE, 10, Where((contains_any("tags", ["rare"]),))
    )
    assert {h.id for h in by_tag} == {h.id for h in hits}
    # fewer matches than k: all of them, no padding
    four = await store.search(
        KC, query.tolist(), SPACE, 10, Where((in_("chunk_index", sorted(far)[:4]),))
    )
    assert len(four) == 4
    none = await store.search(KC, query.tolist(), SPACE, 10, Where((in_("item_id", []),)))
    assert none == []


async def test_any_of_groups_combine_with_or(backend: VectorBackend) -> None:
    store = backend.store
    await backend.knowledge_items(["a", "b"])
    await backend.knowledge_items(["c"], source_id="other")
    vecs = unit_vectors(9, seed=4)
    records = [
        chunk(i, vecs[i], item=item, source="other" if item == "c" else "src", tags=(item,))
        for i, item in enumerate("aaabbbccc")
    ]
    await store.upsert(KC, records, SPACE)
    where = Where(any_of=((eq("source_id", "other"),), (contains_any("tags", ["a"]),)))
    hits = await store.search(KC, vecs[4].tolist(), SPACE, 10, where)
    assert sorted(h.payload["item_id"] for h in hits) == ["a"] * 3 + ["c"] * 3
    assert await store.count(KC, Where((ne("item_id", "a"), not_in("chunk_index", [3])))) == 5


async def test_delete_by_id_and_by_filter(backend: VectorBackend) -> None:
    store = backend.store
    await backend.knowledge_items(["x", "y"])
    vecs = unit_vectors(6, seed=5)
    await store.upsert(KC, [chunk(i, vecs[i], item="x" if i < 3 else "y") for i in range(6)], SPACE)
    assert await store.delete(KC, ["x:0", "x:1", "missing"]) == 2
    assert await store.get(KC, ["x:0"]) == []
    assert await store.delete_where(KC, Where((eq("item_id", "y"),))) == 3
    assert await store.count(KC) == 1
    remaining = await store.search(KC, vecs[3].tolist(), SPACE, 10)
    assert [h.id for h in remaining] == ["x:2"]
    with pytest.raises(UnsupportedQuery, match="at least one condition"):
        await store.delete_where(KC, Where())


async def test_text_search_matches_words_within_filter(backend: VectorBackend) -> None:
    store = backend.store
    await backend.knowledge_items(["d1", "d2"])
    vecs = unit_vectors(4, seed=6)
    texts = [
        "Refunds are issued within 30 days of purchase.",
        "Our office is closed on public holidays.",
        "A refund requires the original receipt; refunds go to the card.",
        "Shipping takes five days.",
    ]
    records = [chunk(i, vecs[i], item="d1" if i < 2 else "d2", text=t) for i, t in enumerate(texts)]
    await store.upsert(KC, records, SPACE)
    hits = await store.text_search(KC, "how do refunds work?", 5)
    assert {h.id for h in hits} == {"d1:0", "d2:2"}
    assert hits[0].id == "d2:2"  # two mentions rank above one
    scoped = await store.text_search(KC, "refund", 5, Where((eq("item_id", "d1"),)))
    assert [h.id for h in scoped] == ["d1:0"]
    assert await store.text_search(KC, "the", 5) == []


async def test_text_search_with_all_words_needs_every_word(backend: VectorBackend) -> None:
    """The strict keyword query of hybrid retrieval: every word (stemmed, stop words aside),
    the same on both backends."""
    store = backend.store
    await backend.knowledge_items(["d1"])
    vecs = unit_vectors(3, seed=7)
    texts = [
        "Refunds are issued to the card within 30 days.",
        "A refund needs the receipt.",
        "Cards are charged monthly.",
    ]
    records = [chunk(i, vecs[i], item="d1", text=t) for i, t in enumerate(texts)]
    await store.upsert(KC, records, SPACE)
    assert {h.id for h in await store.text_search(KC, "refund card", 5)} == {
        "d1:0",
        "d1:1",
        "d1:2",
    }
    strict = await store.text_search(KC, "Which refunds go to the cards?", 5, all_words=True)
    assert [h.id for h in strict] == []  # "go" is in none of them
    strict = await store.text_search(KC, "the refunded cards", 5, all_words=True)
    assert [h.id for h in strict] == ["d1:0"]
    assert await store.text_search(KC, "refund receipts", 5, all_words=True) != []
    assert await store.text_search(KC, "the", 5, all_words=True) == []


async def test_bad_filters_and_payloads_are_refused(backend: VectorBackend) -> None:
    store = backend.store
    await store.ensure_collection(KC, SPACE)
    vec = unit_vectors(1)[0].tolist()
    with pytest.raises(UnsupportedQuery, match="has no field 'colour'"):
        await store.search(KC, vec, SPACE, 3, Where((eq("colour", "red"),)))
    with pytest.raises(UnsupportedQuery, match="contains_any does not apply"):
        await store.search(KC, vec, SPACE, 3, Where((contains_any("item_id", ["a"]),)))
    with pytest.raises(UnsupportedQuery, match="gt operator"):
        await store.search(KC, vec, SPACE, 3, Where((Filter("chunk_index", Op.GT, 1),)))
    with pytest.raises(UnsupportedQuery, match="unknown vector collection"):
        await store.count("nope")
    bad = VectorRecord(id="r", vector=vec, text="t", payload={"item_id": "i", "colour": "red"})
    with pytest.raises(InvalidData, match="colour"):
        await store.upsert(KC, [bad], SPACE)
    assert await store.count(KC, Where((is_null("item_id"),))) == 0
