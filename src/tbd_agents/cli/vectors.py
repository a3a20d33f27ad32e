"""`tbd-agents vectors ...`: inspect vector collections and re-embed them with a new model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from tbd_agents.cli.common import fail, friendly_errors, settings
from tbd_agents.config import Settings, VectorBackend
from tbd_agents.embeddings import load_embedder
from tbd_agents.vectors.base import COLLECTIONS, VectorStore

app = typer.Typer(
    help=(
        "Vector collections (knowledge chunks, memories): show which embedding model each holds, "
        "and rebuild one for the model configured by EMBEDDING_PROVIDER / EMBEDDING_MODEL."
    ),
    no_args_is_help=True,
)


@asynccontextmanager
async def _store(cfg: Settings) -> AsyncIterator[VectorStore]:
    if cfg.vector_backend is VectorBackend.QDRANT:
        from tbd_agents.vectors.qdrant import open_qdrant

        qdrant = open_qdrant(cfg)
        try:
            yield qdrant
        finally:
            await qdrant.close()
        return
    from tbd_agents.storage.postgres.engine import create_engine
    from tbd_agents.storage.postgres.migrate import prepare_database
    from tbd_agents.vectors.pgvector import PgVectorStore

    prepared = await prepare_database(cfg)
    engine = create_engine(prepared.url, application_name="tbd-agents-vectors", pool_size=2)
    try:
        yield PgVectorStore(engine)
    finally:
        await engine.dispose()
        await prepared.aclose()


async def _status(cfg: Settings) -> Table:
    table = Table("collection", "model", "dimensions", "records", "re-embed pending")
    async with _store(cfg) as store:
        for name in COLLECTIONS:
            info = await store.collection_info(name)
            if info is None:
                table.add_row(name, "(not created yet)", "", "0", "")
                continue
            pending = info.pending.describe() if info.pending else ""
            table.add_row(
                name, info.space.model, str(info.space.dimension), str(info.count), pending
            )
    return table


@app.command()
@friendly_errors
def status() -> None:
    """Show each collection's embedding model, dimension and size."""
    Console().print(asyncio.run(_status(settings())))


async def _reembed(cfg: Settings, collection: str, batch_size: int) -> str:
    choice = await load_embedder(cfg)
    if choice.fell_back:
        raise fail(
            f"{choice.message} Refusing to re-embed with the fallback: make the configured model "
            "loadable first (or set EMBEDDING_PROVIDER=hashing on purpose)."
        )
    embedder = choice.embedder
    async with _store(cfg) as store:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        ) as bar:
            task = bar.add_task(f"re-embedding {collection}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if store.backend == "pgvector":
                from tbd_agents.vectors.pgvector import PgVectorStore
                from tbd_agents.vectors.reembed import reembed_pgvector

                assert isinstance(store, PgVectorStore)
                await reembed_pgvector(
                    store, collection, embedder, batch_size=batch_size, progress=progress
                )
            else:
                from tbd_agents.vectors.qdrant import QdrantVectorStore
                from tbd_agents.vectors.reembed import reembed_qdrant

                assert isinstance(store, QdrantVectorStore)
                await reembed_qdrant(
                    store, collection, embedder, batch_size=batch_size, progress=progress
                )
    return embedder.space.describe()


@app.command()
@friendly_errors
def reembed(
    collection: Annotated[
        str, typer.Argument(help="knowledge_chunks or memories", show_default=False)
    ],
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="Records per batch.")] = 256,
) -> None:
    """Rebuild COLLECTION with the configured embedding model (new column/index or collection).

    Safe to interrupt: run the same command again and it resumes. Stop the application (or at
    least its writers) while it runs: records changed meanwhile may keep an old vector."""
    if collection not in COLLECTIONS:
        raise fail(f"unknown collection {collection!r}: use one of {', '.join(COLLECTIONS)}")
    space = asyncio.run(_reembed(settings(), collection, batch_size))
    typer.echo(f"{collection} now holds vectors of {space}.")


async def _index_memories(cfg: Settings, batch_size: int) -> int:
    from tbd_agents.cli.serve import open_cli_store
    from tbd_agents.services.memory import MemoryService
    from tbd_agents.vectors.factory import open_vector_store

    choice = await load_embedder(cfg)
    if choice.fell_back:
        raise fail(
            f"{choice.message} Refusing to index with the fallback: make the configured model "
            "loadable first (or set EMBEDDING_PROVIDER=hashing on purpose)."
        )
    async with open_cli_store(cfg) as documents:
        vectors = open_vector_store(cfg, documents)
        try:
            service = MemoryService(documents, vectors, choice.embedder)
            return await service.index_missing(batch_size)
        finally:
            await vectors.close()


@app.command("index-memories")
@friendly_errors
def index_memories(
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="Memories per batch.")] = 256,
) -> None:
    """Embed the stored memories that have no vector yet (e.g. an existing deployment's
    memories on the MongoDB profile), so semantic memory search finds them. Safe to re-run."""
    count = asyncio.run(_index_memories(settings(), batch_size))
    typer.echo(f"{count} memories indexed.")
