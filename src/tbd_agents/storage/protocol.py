"""The storage boundary: a typed query spec and the repository protocol every backend implements.

Services build queries from the small vocabulary below; each backend translates all of it or
raises `UnsupportedQuery`. Nothing is silently dropped, and driver types (asyncpg records, BSON
ObjectIds) never cross this boundary: repositories take and return domain models.

Example::

    q = Query(
        filters=(eq("agent_id", agent.id), contains_any("tags", ["ops", "prod"])),
        sort=(desc("created_at"),),
        limit=50,
    )
    page = await repos.workflows.list(q)
    more = await repos.workflows.list(q.after(page.next_cursor))
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from tbd_agents.domain.models import Entity
from tbd_agents.errors import UnsupportedQuery

E = TypeVar("E", bound=Entity)


class Op(StrEnum):
    EQ = "eq"
    NE = "ne"
    IN = "in"
    NOT_IN = "not_in"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IS_NULL = "is_null"
    NOT_NULL = "not_null"
    CONTAINS_ANY = "contains_any"  # array field shares at least one element with the value
    CONTAINS_ALL = "contains_all"  # array field holds every element of the value
    #: Case-insensitive substring of a text field; `field` may name several text fields
    #: separated by `|` (a match in any of them): `contains_text("prompt|error", "timeout")`.
    CONTAINS_TEXT = "contains_text"


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: Op
    value: Any = None


@dataclass(frozen=True, slots=True)
class Sort:
    field: str
    descending: bool = False


def eq(field: str, value: Any) -> Filter:
    return Filter(field, Op.EQ, value)


def ne(field: str, value: Any) -> Filter:
    return Filter(field, Op.NE, value)


def in_(field: str, values: Sequence[Any]) -> Filter:
    return Filter(field, Op.IN, tuple(values))


def not_in(field: str, values: Sequence[Any]) -> Filter:
    return Filter(field, Op.NOT_IN, tuple(values))


def gt(field: str, value: Any) -> Filter:
    return Filter(field, Op.GT, value)


def gte(field: str, value: Any) -> Filter:
    return Filter(field, Op.GTE, value)


def lt(field: str, value: Any) -> Filter:
    return Filter(field, Op.LT, value)


def lte(field: str, value: Any) -> Filter:
    return Filter(field, Op.LTE, value)


def is_null(field: str) -> Filter:
    return Filter(field, Op.IS_NULL)


def not_null(field: str) -> Filter:
    return Filter(field, Op.NOT_NULL)


def contains_any(field: str, values: Sequence[Any]) -> Filter:
    return Filter(field, Op.CONTAINS_ANY, tuple(values))


def contains_all(field: str, values: Sequence[Any]) -> Filter:
    return Filter(field, Op.CONTAINS_ALL, tuple(values))


def contains_text(field: str, text: str) -> Filter:
    """`text` (case-insensitive, taken literally) in `field`, or in any of `a|b|...`."""
    return Filter(field, Op.CONTAINS_TEXT, text)


def asc(field: str) -> Sort:
    return Sort(field, False)


def desc(field: str) -> Sort:
    return Sort(field, True)


DEFAULT_SORT: tuple[Sort, ...] = (Sort("created_at"),)


@dataclass(frozen=True, slots=True)
class Query:
    """Filters (ANDed), a sort, and an optional page size and keyset cursor.

    The sort is always completed with `id` as the last key, so pages are stable and a cursor
    identifies a position exactly. Sort fields must be non-nullable fields of the model.
    """

    filters: tuple[Filter, ...] = ()
    sort: tuple[Sort, ...] = DEFAULT_SORT
    limit: int | None = None
    cursor: str | None = None

    def after(self, cursor: str | None) -> Query:
        return replace(self, cursor=cursor)

    def where(self, *filters: Filter) -> Query:
        return replace(self, filters=self.filters + filters)

    def full_sort(self) -> tuple[Sort, ...]:
        keys = tuple(s for s in self.sort if s.field != "id")
        tie = next((s for s in self.sort if s.field == "id"), Sort("id", False))
        return (*keys, tie)


@dataclass(frozen=True, slots=True)
class Page(Generic[E]):
    items: list[E]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class GroupLatest:
    """What `Repository.group_latest` reports for one group of records."""

    count: int
    #: `created_at` and the requested fields of the group's newest record.
    latest: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JsonPage:
    """A page as the API sends it: the records as one JSON array (UTF-8), and the cursor."""

    items: bytes
    next_cursor: str | None = None


def encode_cursor(values: Sequence[Any]) -> str:
    """Opaque cursor for the position after a row whose sort-key values are `values`."""

    def enc(v: Any) -> Any:
        if isinstance(v, datetime):
            return {"$dt": v.isoformat()}
        if isinstance(v, StrEnum):
            return v.value
        return v

    raw = json.dumps([enc(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, expected_len: int) -> list[Any]:
    """Inverse of `encode_cursor`; raises UnsupportedQuery for a cursor of another query."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error):
        raise UnsupportedQuery(
            "cursor is not valid: pass next_cursor of the previous page"
        ) from None
    if not isinstance(values, list) or len(values) != expected_len:
        raise UnsupportedQuery("cursor does not belong to this query's sort order")
    out: list[Any] = []
    for v in values:
        if isinstance(v, dict) and set(v) == {"$dt"}:
            out.append(datetime.fromisoformat(v["$dt"]))
        else:
            out.append(v)
    return out


class Repository(Protocol[E]):
    """Storage of one entity type. All methods take and return domain models."""

    model: type[E]

    async def get(self, record_id: str) -> E:
        """Return the record; raise NotFound (also for ids malformed for this backend)."""
        ...

    async def find_one(self, *filters: Filter) -> E | None: ...

    async def list(self, query: Query = ...) -> Page[E]:
        """One page in the query's order; `next_cursor` is None on the last page."""
        ...

    async def list_json(self, query: Query = ..., omit: frozenset[str] = ...) -> JsonPage:
        """The page `list` returns, as the JSON of the records' fields minus `omit` (the values
        `TypeAdapter(list[model]).dump_json` gives; object key order may differ)."""
        ...

    def iterate(self, query: Query = ..., batch_size: int = 500) -> AsyncIterator[E]:
        """Every matching record, fetched in keyset pages of `batch_size`."""
        ...

    async def count(self, *filters: Filter) -> int: ...

    async def group_latest(
        self, field: str, values: Sequence[str], take: Sequence[str] = ()
    ) -> dict[str, GroupLatest]:
        """For each of `values` of `field` that some record has: how many records have it, and
        `created_at` plus the `take` fields of the newest of them (one statement)."""
        ...

    async def create(self, record: E) -> E:
        """Insert; raise DuplicateKey on a unique clash (id or a unique key)."""
        ...

    async def insert_many(self, records: Sequence[E]) -> int: ...

    async def update(
        self,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> E:
        """Change only the named fields (validated against the model), raise `version` by one
        and set `updated_at` to the time the backend applies the change (unless `changes` names
        it), all in one atomic statement, so `updated_at` follows the order of the versions.

        With `expected_version`, only if the record is still at that version: VersionConflict
        (naming the current version) otherwise, and nothing is written. NotFound if the record
        does not exist."""
        ...

    async def upsert(
        self, record: E, key: Sequence[str], update_fields: Sequence[str] | None = None
    ) -> E:
        """Insert, or update the record that has the same values for the unique `key` (its
        `version` raised by one)."""
        ...

    async def delete(self, record_id: str, *, expected_version: int | None = None) -> bool:
        """Delete one record; True if it existed. With `expected_version`, only if the record is
        still at that version (atomically): VersionConflict otherwise, nothing deleted."""
        ...

    async def delete_where(self, *filters: Filter) -> int:
        """Delete every matching record (at least one filter required); return how many."""
        ...


class Repositories(Protocol):
    """The repositories of one unit of work, one attribute per collection."""

    agents: Repository[Any]
    chat_sessions: Repository[Any]
    chat_messages: Repository[Any]
    memories: Repository[Any]
    skills: Repository[Any]
    tokens: Repository[Any]
    providers: Repository[Any]
    knowledge_items: Repository[Any]
    knowledge_sources: Repository[Any]
    custom_tools: Repository[Any]
    guardrails: Repository[Any]
    workflows: Repository[Any]
    task_executions: Repository[Any]
    scheduled_agents: Repository[Any]
    mcp_servers: Repository[Any]

    def for_model(self, model: type[E]) -> Repository[E]: ...


class DocumentStore(Protocol):
    """A connected backend. `unit_of_work()` yields repositories bound to one transaction
    (PostgreSQL) or one session (MongoDB); leaving the block normally commits, an exception
    rolls back."""

    backend: str
    #: True if a unit of work is atomic across records (an exception undoes every write of the
    #: block). False where the backend has no multi-record transaction: writes are applied as
    #: they happen and an exception undoes nothing.
    transactional: bool

    def unit_of_work(
        self, *, readonly: bool = False, single_write: bool = False
    ) -> AbstractAsyncContextManager[Repositories]:
        """`readonly=True`: the block only reads; the backend may skip the transaction.

        `single_write=True`: the block writes at most once (one statement of one repository),
        after its reads; the backend may run it without a transaction, the one statement being
        atomic by itself. A second write in such a block is a programming error and raises."""
        ...

    async def ping(self) -> None:
        """Raise a StorageError subclass that names the fix if the store is not usable."""
        ...

    async def close(self) -> None: ...
