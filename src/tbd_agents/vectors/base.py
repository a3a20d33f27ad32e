"""The vector store interface shared by pgvector and Qdrant.

A store holds named collections of records: an id, a vector, the text the vector was made from,
and a few typed payload fields (the collection's `CollectionSpec`) that searches can filter on.
Every collection records the embedding space (model + dimension) of its vectors; writing or
searching with another space raises `EmbeddingMismatch`, whose message names both and the
`tbd-agents vectors reembed` command. Filtered searches return k records whenever k records match
the filter: stores must not filter after an approximate search that found fewer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.errors import Conflict, UnsupportedQuery
from tbd_agents.storage.protocol import Filter, Op


class FieldKind(StrEnum):
    STR = "str"
    INT = "int"
    STR_LIST = "str_list"


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """A collection's name and the payload fields its records carry (all filterable)."""

    name: str
    fields: Mapping[str, FieldKind]
    nullable: frozenset[str] = frozenset()


KNOWLEDGE_CHUNKS = CollectionSpec(
    "knowledge_chunks",
    {
        "item_id": FieldKind.STR,
        "source_id": FieldKind.STR,
        "chunk_index": FieldKind.INT,
        "start_offset": FieldKind.INT,
        "end_offset": FieldKind.INT,
        "tags": FieldKind.STR_LIST,
    },
)
MEMORIES = CollectionSpec(
    "memories",
    {
        "agent_id": FieldKind.STR,
        "scope": FieldKind.STR,
        "session_id": FieldKind.STR,
        "owner": FieldKind.STR,
        "key": FieldKind.STR,
    },
    nullable=frozenset({"session_id", "owner"}),
)
COLLECTIONS: dict[str, CollectionSpec] = {c.name: c for c in (KNOWLEDGE_CHUNKS, MEMORIES)}


def collection_spec(name: str) -> CollectionSpec:
    """The spec of a known collection; UnsupportedQuery names the known ones otherwise."""
    try:
        return COLLECTIONS[name]
    except KeyError:
        raise UnsupportedQuery(
            f"unknown vector collection {name!r}: known collections are "
            + ", ".join(sorted(COLLECTIONS))
        ) from None


@dataclass(frozen=True, slots=True)
class VectorRecord:
    id: str
    vector: Sequence[float]
    text: str
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VectorHit:
    """A search result; `score` is cosine similarity for vector search (higher is closer) and a
    relevance rank score for text search."""

    id: str
    score: float
    text: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    space: EmbeddingSpace
    count: int
    pending: EmbeddingSpace | None = None


@dataclass(frozen=True, slots=True)
class Where:
    """Conditions on payload fields: every filter of `all_of`, and (when given) every filter of
    at least one group of `any_of`."""

    all_of: tuple[Filter, ...] = ()
    any_of: tuple[tuple[Filter, ...], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.all_of and not self.any_of

    def filters(self) -> list[Filter]:
        return [*self.all_of, *(f for group in self.any_of for f in group)]


SUPPORTED_OPS = frozenset(
    {Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.CONTAINS_ANY, Op.CONTAINS_ALL, Op.IS_NULL, Op.NOT_NULL}
)
_LIST_OPS = frozenset({Op.CONTAINS_ANY, Op.CONTAINS_ALL})


def check_where(spec: CollectionSpec, where: Where) -> None:
    """Raise UnsupportedQuery for a filter on an unknown field or with an unsuitable operator."""
    for flt in where.filters():
        kind = spec.fields.get(flt.field)
        if kind is None and flt.field != "id":
            raise UnsupportedQuery(
                f"collection {spec.name!r} has no field {flt.field!r}; filterable fields: "
                + ", ".join(["id", *spec.fields])
            )
        if flt.op not in SUPPORTED_OPS:
            raise UnsupportedQuery(f"vector searches do not support the {flt.op.value} operator")
        if (flt.op in _LIST_OPS) != (kind is FieldKind.STR_LIST):
            raise UnsupportedQuery(
                f"{flt.op.value} does not apply to field {flt.field!r} of {spec.name!r}"
            )


class EmbeddingMismatch(Conflict):
    """Vectors of different embedding spaces cannot be compared or mixed."""

    code = "embedding_mismatch"

    def __init__(self, collection: str, stored: EmbeddingSpace, given: EmbeddingSpace) -> None:
        super().__init__(
            f"Vector collection {collection!r} holds vectors of model {stored.describe()}, but "
            f"the current embedder is {given.describe()}. Vectors of different models cannot be "
            f"compared: run `tbd-agents vectors reembed {collection}` to rebuild the collection "
            f"with {given.model}, or configure EMBEDDING_PROVIDER / EMBEDDING_MODEL for "
            f"{stored.model} again.",
            details={
                "collection": collection,
                "stored_model": stored.model,
                "stored_dimension": stored.dimension,
                "model": given.model,
                "dimension": given.dimension,
            },
        )


class VectorStore(Protocol):
    """Collections of vectors with payload filters; one implementation per backend."""

    backend: str

    async def ensure_collection(self, name: str, space: EmbeddingSpace) -> CollectionInfo:
        """Create the collection for `space` or check that it holds that space (else raise
        EmbeddingMismatch)."""
        ...

    async def collection_info(self, name: str) -> CollectionInfo | None:
        """The recorded space and record count, or None if the collection was never created."""
        ...

    async def upsert(
        self, name: str, records: Sequence[VectorRecord], space: EmbeddingSpace
    ) -> None:
        """Insert or replace records by id (vectors of `space`, checked against the collection)."""
        ...

    async def delete(self, name: str, ids: Sequence[str]) -> int:
        """Delete records by id; return how many existed."""
        ...

    async def delete_where(self, name: str, where: Where) -> int:
        """Delete every record matching `where` (a non-empty condition); return how many."""
        ...

    async def search(
        self,
        name: str,
        vector: Sequence[float],
        space: EmbeddingSpace,
        k: int,
        where: Where | None = None,
    ) -> list[VectorHit]:
        """The k nearest records by cosine similarity among those matching `where` (k of them
        whenever at least k match), best first."""
        ...

    async def text_search(
        self,
        name: str,
        query: str,
        k: int,
        where: Where | None = None,
        *,
        all_words: bool = False,
    ) -> list[VectorHit]:
        """Up to k records whose text matches words of `query`, most relevant first: any of its
        words, or with `all_words` every one of them (stop words aside, stems compared)."""
        ...

    async def count(self, name: str, where: Where | None = None) -> int: ...

    async def get(self, name: str, ids: Sequence[str]) -> list[VectorHit]:
        """The records with these ids that exist (score 1.0), in no particular order."""
        ...

    def bind(self, repos: Any) -> VectorStore:
        """This store writing in the same transaction as the unit of work `repos` when both live
        in the same database (pgvector); otherwise the store itself."""
        ...

    async def close(self) -> None: ...
