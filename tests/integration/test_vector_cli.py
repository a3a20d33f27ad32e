"""`tbd-agents vectors status|reembed` against Qdrant local mode in a temporary DATA_DIR."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tbd_agents.cli import app
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.vectors.base import VectorRecord
from tbd_agents.vectors.qdrant import QdrantVectorStore

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DB_BACKEND", "mongo")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped
    monkeypatch.chdir(tmp_path)  # no stray .env
    return tmp_path


def fill(path: Path) -> None:
    async def go() -> None:
        store = QdrantVectorStore.at_path(path / "qdrant")
        emb = HashingEmbedder(384)
        texts = ["alpha beta", "gamma delta", "epsilon zeta"]
        vectors = await emb.embed(texts)
        await store.upsert(
            "memories",
            [
                VectorRecord(
                    id=f"m{i}",
                    vector=v,
                    text=t,
                    payload={"agent_id": "a", "scope": "agent", "key": f"k{i}"},
                )
                for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
            ],
            emb.space,
        )
        await store.close()

    asyncio.run(go())


def test_status_then_reembed_to_another_dimension(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(data_dir)
    shown = runner.invoke(app, ["vectors", "status"])
    assert shown.exit_code == 0, shown.output
    assert "tbd-hashing-v1" in shown.output
    assert "(not created yet)" in shown.output  # knowledge_chunks
    monkeypatch.setenv("EMBEDDING_DIMENSIONS", "128")
    done = runner.invoke(app, ["vectors", "reembed", "memories", "--batch-size", "2"])
    assert done.exit_code == 0, done.output
    assert "memories now holds vectors of 'tbd-hashing-v1' (128 dimensions)" in done.output
    shown = runner.invoke(app, ["vectors", "status"])
    assert "128" in shown.output


def test_reembed_refuses_fallback_and_unknown_collection(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = runner.invoke(app, ["vectors", "reembed", "everything"])
    assert bad.exit_code == 1
    assert "unknown collection 'everything'" in bad.output
    monkeypatch.setenv("EMBEDDING_PROVIDER", "fastembed")
    refused = runner.invoke(app, ["vectors", "reembed", "memories"])
    assert refused.exit_code == 1
    assert "Refusing to re-embed with the fallback" in refused.output


def test_index_memories_embeds_the_memories_without_a_vector(
    pg18_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tbd_agents.domain.models import Memory
    from tbd_agents.storage.postgres.engine import create_engine
    from tbd_agents.storage.postgres.repository import PostgresStore
    from tests.support import pg

    url = pg.create_migrated_database(pg18_server, prefix="idxmem")
    try:

        async def add() -> None:
            store = PostgresStore(create_engine(url), url=url)
            async with store.unit_of_work() as repos:
                await repos.memories.create(Memory(agent_id="a", key="city", value="Porto"))
            await store.close()

        pg.run(add())
        monkeypatch.setenv("DB_BACKEND", "postgres")
        monkeypatch.setenv("POSTGRES_URI", url.render_as_string(hide_password=False))
        monkeypatch.setenv("VECTOR_STORE_BACKEND", "pgvector")
        monkeypatch.setenv("DATA_DIR", str(tmp_path))
        monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
        monkeypatch.chdir(tmp_path)
        first = runner.invoke(app, ["vectors", "index-memories"])
        assert first.exit_code == 0, first.output
        assert "1 memories indexed." in first.output
        again = runner.invoke(app, ["vectors", "index-memories"])
        assert again.exit_code == 0 and "0 memories indexed." in again.output
    finally:
        pg.drop_database(url)
