"""Qdrant: a server at QDRANT_URL (+ QDRANT_API_KEY), or qdrant-client's embedded local mode in a
directory when no URL is set.

Each collection's embedding space is stored in the Qdrant collection's own metadata and checked on
every write and search. Record ids are kept in the payload (`_id`); point ids are that id when it
is a UUID, else a UUID derived from it (uuid5), so any text id works. Qdrant applies filters
during the search (its filterable HNSW on a server, brute force in local mode), so a filtered top-k
returns k whenever k points match.

Local mode is a Python brute-force implementation with SQLite persistence: fine for tests and a
few thousand points, slow beyond that (see docs/vectors.md), and one process per directory.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from tbd_agents.config import Settings
from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.embeddings.hashing import words
from tbd_agents.errors import InvalidData, UnsupportedQuery
from tbd_agents.observability.engine_signals import vector_search
from tbd_agents.storage.protocol import Filter, Op
from tbd_agents.vectors.base import (
    CollectionInfo,
    CollectionSpec,
    EmbeddingMismatch,
    FieldKind,
    VectorHit,
    VectorRecord,
    VectorStore,
    Where,
    check_where,
    collection_spec,
)

_ID_NAMESPACE = uuid.UUID("5b0f6c53-2f1e-4f0e-9a55-7c1b1f7e0d42")
_BATCH = 256
_TEXT_CANDIDATES = 2000
_TEXT_SCAN_PAGES = 25  # at most 50k candidates are ranked
_WORD_RE = re.compile(r"[^\W_]+")


def point_id(record_id: str) -> str:
    """The Qdrant point id of a record id (the id itself when it is a UUID)."""
    try:
        return str(uuid.UUID(record_id))
    except ValueError:
        return str(uuid.uuid5(_ID_NAMESPACE, record_id))


class _Never(Exception):
    """A condition that no point can satisfy (e.g. IN an empty list)."""


def _match(key: str, value: Any) -> qm.FieldCondition:
    return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))


def _is_null(key: str) -> qm.IsNullCondition:
    return qm.IsNullCondition(is_null=qm.PayloadField(key=key))


def _group(filters: Sequence[Filter]) -> qm.Filter:
    must: list[Any] = []
    must_not: list[Any] = []
    for flt in filters:
        key, value = ("_id" if flt.field == "id" else flt.field), flt.value
        if flt.op is Op.EQ:
            must.append(_is_null(key) if value is None else _match(key, value))
        elif flt.op is Op.NE:
            must_not.append(_is_null(key) if value is None else _match(key, value))
        elif flt.op in (Op.IN, Op.CONTAINS_ANY):
            if not value:
                raise _Never
            must.append(qm.FieldCondition(key=key, match=qm.MatchAny(any=list(value))))
        elif flt.op is Op.NOT_IN:
            if value:
                must_not.append(qm.FieldCondition(key=key, match=qm.MatchAny(any=list(value))))
        elif flt.op is Op.CONTAINS_ALL:
            must.extend(_match(key, v) for v in value)
        elif flt.op is Op.IS_NULL:
            must.append(_is_null(key))
        elif flt.op is Op.NOT_NULL:
            must_not.append(_is_null(key))
        else:
            raise UnsupportedQuery(f"vector searches do not support the {flt.op.value} operator")
    return qm.Filter(must=must or None, must_not=must_not or None)


def qdrant_filter(where: Where | None) -> qm.Filter | None:
    """The Qdrant filter of `where`; raises _Never when nothing can match."""
    if where is None or where.empty:
        return None
    base = _group(where.all_of)
    if where.any_of:
        groups = []
        for group in where.any_of:
            try:
                groups.append(_group(group))
            except _Never:
                continue
        if not groups:
            raise _Never
        base.must = [*(base.must or []), qm.Filter(should=groups)]
    return base


def open_qdrant(settings: Settings) -> QdrantVectorStore:
    """The Qdrant store of the settings: server at QDRANT_URL, else local mode in DATA_DIR/qdrant."""
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return QdrantVectorStore(AsyncQdrantClient(url=settings.qdrant_url, api_key=key))
    return QdrantVectorStore.at_path(settings.data_dir / "qdrant")


class QdrantVectorStore:
    """`VectorStore` on Qdrant."""

    backend = "qdrant"

    def __init__(self, client: AsyncQdrantClient, *, local: bool = False) -> None:
        self.client = client
        self.is_local = local
        self._spaces: dict[str, EmbeddingSpace] = {}

    @classmethod
    def at_path(cls, path: Path) -> QdrantVectorStore:
        """Qdrant's embedded local mode persisted in `path` (created if missing)."""
        path.mkdir(parents=True, exist_ok=True)
        return cls(AsyncQdrantClient(path=str(path)), local=True)

    def bind(self, repos: Any) -> VectorStore:
        """Qdrant has no transaction shared with the document store: the store itself."""
        return self

    async def close(self) -> None:
        await self.client.close()

    # --- collections -----------------------------------------------------------------------
    async def collection_info(self, name: str) -> CollectionInfo | None:
        collection_spec(name)
        if not await self.client.collection_exists(name):
            return None
        info = await self.client.get_collection(name)
        meta = info.config.metadata or {}
        params = info.config.params.vectors
        size = params.size if isinstance(params, qm.VectorParams) else int(meta.get("dimension", 0))
        space = EmbeddingSpace(str(meta.get("model", "unknown")), int(meta.get("dimension", size)))
        pending = None
        if meta.get("pending_model"):
            pending = EmbeddingSpace(str(meta["pending_model"]), int(meta["pending_dimension"]))
        count = (await self.client.count(name, exact=True)).count
        return CollectionInfo(name, space, count, pending)

    async def ensure_collection(self, name: str, space: EmbeddingSpace) -> CollectionInfo:
        """Create the collection for `space` (with payload indexes on a server) or check it."""
        spec = collection_spec(name)
        info = await self.collection_info(name)
        if info is None:
            await self.client.create_collection(
                name,
                vectors_config=qm.VectorParams(size=space.dimension, distance=qm.Distance.COSINE),
                metadata={"model": space.model, "dimension": space.dimension},
            )
            if not self.is_local:
                await self._create_payload_indexes(spec)
            info = CollectionInfo(name, space, 0)
        elif info.space != space:
            raise EmbeddingMismatch(name, info.space, space)
        self._spaces[name] = space
        return info

    async def _create_payload_indexes(self, spec: CollectionSpec) -> None:
        kinds = {
            FieldKind.STR: qm.PayloadSchemaType.KEYWORD,
            FieldKind.INT: qm.PayloadSchemaType.INTEGER,
        }
        for field, kind in [*spec.fields.items(), ("_id", FieldKind.STR)]:
            schema = kinds.get(kind, qm.PayloadSchemaType.KEYWORD)
            await self.client.create_payload_index(spec.name, field, field_schema=schema)
        await self.client.create_payload_index(
            spec.name,
            "text",
            field_schema=qm.TextIndexParams(
                type=qm.TextIndexType.TEXT, tokenizer=qm.TokenizerType.WORD, lowercase=True
            ),
        )

    async def _check_space(self, name: str, space: EmbeddingSpace) -> None:
        if self._spaces.get(name) != space:
            await self.ensure_collection(name, space)

    # --- writes ----------------------------------------------------------------------------
    def _point(self, spec: CollectionSpec, record: VectorRecord, dim: int) -> qm.PointStruct:
        unknown = set(record.payload) - set(spec.fields)
        if unknown:
            raise InvalidData(
                f"collection {spec.name!r} has no field(s) {', '.join(sorted(unknown))}; "
                f"its fields are {', '.join(spec.fields)}"
            )
        if len(record.vector) != dim:
            raise InvalidData(
                f"vector of {len(record.vector)} dimensions for collection {spec.name!r}, "
                f"which holds {dim}"
            )
        payload: dict[str, Any] = {"_id": record.id, "text": record.text}
        for name, kind in spec.fields.items():
            value: Any = record.payload.get(name)
            if kind is FieldKind.STR_LIST:
                value = list(value or [])
            elif value is None and name not in spec.nullable:
                raise InvalidData(f"record {record.id!r} of {spec.name!r} needs field {name!r}")
            payload[name] = value
        return qm.PointStruct(id=point_id(record.id), vector=list(record.vector), payload=payload)

    async def upsert(
        self, name: str, records: Sequence[VectorRecord], space: EmbeddingSpace
    ) -> None:
        """Insert or replace points by record id."""
        if not records:
            return
        spec = collection_spec(name)
        await self._check_space(name, space)
        for start in range(0, len(records), _BATCH):
            points = [
                self._point(spec, r, space.dimension) for r in records[start : start + _BATCH]
            ]
            await self.client.upsert(name, points=points, wait=True)

    async def delete(self, name: str, ids: Sequence[str]) -> int:
        """Delete points by record id; return how many existed."""
        if not ids or not await self.client.collection_exists(name):
            return 0
        pids = [point_id(i) for i in ids]
        existing = await self.client.retrieve(name, ids=pids, with_payload=False)
        if existing:
            await self.client.delete(
                name, points_selector=qm.PointIdsList(points=[p.id for p in existing]), wait=True
            )
        return len(existing)

    async def delete_where(self, name: str, where: Where) -> int:
        """Delete every point matching a non-empty `where`; return how many."""
        spec = collection_spec(name)
        if where.empty:
            raise UnsupportedQuery("delete_where needs at least one condition")
        check_where(spec, where)
        if not await self.client.collection_exists(name):
            return 0
        try:
            flt = qdrant_filter(where)
        except _Never:
            return 0
        found = (await self.client.count(name, count_filter=flt, exact=True)).count
        if found:
            await self.client.delete(name, points_selector=qm.FilterSelector(filter=flt), wait=True)
        return found

    # --- reads -----------------------------------------------------------------------------
    @staticmethod
    def _hit(spec: CollectionSpec, point: Any, score: float) -> VectorHit:
        payload = dict(point.payload or {})
        return VectorHit(
            id=str(payload.pop("_id")),
            score=float(score),
            text=str(payload.pop("text", "")),
            payload={f: payload.get(f) for f in spec.fields},
        )

    async def count(self, name: str, where: Where | None = None) -> int:
        spec = collection_spec(name)
        if where is not None:
            check_where(spec, where)
        if not await self.client.collection_exists(name):
            return 0
        try:
            flt = qdrant_filter(where)
        except _Never:
            return 0
        return (await self.client.count(name, count_filter=flt, exact=True)).count

    async def get(self, name: str, ids: Sequence[str]) -> list[VectorHit]:
        spec = collection_spec(name)
        if not ids or not await self.client.collection_exists(name):
            return []
        points = await self.client.retrieve(name, ids=[point_id(i) for i in ids], with_payload=True)
        return [self._hit(spec, p, 1.0) for p in points]

    async def search(
        self,
        name: str,
        vector: Sequence[float],
        space: EmbeddingSpace,
        k: int,
        where: Where | None = None,
    ) -> list[VectorHit]:
        """`_search`, timed (`tbd_vector_search_duration_seconds`) and traced."""
        with vector_search("qdrant", name):
            return await self._search(name, vector, space, k, where)

    async def _search(
        self,
        name: str,
        vector: Sequence[float],
        space: EmbeddingSpace,
        k: int,
        where: Where | None = None,
    ) -> list[VectorHit]:
        """The k nearest points matching `where` by cosine similarity, best first."""
        spec = collection_spec(name)
        if where is not None:
            check_where(spec, where)
        await self._check_space(name, space)
        if k < 1:
            return []
        try:
            flt = qdrant_filter(where)
        except _Never:
            return []
        result = await self.client.query_points(
            name, query=list(vector), query_filter=flt, limit=k, with_payload=True
        )
        return [self._hit(spec, p, p.score) for p in result.points]

    async def text_search(
        self,
        name: str,
        query: str,
        k: int,
        where: Where | None = None,
        *,
        all_words: bool = False,
    ) -> list[VectorHit]:
        """Points containing words of `query` (every one of them with `all_words`), ranked by
        matched stems (1 + log tf each).

        Qdrant's text match finds candidates (any query word); the ranking is done here, over at
        most a few thousand candidates."""
        spec = collection_spec(name)
        if where is not None:
            check_where(spec, where)
        terms = sorted(set(words(query)))
        if not terms or not await self.client.collection_exists(name):
            return []
        try:
            flt = qdrant_filter(where) or qm.Filter()
        except _Never:
            return []
        if not self.is_local:
            # Server: the full-text index finds candidates containing a query word or its stem.
            # (Local mode's text match is a case-sensitive substring test: scan instead.)
            raw = {w.lower() for w in _WORD_RE.findall(query)}
            # Each term as written or as its stem: one of the terms, or (all_words) each.
            groups = [sorted({t} | {w for w in raw if words(w) == [t]}) for t in terms]
            if not all_words:
                groups = [sorted({w for g in groups for w in g} | raw)]
            flt.must = [
                *(flt.must or []),
                *(
                    qm.Filter(
                        should=[
                            qm.FieldCondition(key="text", match=qm.MatchText(text=t)) for t in g
                        ]
                    )
                    for g in groups
                ),
            ]
        scored: list[VectorHit] = []
        offset: Any = None
        for _ in range(_TEXT_SCAN_PAGES):
            points, offset = await self.client.scroll(
                name, scroll_filter=flt, limit=_TEXT_CANDIDATES, offset=offset, with_payload=True
            )
            for point in points:
                counts = Counter(words(str((point.payload or {}).get("text", ""))))
                if all_words and not all(counts[t] for t in terms):
                    continue
                score = sum(1.0 + math.log(counts[t]) for t in terms if counts[t])
                if score > 0:
                    scored.append(self._hit(spec, point, score))
            if offset is None:
                break
        scored.sort(key=lambda h: (-h.score, h.id))
        return scored[:k]
