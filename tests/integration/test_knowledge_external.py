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
from tbd_agents.domain.models import Agent, KnowledgeSource, Token
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.engine.adapters import RetrieverKnowledge
from tbd_agents.errors import ConfigurationError, InvalidData
from tbd_agents.knowledge import ChunkingOptions, KnowledgeIngestion, KnowledgeRetriever
from tbd_agents.knowledge.external import resolved_config
from tbd_agents.knowledge.files import PgFileStore
from tbd_agents.security.cipher import TokenCipher, generate_fernet_key, parse_key_ring
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


# --- the existing TBD Agents source types and config shapes ----------------------------------
async def test_mongo_db_and_vector_db_sources_of_any_usable_status_are_searched(
    env: tuple[VectorBackend, PostgresStore], tmp_path: Path
) -> None:
    """`mongo_db`: items stored here (as `manual`); `vector_db`: an external Qdrant collection
    (as `qdrant`, payload key `text` by default); `registered` / `connected` are usable."""
    backend, docs = env
    path = tmp_path / "legacy-qdrant"
    client = AsyncQdrantClient(path=str(path))
    await client.create_collection(
        "faq", vectors_config=qm.VectorParams(size=384, distance=qm.Distance.COSINE)
    )
    vectors = await EMB.embed([body for _, body in FAQ])
    await client.upsert(
        "faq",
        points=[
            qm.PointStruct(id=i + 1, vector=v, payload={"text": body})
            for i, ((_, body), v) in enumerate(zip(FAQ, vectors, strict=True))
        ],
    )
    await client.close()
    external = await add_source(
        docs,
        KnowledgeSource.model_validate(
            {
                "name": "legacy-faq",
                "source_type": "vector_db",
                "status": "connected",
                "connection_config": {"path": str(path), "collection": "faq"},
                "tags": ["office"],
            }
        ),
    )
    local = await add_source(
        docs,
        KnowledgeSource.model_validate(
            {"name": "legacy-local", "source_type": "mongo_db", "status": "registered"}
        ),
    )
    ingestion = KnowledgeIngestion(
        docs, backend.store, EMB, PgFileStore(backend.engine), ChunkingOptions(300, 50)
    )  # type: ignore[arg-type]
    await ingestion.ingest_text(local.id, "Expense reports are due on the fifth of each month.")
    retriever = KnowledgeRetriever(docs, backend.store, EMB)
    # The engine's path (source ids, no explicit external list) reaches the external collection.
    knowledge = RetrieverKnowledge(retriever)
    ids = [local.id, external.id]
    passages = await knowledge.search("guest wifi password", source_ids=ids, tags=[], limit=3)
    assert "guest wifi password" in passages[0].text and passages[0].source_id == external.id
    passages = await knowledge.search(
        "when are expense reports due", source_ids=ids, tags=[], limit=3
    )
    assert passages[0].source_id == local.id and "fifth" in passages[0].text
    # attached by tag (the existing union of ids and tags), within the sources one may search
    tagged = await knowledge.search_within(
        "guest wifi password", source_ids=[], tags=["office"], limit=3, within=ids
    )
    assert tagged and tagged[0].source_id == external.id
    outside = await knowledge.search_within(
        "guest wifi password", source_ids=[], tags=["office"], limit=3, within=[local.id]
    )
    assert all(p.source_id != external.id for p in outside)


async def test_existing_pgvector_shape_with_a_dsn_token(
    env: tuple[VectorBackend, PostgresStore], pg18_server: str
) -> None:
    """`{dsn_token_name, collection}`: the DSN comes from a token, the table is LangChain
    PGVector's `langchain_pg_embedding_<collection>` (document, embedding, id)."""
    backend, docs = env
    url = pg.create_database(pg18_server, prefix="lc")
    engine = create_engine(url, pool_size=1)
    cipher = TokenCipher(parse_key_ring(f"1:{generate_fernet_key()}"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            await conn.execute(
                text(
                    "CREATE TABLE langchain_pg_embedding_faq (id varchar PRIMARY KEY, "
                    "collection_id uuid, embedding vector(384), document text, cmetadata jsonb)"
                )
            )
            vectors = await EMB.embed([b for _, b in FAQ])
            await conn.execute(
                text(
                    "INSERT INTO langchain_pg_embedding_faq (id, document, embedding, cmetadata) "
                    "VALUES (:i, :b, CAST(:v AS vector), '{}')"
                ),
                [
                    {"i": f"doc-{i}", "b": b, "v": "[" + ",".join(map(str, v)) + "]"}
                    for i, ((_, b), v) in enumerate(zip(FAQ, vectors, strict=True))
                ],
            )
        dsn = url.render_as_string(hide_password=False)
        value, version = cipher.encrypt(dsn)
        async with docs.unit_of_work() as repos:
            await repos.tokens.create(
                Token(name="kb-dsn", encrypted_value=value, key_version=version)
            )
        source = await add_source(
            docs,
            KnowledgeSource.model_validate(
                {
                    "name": "lc",
                    "source_type": "pgvector",
                    "connection_config": {"dsn_token_name": "kb-dsn", "collection": "faq"},
                }
            ),
        )
        agent = Agent(name="a", knowledge_source_ids=[source.id])
        without = KnowledgeRetriever(docs, backend.store, EMB)
        with pytest.raises(ConfigurationError, match="TOKEN_ENCRYPTION_KEY"):
            await without.for_agent(agent, "bicycles")
        retriever = KnowledgeRetriever(docs, backend.store, EMB, cipher=lambda: cipher)
        hits = await retriever.for_agent(agent, "where do bicycles go?")
        assert "basement rack" in hits[0].text and hits[0].citation.external_id == "doc-2"
        # the DSN written in the config works too; a collection that is not a name is refused
        inline = source.model_copy(update={"connection_config": {"dsn": dsn, "collection": "faq"}})
        found = await retriever.retrieve(
            "guest wifi", source_ids=[inline.id], external_sources=[inline]
        )
        assert "wifi" in found[0].text
        bad = source.model_copy(
            update={"connection_config": {"dsn": dsn, "collection": "faq; DROP TABLE x"}}
        )
        with pytest.raises(InvalidData, match="letters, digits and _ only"):
            await retriever.retrieve("x", source_ids=[bad.id], external_sources=[bad])
        missing = source.model_copy(
            update={"connection_config": {"dsn_token_name": "nope", "collection": "faq"}}
        )
        with pytest.raises(InvalidData, match="nope"):
            await retriever.retrieve("x", source_ids=[missing.id], external_sources=[missing])
    finally:
        await engine.dispose()
        pg.drop_database(url)


async def test_vector_db_api_key_token_name_is_resolved_for_the_search(
    env: tuple[VectorBackend, PostgresStore],
) -> None:
    _, docs = env
    cipher = TokenCipher(parse_key_ring(f"1:{generate_fernet_key()}"))
    value, version = cipher.encrypt("qdrant-secret")
    async with docs.unit_of_work() as repos:
        await repos.tokens.create(
            Token(name="qd-key", encrypted_value=value, key_version=version, created_by="carol")
        )
        source = KnowledgeSource.model_validate(
            {
                "name": "remote",
                "source_type": "vector_db",
                "connection_config": {
                    "url": "http://qdrant.internal:6333",
                    "collection": "docs",
                    "api_key_token_name": "qd-key",
                },
                "created_by": "carol",
            }
        )
        resolved = await resolved_config(repos, cipher, source)
    assert resolved["api_key"] == "qdrant-secret" and resolved["collection"] == "docs"
    assert "qdrant-secret" not in str(source.connection_config)  # never stored
