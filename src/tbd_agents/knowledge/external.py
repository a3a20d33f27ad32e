"""External vector collections registered as knowledge sources, queried read-only.

A knowledge source with `source_type` `qdrant` or `pgvector` points at a collection that another
system filled. Its `connection_config` says where and which fields hold the text:

* qdrant: `{"collection": "...", "url": "http://…:6333"` (or `"path"` for a local-mode directory),
  `"api_key"`, `"vector_name"` (named vectors), `"text_field"` (default `text`),
  `"title_field"`, `"model"` (the embedding model of its vectors, checked when given)}
* pgvector: `{"uri": "postgresql://…", "table": "...", "text_column"` (default `text`),
  `"vector_column"` (default `embedding`), `"id_column"` (default `id`), `"model"`}

The collection must hold vectors of the same size (and, when `model` is given, the same model) as
the configured embedder; otherwise the search fails with EmbeddingMismatch naming both. Nothing is
ever written to an external collection.

Connections follow `security.outbound`: the qdrant `url` is checked and every request pinned; the
pgvector `uri` host is checked and replaced by the checked address. Records of non-admin owners
may not use a qdrant local `path`, unix sockets or `host=`-style URI parameters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tbd_agents.domain.enums import KnowledgeSourceType
from tbd_agents.domain.models import KnowledgeSource
from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.errors import InvalidData
from tbd_agents.security.outbound import (
    OutboundPolicy,
    OutboundRefused,
    PinnedTransport,
    check_url,
    pin_pg_uri,
)
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.vectors.base import EmbeddingMismatch

EXTERNAL_TYPES = frozenset({KnowledgeSourceType.QDRANT, KnowledgeSourceType.PGVECTOR})
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


@dataclass(frozen=True, slots=True)
class ExternalHit:
    source: KnowledgeSource
    id: str
    text: str
    title: str
    score: float


def _config(source: KnowledgeSource, key: str, default: Any = None) -> Any:
    value = source.connection_config.get(key, default)
    if value is None:
        raise InvalidData(
            f"knowledge source {source.name!r} ({source.source_type.value}) needs "
            f"connection_config.{key}"
        )
    return value


def _check_model(source: KnowledgeSource, size: int, space: EmbeddingSpace) -> None:
    model = source.connection_config.get("model")
    stored = EmbeddingSpace(str(model or space.model), size)
    if stored != space:
        raise EmbeddingMismatch(f"{source.name} (external)", stored, space)


def _what(source: KnowledgeSource) -> str:
    return f"knowledge source {source.name!r}"


async def search_qdrant(
    source: KnowledgeSource,
    vector: Sequence[float],
    space: EmbeddingSpace,
    k: int,
    policy: OutboundPolicy,
) -> list[ExternalHit]:
    """Top k of an external Qdrant collection (read-only)."""
    from qdrant_client import AsyncQdrantClient  # ~100 MB with its imports: only when used

    collection = _config(source, "collection")
    cfg = source.connection_config
    if cfg.get("url"):
        url = str(cfg["url"])
        await check_url(url, policy, _what(source))  # refused before any client exists
        client = AsyncQdrantClient(
            url=url,
            api_key=cfg.get("api_key"),
            check_compatibility=False,
            transport=PinnedTransport(policy, _what(source)),  # every request checked, pinned
            trust_env=False,
        )
    else:
        if not policy.trusted:
            raise OutboundRefused(
                f"{_what(source)}: a local qdrant `path` is a directory on the hub's host; only "
                "records owned by an admin may use one (set connection_config.url instead)"
            )
        client = AsyncQdrantClient(path=_config(source, "path"))
    try:
        info = await client.get_collection(collection)
        params: Any = info.config.params.vectors
        name = cfg.get("vector_name")
        size = (params[name] if name else params).size
        _check_model(source, int(size), space)
        result = await client.query_points(
            collection, query=list(vector), using=name, limit=k, with_payload=True
        )
    finally:
        await client.close()
    text_field = cfg.get("text_field", "text")
    title_field = cfg.get("title_field")
    hits = []
    for point in result.points:
        payload = point.payload or {}
        title = str(payload.get(title_field, "")) if title_field else ""
        hits.append(
            ExternalHit(source, str(point.id), str(payload.get(text_field, "")), title, point.score)
        )
    return hits


def _ident(source: KnowledgeSource, key: str, default: str | None = None) -> str:
    value = str(_config(source, key, default))
    if not _IDENT.match(value):
        raise InvalidData(f"connection_config.{key}={value!r} of {source.name!r} is not a name")
    return value


async def search_pgvector(
    source: KnowledgeSource,
    vector: Sequence[float],
    space: EmbeddingSpace,
    k: int,
    policy: OutboundPolicy,
) -> list[ExternalHit]:
    """Top k of an external pgvector table (read-only transaction)."""
    table = _ident(source, "table")
    text_col = _ident(source, "text_column", "text")
    vec_col = _ident(source, "vector_column", "embedding")
    id_col = _ident(source, "id_column", "id")
    uri = await pin_pg_uri(str(_config(source, "uri")), policy, _what(source))
    engine = create_engine(uri, application_name="tbd-agents-external", pool_size=1)
    q = "[" + ",".join(repr(float(x)) for x in vector) + "]"
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SET TRANSACTION READ ONLY"))
            size = await conn.scalar(
                sa.text(
                    "SELECT atttypmod FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
                    "AND attname = :c"
                ),
                {"t": table, "c": vec_col},
            )
            _check_model(source, int(size or 0), space)
            await conn.execute(sa.text("SELECT set_config('hnsw.ef_search', '100', true)"))
            rows = await conn.execute(
                sa.text(
                    f"SELECT {id_col}::text AS id, {text_col}::text AS text, "
                    f"{vec_col} <=> CAST(:q AS vector) AS dist FROM {table} "
                    f"ORDER BY {vec_col} <=> CAST(:q AS vector) LIMIT :k"
                ),
                {"q": q, "k": k},
            )
            return [ExternalHit(source, r.id, r.text, "", 1.0 - r.dist) for r in rows]
    finally:
        await engine.dispose()


async def search_external(
    source: KnowledgeSource,
    vector: Sequence[float],
    space: EmbeddingSpace,
    k: int,
    policy: OutboundPolicy | None = None,
) -> list[ExternalHit]:
    """Top k of an external source; `policy` says what it may reach (default: not trusted)."""
    policy = policy or OutboundPolicy()
    if source.source_type is KnowledgeSourceType.QDRANT:
        return await search_qdrant(source, vector, space, k, policy)
    return await search_pgvector(source, vector, space, k, policy)
