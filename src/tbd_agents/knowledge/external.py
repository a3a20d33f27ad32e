"""External vector collections registered as knowledge sources, queried read-only.

A knowledge source with `source_type` `qdrant` / `vector_db` (the existing TBD Agents name of an
external Qdrant collection) or `pgvector` points at a collection that another system filled.
Its `connection_config` says where and which fields hold the text, in our shape or the existing
one:

* qdrant, vector_db: `{"collection": "...", "url": "http://…:6333"` (or `"path"` for a local-mode
  directory), `"api_key"` or `"api_key_token_name"` (the existing shape: a token's name),
  `"vector_name"` (named vectors), `"text_field"` (default `text`, the existing payload key),
  `"title_field"`, `"model"` (the embedding model of its vectors, checked when given)}
* pgvector, ours: `{"uri": "postgresql://…", "table": "...", "text_column"` (default `text`),
  `"vector_column"` (default `embedding`), `"id_column"` (default `id`), `"model"`}
* pgvector, existing: `{"dsn": "postgresql://…"` or `"dsn_token_name"`, `"collection": "..."}`:
  the table `langchain_pg_embedding_<collection>` in LangChain PGVector's layout (`id`,
  `document`, `cmetadata`, `embedding`); the collection name must match `^[A-Za-z0-9_]+$`.

`{{token:NAME}}` references anywhere in the config and the `*_token_name` fields are resolved
among the source owner's tokens just before the search (`resolved_config`), never stored.

The collection must hold vectors of the same size (and, when `model` is given, the same model) as
the configured embedder; otherwise the search fails with EmbeddingMismatch naming both. Nothing is
ever written to an external collection.

Connections follow `security.outbound`: the qdrant `url` is checked and every request pinned; the
pgvector `uri` / `dsn` host is checked and replaced by the checked address. Records of non-admin
owners may not use a qdrant local `path`, unix sockets or `host=`-style URI parameters.
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
from tbd_agents.errors import ConfigurationError, InvalidData
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.security.outbound import (
    OutboundPolicy,
    OutboundRefused,
    PinnedTransport,
    check_url,
    pin_pg_uri,
)
from tbd_agents.services.tokens import referenced_names, resolve_tree
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.protocol import Repositories
from tbd_agents.vectors.base import EmbeddingMismatch

#: Sources whose content lives in an external Qdrant collection.
QDRANT_TYPES = frozenset({KnowledgeSourceType.QDRANT, KnowledgeSourceType.VECTOR_DB})
EXTERNAL_TYPES = QDRANT_TYPES | {KnowledgeSourceType.PGVECTOR}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
#: The existing system's check on a pgvector collection name.
_COLLECTION = re.compile(r"^[A-Za-z0-9_]+$")
#: Token-name fields of the existing shapes and the config key their value stands for.
_TOKEN_FIELDS = (("api_key_token_name", "api_key"), ("dsn_token_name", "dsn"))


@dataclass(frozen=True, slots=True)
class ExternalHit:
    source: KnowledgeSource
    id: str
    text: str
    title: str
    score: float


async def resolved_config(
    repos: Repositories, cipher: TokenCipher | None, source: KnowledgeSource
) -> dict[str, Any]:
    """The source's `connection_config` with `api_key_token_name` / `dsn_token_name` and every
    `{{token:NAME}}` replaced by the owner's token values (for this search only)."""
    config = dict(source.connection_config)
    for name_field, target in _TOKEN_FIELDS:
        name = config.get(name_field)
        if isinstance(name, str) and name and not config.get(target):
            config[target] = "{{token:" + name + "}}"
    if not referenced_names(config):
        return config
    if cipher is None:
        raise ConfigurationError(
            f"knowledge source {source.name!r} refers to tokens, and this process has no token "
            "cipher to read them: set TOKEN_ENCRYPTION_KEY"
        )
    resolved: dict[str, Any] = await resolve_tree(repos, cipher, source.created_by, config)
    return resolved


def _config(source: KnowledgeSource, cfg: dict[str, Any], key: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    if value is None:
        raise InvalidData(
            f"knowledge source {source.name!r} ({source.source_type.value}) needs "
            f"connection_config.{key}"
        )
    return value


def _check_model(
    source: KnowledgeSource, cfg: dict[str, Any], size: int, space: EmbeddingSpace
) -> None:
    model = cfg.get("model")
    stored = EmbeddingSpace(str(model or space.model), size)
    if stored != space:
        raise EmbeddingMismatch(f"{source.name} (external)", stored, space)


def _what(source: KnowledgeSource) -> str:
    return f"knowledge source {source.name!r}"


async def _qdrant_client(
    source: KnowledgeSource, policy: OutboundPolicy, cfg: dict[str, Any]
) -> Any:
    """A client of the source's Qdrant: its `url` (checked, every request pinned) or, for an
    admin's record only, a local-mode `path`."""
    from qdrant_client import AsyncQdrantClient  # ~100 MB with its imports: only when used

    if cfg.get("url"):
        url = str(cfg["url"])
        await check_url(url, policy, _what(source))  # refused before any client exists
        return AsyncQdrantClient(
            url=url,
            api_key=cfg.get("api_key"),
            check_compatibility=False,
            transport=PinnedTransport(policy, _what(source)),  # every request checked, pinned
            trust_env=False,
        )
    if not policy.trusted:
        raise OutboundRefused(
            f"{_what(source)}: a local qdrant `path` is a directory on the hub's host; only "
            "records owned by an admin may use one (set connection_config.url instead)"
        )
    return AsyncQdrantClient(path=_config(source, cfg, "path"))


async def search_qdrant(
    source: KnowledgeSource,
    vector: Sequence[float],
    space: EmbeddingSpace,
    k: int,
    policy: OutboundPolicy,
    cfg: dict[str, Any],
) -> list[ExternalHit]:
    """Top k of an external Qdrant collection (read-only)."""
    collection = _config(source, cfg, "collection")
    client = await _qdrant_client(source, policy, cfg)
    try:
        info = await client.get_collection(collection)
        params: Any = info.config.params.vectors
        name = cfg.get("vector_name")
        size = (params[name] if name else params).size
        _check_model(source, cfg, int(size), space)
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


def _ident(
    source: KnowledgeSource, cfg: dict[str, Any], key: str, default: str | None = None
) -> str:
    value = str(_config(source, cfg, key, default))
    if not _IDENT.match(value):
        raise InvalidData(f"connection_config.{key}={value!r} of {source.name!r} is not a name")
    return value


def pgvector_config(source: KnowledgeSource, cfg: dict[str, Any]) -> dict[str, Any]:
    """Our pgvector shape for `cfg`: as it is, or mapped from the existing
    `{dsn | dsn_token_name, collection}` onto LangChain PGVector's table and columns."""
    if "table" in cfg or "uri" in cfg or not ("dsn" in cfg or "collection" in cfg):
        return cfg
    collection = str(_config(source, cfg, "collection"))
    if not _COLLECTION.match(collection):
        raise InvalidData(
            f"connection_config.collection={collection!r} of {source.name!r} must be letters, "
            "digits and _ only"
        )
    if not cfg.get("dsn"):
        raise InvalidData(
            f"knowledge source {source.name!r} (pgvector) needs connection_config.dsn or "
            "dsn_token_name (a token holding the connection string)"
        )
    return {
        **cfg,
        "uri": cfg["dsn"],
        "table": f"langchain_pg_embedding_{collection}",
        "text_column": "document",
        "vector_column": "embedding",
        "id_column": "id",
    }


async def search_pgvector(
    source: KnowledgeSource,
    vector: Sequence[float],
    space: EmbeddingSpace,
    k: int,
    policy: OutboundPolicy,
    cfg: dict[str, Any],
) -> list[ExternalHit]:
    """Top k of an external pgvector table (read-only transaction)."""
    cfg = pgvector_config(source, cfg)
    table = _ident(source, cfg, "table")
    text_col = _ident(source, cfg, "text_column", "text")
    vec_col = _ident(source, cfg, "vector_column", "embedding")
    id_col = _ident(source, cfg, "id_column", "id")
    uri = await pin_pg_uri(str(_config(source, cfg, "uri")), policy, _what(source))
    engine = create_engine(
        uri, application_name="tbd-agents-external", pool_size=1, pool_label=None
    )
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
            _check_model(source, cfg, int(size or 0), space)
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
    config: dict[str, Any] | None = None,
) -> list[ExternalHit]:
    """Top k of an external source; `policy` says what it may reach (default: not trusted);
    `config` is its connection config with tokens resolved (`resolved_config`; default: the
    stored one as it is)."""
    policy = policy or OutboundPolicy()
    cfg = dict(source.connection_config if config is None else config)
    if source.source_type in QDRANT_TYPES:
        return await search_qdrant(source, vector, space, k, policy, cfg)
    return await search_pgvector(source, vector, space, k, policy, cfg)


async def check_external(
    source: KnowledgeSource, policy: OutboundPolicy, cfg: dict[str, Any]
) -> None:
    """Connectivity test of an external source (`cfg`: its config with tokens resolved), as
    the existing system does it: a Qdrant source's collection exists (`get_collection`); a
    pgvector source's database has the `vector` extension. Raises on failure."""
    if source.source_type in QDRANT_TYPES:
        await _check_qdrant(source, policy, cfg)
    else:
        await _check_pgvector(source, policy, cfg)


async def _check_qdrant(
    source: KnowledgeSource, policy: OutboundPolicy, cfg: dict[str, Any]
) -> None:
    collection = _config(source, cfg, "collection")
    client = await _qdrant_client(source, policy, cfg)
    try:
        await client.get_collection(collection)
    finally:
        await client.close()


async def _check_pgvector(
    source: KnowledgeSource, policy: OutboundPolicy, cfg: dict[str, Any]
) -> None:
    cfg = pgvector_config(source, cfg)
    uri = await pin_pg_uri(str(_config(source, cfg, "uri")), policy, _what(source))
    engine = create_engine(
        uri, application_name="tbd-agents-external", pool_size=1, pool_label=None
    )
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            )
    finally:
        await engine.dispose()
    if found is None:
        raise InvalidData(
            f"{_what(source)}: the database has no `vector` extension (CREATE EXTENSION vector)"
        )
