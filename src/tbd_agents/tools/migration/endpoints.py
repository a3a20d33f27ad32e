"""The two ends of a migration, from the settings: which source to read, which database to fill.

Source: `--from-dump PATH` (mongodump directory), `--archive FILE` (mongodump archive) or, by
default, the live MongoDB at MONGO_URI; the database is MONGO_DB_NAME (default
`copilot_agent_hub`, the application's). Target: POSTGRES_URI, else the embedded PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import URL

from tbd_agents.config import Settings, redact_url
from tbd_agents.errors import InvalidData, SchemaNotReady, TbdError
from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.storage.postgres.errors import translate
from tbd_agents.tools.migration.memvectors import MemoryEmbeddings
from tbd_agents.tools.migration.sources import ArchiveSource, DumpSource, MongoSource, Source
from tbd_agents.tools.migration.vectors import VectorSource


def open_source(
    settings: Settings,
    *,
    from_dump: Path | None = None,
    archive: Path | None = None,
    collections: Sequence[str] | None = None,
) -> Source:
    """The source the flags and settings name (not yet read)."""
    if from_dump is not None and archive is not None:
        raise InvalidData("give either --from-dump PATH or --archive FILE, not both")
    database = settings.mongo_db_name
    if archive is not None:
        return ArchiveSource(archive, database, collections)
    if from_dump is not None:
        return DumpSource(from_dump, database)
    return MongoSource.connect(settings.mongo_uri, database)


@dataclass(frozen=True)
class Target:
    url: URL
    embedded: bool

    @property
    def label(self) -> str:
        shown = redact_url(
            self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        )
        return shown + (" (embedded PostgreSQL)" if self.embedded else "")


@contextmanager
def target_database(settings: Settings) -> Iterator[Target]:
    """POSTGRES_URI's database, or the embedded server's (started for the block)."""
    if settings.postgres_uri:
        yield Target(settings.postgres_url(), embedded=False)
        return
    from tbd_agents.storage.postgres.embedded import embedded_server

    with embedded_server(settings) as url:
        yield Target(url, embedded=True)


async def prepare_schema(target: Target, *, dry_run: bool) -> bool:
    """Make sure the target's tables are at the head revision; return whether they are.

    The embedded server is migrated on the spot; any other server must be migrated by its owner
    (`alembic upgrade head`), and is refused with that message. A dry run changes nothing and
    only reports (returns False when the schema is not ready)."""
    from tbd_agents.storage.postgres.migrate import ensure_at_head, upgrade_to_head

    try:
        await ensure_at_head(target.url)
    except SchemaNotReady:
        if dry_run:
            return False
        if not target.embedded:
            raise
        await upgrade_to_head(target.url)
    return True


async def connect(target: Target) -> asyncpg.Connection:
    """A plain asyncpg connection to the target (UTC session, named for pg_stat_activity)."""
    try:
        return await asyncpg.connect(
            libpq_url(target.url),
            server_settings={"application_name": "tbd-agents-migrate", "timezone": "UTC"},
        )
    except Exception as exc:
        domain = translate(exc, url=target.url, embedded=target.embedded)
        if domain is None:
            raise
        raise domain from exc


def open_vectors(
    settings: Settings, target: Target, qdrant_path: Path | None
) -> VectorSource | None:
    """The Qdrant to copy vectors from (`--qdrant-path` local mode directory, else QDRANT_URL),
    with an engine on the target for the pgvector side; None when neither is given."""
    from tbd_agents.storage.postgres.engine import create_engine
    from tbd_agents.vectors.qdrant import QdrantVectorStore, open_qdrant

    if qdrant_path is not None:
        if not qdrant_path.is_dir():
            raise InvalidData(
                f"--qdrant-path {qdrant_path}: no such directory (Qdrant local-mode data)."
            )
        store, label = QdrantVectorStore.at_path(qdrant_path), f"Qdrant local data {qdrant_path}"
    elif settings.qdrant_url:
        store, label = open_qdrant(settings), f"Qdrant {redact_url(settings.qdrant_url)}"
    else:
        return None
    engine = create_engine(
        target.url, application_name="tbd-agents-migrate", pool_size=1, max_overflow=1
    )
    return VectorSource(store, engine, label)


async def close_vectors(vectors: VectorSource | None) -> None:
    if vectors is not None:
        await vectors.qdrant.close()
        await vectors.engine.dispose()


async def open_memory_embeddings(settings: Settings, target: Target) -> MemoryEmbeddings:
    """The configured embedder's space (EMBEDDING_PROVIDER...), which the memory vectors copied
    from the memories' embeddings are recorded as, with an engine on the target to record it."""
    from tbd_agents.embeddings.factory import load_embedder
    from tbd_agents.storage.postgres.engine import create_engine

    choice = await load_embedder(settings)
    engine = create_engine(
        target.url, application_name="tbd-agents-migrate", pool_size=1, max_overflow=1
    )
    return MemoryEmbeddings.from_choice(choice, engine)


@asynccontextmanager
async def database_errors(target: Target) -> AsyncIterator[None]:
    """Turn PostgreSQL errors raised in the block into the product's errors (permission denied,
    schema not ready, unreachable...), each naming the fix; others pass through unchanged."""
    try:
        yield
    except TbdError:
        raise
    except Exception as exc:
        domain = translate(exc, url=target.url, embedded=target.embedded)
        if domain is None or isinstance(domain, InvalidData):
            raise
        raise domain from exc
