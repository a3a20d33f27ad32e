"""External Qdrant and pgvector collections registered as knowledge sources: queried read-only,
fused with the agent's own knowledge, cited by their record id; other models are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm
from sqlalchemy import text

from tbd_agents.domain.enums import KnowledgeSourceType
from tbd_agents.domain.models import Agent, KnowledgeSource
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.knowledge import ChunkingOptions, KnowledgeIngestion, KnowledgeRetriever
from tbd_agents.knowledge.files import PgFileStore
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.vectors.base import EmbeddingMismatch
from tests.support import pg
from tests.support.vectors import VectorBackend, open_backend

EMB = HashingEmbedder(384)
FAQ = [
    ("Printers", "The office printer on floor 2 needs a badge to release print jobs."),
    ("Wifi", "The guest wifi password changes every Monday at noon."),
    ("Parking", "Bicycles go in the basement rack next to the lifts."),
]


@pytest.fixture
async def env(
    pg18_server: str, tmp_path: Path
) -> AsyncIterator[tuple[VectorBackend, PostgresStore]]:
    async with open_backend("pgvector", pg18_server, tmp_path) as backend:
        assert backend.engine is not None
        yield backend, PostgresStore(backend.engine, owns_engine=False)


async def make_qdrant_collection(path: Path) -> None:
    client = AsyncQdrantClient(path=str(path))
    await client.create_collection(
        "faq", vectors_config=qm.VectorParams(size=384, distance=qm.Distance.COSINE)
    )
    vectors = await EMB.embed([body for _, body in FAQ])
    await client.upsert(
        "faq",
        points=[
            qm.PointStruct(id=i + 1, vector=v, payload={"heading": h, "body": b})
            for i, ((h, b), v) in enumerate(zip(FAQ, vectors, strict=True))
        ],
    )
    await client.close()


async def add_source(docs: PostgresStore, source: KnowledgeSource) -> KnowledgeSource:
    async with docs.unit_of_work() as repos:
        return await repos.for_model(KnowledgeSource).create(source)


async def test_external_qdrant_collection_is_fused_and_cited(
    env: tuple[VectorBackend, PostgresStore], tmp_path: Path
) -> None:
    backend, docs = env
    await make_qdrant_collection(tmp_path / "ext")
    external = await add_source(
        docs,
        KnowledgeSource(
            name="faq",
            source_type=KnowledgeSourceType.QDRANT,
            connection_config={
                "path": str(tmp_path / "ext"),
                "collection": "faq",
                "text_field": "body",
                "title_field": "heading",
                "model": "tbd-hashing-v1",
            },
        ),
    )
    own = await add_source(docs, KnowledgeSource(name="own"))
    ingestion = KnowledgeIngestion(
        docs, backend.store, EMB, PgFileStore(backend.engine), ChunkingOptions(300, 50)
    )  # type: ignore[arg-type]
    await ingestion.ingest_text(own.id, "Holiday requests go through the HR portal.")
    retriever = KnowledgeRetriever(docs, backend.store, EMB)
    agent = Agent(name="a", knowledge_source_ids=[own.id, external.id])

    hits = await retriever.for_agent(agent, "What is the guest wifi password schedule?")
    top = hits[0]
    assert "guest wifi password" in top.text
    assert top.citation.item_id == "external:2"
    assert top.citation.external_id == "2"
    assert top.citation.source_id == external.id
    assert top.citation.title == "Wifi"
    hits = await retriever.for_agent(agent, "How do I request holiday?")
    assert hits[0].citation.source_id == own.id

    client = AsyncQdrantClient(path=str(tmp_path / "ext"))
    assert (await client.count("faq")).count == 3  # nothing written
    await client.close()


async def test_external_collection_of_another_model_is_refused(
    env: tuple[VectorBackend, PostgresStore], tmp_path: Path
) -> None:
    backend, docs = env
    await make_qdrant_collection(tmp_path / "ext2")
    source = await add_source(
        docs,
        KnowledgeSource(
            name="other-model",
            source_type=KnowledgeSourceType.QDRANT,
            connection_config={"path": str(tmp_path / "ext2"), "collection": "faq", "model": "e5"},
        ),
    )
    retriever = KnowledgeRetriever(docs, backend.store, EMB)
    with pytest.raises(EmbeddingMismatch, match="'e5' \\(384 dimensions\\)"):
        await retriever.for_agent(Agent(name="a", knowledge_source_ids=[source.id]), "wifi")


async def test_external_pgvector_table_is_queried_read_only(
    env: tuple[VectorBackend, PostgresStore], pg18_server: str
) -> None:
    backend, docs = env
    url = pg.create_database(pg18_server, prefix="ext")
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            await conn.execute(
                text("CREATE TABLE kb (id int PRIMARY KEY, body text, emb vector(384))")
            )
            vectors = await EMB.embed([b for _, b in FAQ])
            await conn.execute(
                text("INSERT INTO kb VALUES (:i, :b, CAST(:v AS vector))"),
                [
                    {"i": i, "b": b, "v": "[" + ",".join(map(str, v)) + "]"}
                    for i, ((_, b), v) in enumerate(zip(FAQ, vectors, strict=True))
                ],
            )
        uri = url.render_as_string(hide_password=False)
        source = await add_source(
            docs,
            KnowledgeSource(
                name="kb",
                source_type=KnowledgeSourceType.PGVECTOR,
                connection_config={
                    "uri": uri,
                    "table": "kb",
                    "text_column": "body",
                    "vector_column": "emb",
                },
            ),
        )
        retriever = KnowledgeRetriever(docs, backend.store, EMB)
        agent = Agent(name="a", knowledge_source_ids=[source.id])
        hits = await retriever.for_agent(agent, "where do bicycles go?")
        assert "basement rack" in hits[0].text
        assert hits[0].citation.external_id == "2"
        bad = source.model_copy(
            update={"connection_config": {**source.connection_config, "table": "kb; DROP TABLE kb"}}
        )
        with pytest.raises(Exception, match="is not a name"):
            await retriever.retrieve("x", source_ids=[bad.id], external_sources=[bad])
    finally:
        await engine.dispose()
        pg.drop_database(url)
