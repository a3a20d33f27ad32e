"""Vector search timing on both vector stores (pgvector on the embedded PostgreSQL, Qdrant in
its local mode): each search observes `tbd_vector_search_duration_seconds{backend,kind}` once
and opens a `vector_search` span; a refused search (unknown collection) is timed too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tbd_agents.errors import UnsupportedQuery
from tbd_agents.vectors.base import VectorRecord
from tests.observability.conftest import Deltas, by_name
from tests.support.vectors import BACKENDS, SPACE, VectorBackend, open_backend, unit_vectors


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, pg18_server: str, tmp_path: Path
) -> AsyncIterator[VectorBackend]:
    async with open_backend(request.param, pg18_server, tmp_path) as b:
        yield b


async def test_each_search_is_timed_by_backend_and_kind(backend: VectorBackend, spans: Any) -> None:
    vecs = unit_vectors(5, seed=3)
    await backend.memories([f"m{i}" for i in range(5)])
    records = [
        VectorRecord(id=f"m{i}", vector=[float(x) for x in v], text=f"memory {i}",
                     payload={"agent_id": "agent", "scope": "agent", "key": f"m{i}"})
        for i, v in enumerate(vecs)
    ]  # fmt: skip
    await backend.store.upsert("memories", records, SPACE)
    deltas = Deltas()
    hits = await backend.store.search("memories", vecs[2].tolist(), SPACE, 3)
    with pytest.raises(UnsupportedQuery):
        await backend.store.search("no_such_collection", vecs[2].tolist(), SPACE, 3)
    d = deltas.take()
    assert hits[0].id == "m2"
    assert d("tbd_vector_search_duration_seconds_count", backend=backend.name, kind="memory") == 1
    assert d("tbd_vector_search_duration_seconds_count", backend=backend.name,
             kind="other") == 1  # fmt: skip
    searches = by_name(spans.get_finished_spans(), "vector_search")
    assert [(s.attributes or {})["db.system.name"] for s in searches] == [backend.name] * 2
    assert (searches[1].attributes or {})["error.type"] == "UnsupportedQuery"
