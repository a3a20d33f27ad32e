"""The MongoDB implementation of the storage protocol, on pymongo's official async API.

`MongoStore` wraps an `AsyncDatabase` (injected: a real `AsyncMongoClient` database in
production, the in-process emulation in tests — the code here is the same for both). `open()`
checks the server and creates the indexes the services need (`indexes.ensure_indexes`, MongoDB's
analogue of a migration). `MongoRepository` serves one entity; documents keep the existing
TBD Agents shape (`codec`), queries are translated by `query`, and driver errors leave as domain
errors (`errors`).

MongoDB has no multi-document transaction outside a replica set, and this store does not use one:
`transactional` is False, writes take effect as they happen, and an exception inside
`unit_of_work()` undoes nothing. Two places make up for it where they can: `insert_many` removes
the records it inserted when a later one fails (all or none, though others may glimpse the
partial batch), and deleting a parent record deletes its children (the links PostgreSQL enforces
with cascading foreign keys, the run-time's collections included) right after it.

A model with a `numbering` (a chat message's `seq`) is numbered on `create` / `insert_many` from
its parent's counter with one `find_one_and_update` `$inc` per parent, an atomic operation on a
single document, so two writers never get the same numbers. Documents stored before numbering
existed are numbered when the store opens (`numbering.number_legacy`).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any, Generic, NoReturn, TypeVar, cast

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from tbd_agents.domain.approvals import ToolApproval
from tbd_agents.domain.auth import ApiKey
from tbd_agents.domain.models import ENTITIES, ENTITY_BY_COLLECTION, Entity, Numbering
from tbd_agents.domain.versions import AgentVersion
from tbd_agents.errors import (
    DuplicateKey,
    InvalidData,
    NotFound,
    UnsupportedQuery,
    VersionConflict,
)
from tbd_agents.observability.usage.mongo import USAGE_INDEXES
from tbd_agents.storage.common import (
    VERSION,
    check_filters,
    check_numbered,
    check_query,
    check_update_fields,
    check_upsert_key,
    iterate_pages,
    list_json_via_models,
    number_records,
    validate_changes,
    well_formed_id,
)
from tbd_agents.storage.mongo.codec import (
    EXTRAS,
    LEGACY_VERSION,
    bson_value,
    extra_keys,
    from_document,
    id_forms,
    id_text,
    to_document,
)
from tbd_agents.storage.mongo.errors import translated
from tbd_agents.storage.mongo.indexes import (
    ensure_collection_indexes,
    ensure_indexes,
    index_fields,
)
from tbd_agents.storage.mongo.numbering import number_legacy, reserve
from tbd_agents.storage.mongo.query import (
    filter_document,
    id_cursor_value,
    keyset_document,
    sort_spec,
)
from tbd_agents.storage.mongo.runtime_schema import (
    RUNTIME_CHILDREN,
    RUNTIME_INDEXES,
    delete_runtime_children,
)
from tbd_agents.storage.postgres.schema import CASCADES
from tbd_agents.storage.protocol import (
    Filter,
    GroupLatest,
    JsonPage,
    Page,
    Query,
    Repository,
    Sort,
    encode_cursor,
    eq,
    in_,
)

E = TypeVar("E", bound=Entity)
Doc = dict[str, Any]
Database = AsyncDatabase[Doc]

#: Order of `find_one` (the protocol's default sort).
DEFAULT_SORT: tuple[Sort, ...] = (Sort("created_at"), Sort("id"))

#: Parent collection → [(child collection, reference field)], from the PostgreSQL cascades.
CHILDREN: dict[str, builtins.list[tuple[str, str]]] = {}
for _child, _links in CASCADES.items():
    for _field, _parent in _links:
        CHILDREN.setdefault(_parent, []).append((_child, _field))

_INDEX_FIELDS = index_fields(ENTITIES)


def _id_filter(record_id: str) -> Doc:
    forms = id_forms(record_id, include_int=True)
    return {"_id": forms[0] if len(forms) == 1 else {"$in": forms}}


def _versioned_filter(record_id: str, expected_version: int | None) -> Doc:
    """The document with `record_id`, and (if given) at `expected_version`: a document without
    `version` is at `LEGACY_VERSION` (`{$in: [0, null]}` matches a missing key)."""
    spec = _id_filter(record_id)
    if expected_version is None:
        return spec
    if expected_version == LEGACY_VERSION:
        spec[VERSION] = {"$in": [LEGACY_VERSION, None]}
    else:
        spec[VERSION] = expected_version
    return spec


class MongoRepository(Generic[E]):
    """`storage.protocol.Repository` for one entity, on one MongoDB collection."""

    def __init__(self, model: type[E], database: Database, *, target: str) -> None:
        self.model = model
        self._db = database
        self.collection: AsyncCollection[Doc] = database.get_collection(model.collection)
        self._target = target

    # --- plumbing --------------------------------------------------------------------------
    @contextmanager
    def _driver(self) -> Iterator[None]:
        with translated(
            entity=self.model.__name__, target=self._target, index_fields=_INDEX_FIELDS
        ):
            yield

    def _document_of(self, record: E) -> Doc:
        if not isinstance(record, self.model):
            raise InvalidData(
                f"{self.model.collection} stores {self.model.__name__} records, "
                f"not {type(record).__name__}"
            )
        return to_document(record)

    def _model(self, doc: Mapping[str, Any]) -> E:
        return from_document(self.model, doc)

    # --- reads -----------------------------------------------------------------------------
    async def get(self, record_id: str) -> E:
        """The record with `record_id` (ObjectId or string `_id`); NotFound if there is none."""
        if not well_formed_id(record_id):
            raise NotFound(self.model.__name__, str(record_id))
        with self._driver():
            doc = await self.collection.find_one(_id_filter(record_id))
        if doc is None:
            raise NotFound(self.model.__name__, record_id)
        return self._model(doc)

    async def find_one(self, *filters: Filter) -> E | None:
        """The first matching record in the default order (created_at, id), or None."""
        checked = check_filters(self.model, filters)
        with self._driver():
            docs = await self.collection.find(
                filter_document(self.model, checked), sort=sort_spec(DEFAULT_SORT), limit=1
            ).to_list(None)
        return self._model(docs[0]) if docs else None

    async def list(self, query: Query = Query()) -> Page[E]:  # noqa: B008 - frozen dataclass
        """One page in the query's order (one find; `limit + 1` documents tell if more follow)."""
        checked = check_query(self.model, query)
        where = filter_document(self.model, checked.filters)
        after = keyset_document(checked.sort, checked.after)
        spec = {"$and": [where, after]} if where and after else (where or after)
        limit = 0 if checked.limit is None else checked.limit + 1
        with self._driver():
            docs = await self.collection.find(
                spec, sort=sort_spec(checked.sort), limit=limit
            ).to_list(None)
        if checked.limit is None or len(docs) <= checked.limit:
            return Page(items=[self._model(d) for d in docs], next_cursor=None)
        docs = docs[: checked.limit]
        items = [self._model(d) for d in docs]
        position = [
            id_cursor_value(docs[-1]["_id"]) if s.field == "id" else getattr(items[-1], s.field)
            for s in checked.sort
        ]
        return Page(items=items, next_cursor=encode_cursor(position))

    async def list_json(
        self,
        query: Query = Query(),  # noqa: B008 - frozen dataclass
        omit: frozenset[str] = frozenset(),
    ) -> JsonPage:
        """`list` serialised by the models (documents are decoded into models anyway)."""
        return await list_json_via_models(self.list, self.model, query, omit)

    def iterate(self, query: Query = Query(), batch_size: int = 500) -> AsyncIterator[E]:  # noqa: B008
        """Every matching record in the query's order, fetched in keyset pages of `batch_size`.

        `query.limit`, if set, caps the total number of records yielded.
        """
        return iterate_pages(self.list, query, batch_size)

    async def count(self, *filters: Filter) -> int:
        """How many records match `filters` (all records without filters)."""
        checked = check_filters(self.model, filters)
        with self._driver():
            return await self.collection.count_documents(filter_document(self.model, checked))

    async def group_latest(
        self, field: str, values: Sequence[str], take: Sequence[str] = ()
    ) -> dict[str, GroupLatest]:
        """Per value of `field`: the count and the newest record's `created_at` + `take` fields
        (one find of the matching documents, only those fields; grouped here)."""
        if not values:
            return {}
        checked = check_filters(self.model, (in_(field, list(values)),))
        projection = dict.fromkeys([field, "created_at", *take], 1)
        with self._driver():
            docs = await self.collection.find(
                filter_document(self.model, checked), projection=projection
            ).to_list(None)
        found: dict[str, GroupLatest] = {}
        newest: dict[str, tuple[Any, ...]] = {}
        for doc in docs:
            group = doc.get(field)
            if isinstance(group, ObjectId):
                group = str(group)
            if not isinstance(group, str):
                continue
            created = doc.get("created_at")
            if created is None and isinstance(doc.get("_id"), ObjectId):
                created = doc["_id"].generation_time  # legacy documents without created_at
            if isinstance(created, datetime) and created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            rank = (
                created is not None,
                created or datetime.min.replace(tzinfo=UTC),
                str(doc.get("_id")),
            )
            before = found.get(group)
            count = 1 + (before.count if before else 0)
            if before is None or rank > newest[group]:
                newest[group] = rank
                latest = {"created_at": created, **{name: doc.get(name) for name in take}}
            else:
                latest = before.latest
            found[group] = GroupLatest(count, latest)
        return found

    # --- writes ----------------------------------------------------------------------------
    async def _numbered(self, records: Sequence[E]) -> builtins.list[E]:
        """`records` numbered from their parents' counters (module docstring)."""
        return await number_records(self.model, records, self._raise_counter)

    async def _raise_counter(self, numbering: Numbering, parent_id: str, n: int) -> int | None:
        if not well_formed_id(parent_id):
            return None
        return await reserve(self._db, numbering, parent_id, n)

    async def create(self, record: E) -> E:
        """Insert `record`; DuplicateKey naming the key if its id or a unique key is taken."""
        if self.model.numbering is not None:
            with self._driver():
                [record] = await self._numbered([record])
        doc = self._document_of(record)
        with self._driver():
            await self.collection.insert_one(doc)
        return self._model(doc)

    async def insert_many(self, records: Sequence[E]) -> int:
        """Insert every record, all or none; DuplicateKey if an id or unique key is taken.

        Not atomic: on a clash, the records of this call that were already inserted are deleted
        again before DuplicateKey is raised. Returns the number inserted.
        """
        if self.model.numbering is not None and records:
            with self._driver():
                records = await self._numbered(records)
        docs = [self._document_of(r) for r in records]
        if not docs:
            return 0
        try:
            with self._driver():
                result = await self.collection.insert_many(docs, ordered=True)
        except DuplicateKey as exc:
            cause = exc.__cause__
            done = cause.details.get("nInserted", 0) if isinstance(cause, BulkWriteError) else 0
            if done:
                with self._driver():
                    await self.collection.delete_many(
                        {"_id": {"$in": [d["_id"] for d in docs[:done]]}}
                    )
            raise
        return len(result.inserted_ids)

    async def update(
        self,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> E:
        """Set only the named fields (validated against the model), `version + 1` (`$inc`) and
        `updated_at`, in one `find_one_and_update`.

        `updated_at` is the server's time when it applies the update (`$currentDate`: updates of
        one document are applied one at a time, so it follows the order of the versions) unless
        `changes` names it. With `expected_version`, the update matches only that version (a
        document without `version` is at 0); VersionConflict if the record is at another.
        NotFound for an unknown id, InvalidData for an unknown field, `id`/`created_at`/
        `version`, or a value the field refuses.
        """
        values = validate_changes(self.model, changes)
        if not well_formed_id(record_id):
            raise NotFound(self.model.__name__, str(record_id))
        extras = values.pop(EXTRAS, None)
        update: dict[str, Any] = {
            "$set": {k: bson_value(v) for k, v in values.items()},
            "$inc": {VERSION: 1},
        }
        if "updated_at" not in values:
            update["$currentDate"] = {"updated_at": True}
        if extras is not None:
            # New extras replace the old: their keys are set, the stored keys they lack unset.
            with self._driver():
                current = await self.collection.find_one(_id_filter(record_id))
            if current is None:
                raise NotFound(self.model.__name__, record_id)
            update["$set"].update({k: bson_value(v) for k, v in extras.items()})
            stale = [k for k in extra_keys(self.model, current) if k not in extras]
            if stale:
                update["$unset"] = dict.fromkeys(stale, "")
        with self._driver():
            doc = await self.collection.find_one_and_update(
                _versioned_filter(record_id, expected_version),
                update,
                return_document=ReturnDocument.AFTER,
            )
        if doc is None:
            await self._missing(record_id, expected_version)
        return self._model(doc)

    async def _missing(self, record_id: str, expected_version: int | None) -> NoReturn:
        """Why a write by id matched no document: NotFound, or VersionConflict naming the
        version the record is at (one more read, only on this path)."""
        if expected_version is not None:
            with self._driver():
                found = await self.collection.find_one(_id_filter(record_id), {VERSION: 1})
            if found is not None:
                current = found.get(VERSION)
                if current is None:
                    current = LEGACY_VERSION
                raise VersionConflict(
                    self.model.__name__, record_id, int(current), [expected_version]
                )
        raise NotFound(self.model.__name__, record_id)

    async def upsert(
        self, record: E, key: Sequence[str], update_fields: Sequence[str] | None = None
    ) -> E:
        """Insert `record`, or update the record with the same `key` values.

        `key` must be `("id",)` or one of the model's unique keys. On update, the existing
        record's `id` and `created_at` are kept and `update_fields` (default: every other field)
        are overwritten with the record's values. Two concurrent upserts of a new key may race
        to insert; the loser retries once as an update.
        """
        conflict_key = check_upsert_key(self.model, key)
        fields = check_update_fields(self.model, conflict_key, update_fields)
        check_numbered(record)
        doc = self._document_of(record)
        key_filters = check_filters(self.model, _key_filters(record, conflict_key))
        match = filter_document(self.model, key_filters)
        changes = {f: doc[f] for f in fields if f != EXTRAS}
        if EXTRAS in fields:
            changes.update({k: doc[k] for k in record.extras})
        # `version`: 1 on insert, one more on update (`$inc` of a missing key sets it to 1).
        on_insert = {k: v for k, v in doc.items() if k not in changes and k != VERSION}
        update = {"$set": changes, "$setOnInsert": on_insert, "$inc": {VERSION: 1}}
        for attempt in (1, 2):
            try:
                with self._driver():
                    stored = await self.collection.find_one_and_update(
                        match, update, upsert=True, return_document=ReturnDocument.AFTER
                    )
            except DuplicateKey as exc:
                if attempt == 2 or sorted(exc.fields) != sorted(conflict_key):
                    raise
                continue
            return self._model(cast(Doc, stored))
        raise AssertionError("unreachable")  # pragma: no cover

    async def delete(self, record_id: str, *, expected_version: int | None = None) -> bool:
        """Delete one record (and its children); True if it existed (False for malformed ids).

        With `expected_version`, the delete matches only that version (the children go only
        with it); VersionConflict if the record is at another."""
        if not well_formed_id(record_id):
            return False
        with self._driver():
            doc = await self.collection.find_one_and_delete(
                _versioned_filter(record_id, expected_version)
            )
        if doc is None:
            if expected_version is not None:
                try:
                    await self._missing(record_id, expected_version)
                except NotFound:
                    return False
            return False
        await self._delete_children([doc["_id"]])
        return True

    async def delete_where(self, *filters: Filter) -> int:
        """Delete every matching record (and their children); refuses an empty filter list."""
        if not filters:
            raise UnsupportedQuery(
                f"delete_where on {self.model.collection} needs at least one filter; "
                "deleting every record must be asked for with a real condition"
            )
        spec = filter_document(self.model, check_filters(self.model, filters))
        if (
            not CHILDREN.get(self.model.collection)
            and self.model.collection not in RUNTIME_CHILDREN
        ):
            with self._driver():
                return (await self.collection.delete_many(spec)).deleted_count
        with self._driver():
            ids = [d["_id"] for d in await self.collection.find(spec, {"_id": 1}).to_list(None)]
            if not ids:
                return 0
            deleted = (await self.collection.delete_many({"_id": {"$in": ids}})).deleted_count
        await self._delete_children(ids)
        return deleted

    async def _delete_children(self, parent_ids: builtins.list[Any]) -> None:
        """Delete the records that reference the deleted parents (any stored id form), and the
        run-time documents that belong to them (`runtime_schema.RUNTIME_CHILDREN`)."""
        links = CHILDREN.get(self.model.collection, [])
        runtime = self.model.collection in RUNTIME_CHILDREN
        if not links and not runtime:
            return
        forms: builtins.list[Any] = []
        for raw in parent_ids:
            forms.extend(id_forms(id_text(raw)))
        if runtime:
            with self._driver():
                await delete_runtime_children(self._db, self.model.collection, forms)
        for child_collection, field in links:
            repo = MongoRepository(
                ENTITY_BY_COLLECTION[child_collection], self._db, target=self._target
            )
            with self._driver():
                ids = await repo.collection.find({field: {"$in": forms}}, {"_id": 1}).to_list(None)
                if ids:
                    await repo.collection.delete_many({"_id": {"$in": [d["_id"] for d in ids]}})
            await repo._delete_children([d["_id"] for d in ids])


def _key_filters(record: Entity, key: Sequence[str]) -> builtins.list[Filter]:
    return [eq(field, getattr(record, field)) for field in key]


#: Entities stored beside the 15 collections (their indexes are created by `open()` too).
EXTRA_ENTITIES: tuple[type[Entity], ...] = (ApiKey, AgentVersion, ToolApproval)


class MongoRepositories:
    """The 15 repositories of one unit of work (no transaction: see the module docstring)."""

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

    def __init__(self, database: Database, *, target: str) -> None:
        self._database, self._target = database, target
        self._by_model: dict[type[Entity], MongoRepository[Any]] = {}
        for model in ENTITIES:
            repo: MongoRepository[Any] = MongoRepository(model, database, target=target)
            self._by_model[model] = repo
            setattr(self, model.collection, repo)

    def for_model(self, model: type[E]) -> MongoRepository[E]:
        """The repository of `model`: one of the 15 entities or an extra one (`EXTRA_ENTITIES`,
        e.g. API keys in the `api_keys` collection)."""
        try:
            return cast(MongoRepository[E], self._by_model[model])
        except KeyError:
            if model not in EXTRA_ENTITIES:
                raise UnsupportedQuery(f"{model.__name__} is not a stored entity") from None
        repo = MongoRepository(model, self._database, target=self._target)
        self._by_model[model] = repo
        return repo


class MongoStore:
    """`storage.protocol.DocumentStore` over one MongoDB database (pymongo async API)."""

    backend = "mongo"
    #: No multi-document transactions (they need a replica set): writes apply as they happen.
    transactional = False

    def __init__(
        self, database: Database, *, client: Any = None, target: str = "the MongoDB server"
    ) -> None:
        """`database`: an `AsyncDatabase` (or the test emulation). `client`, if given, is closed
        by `close()`. `target` names the server in error messages (never with a password)."""
        self.database = database
        self._client = client
        self.target = target
        self._repos = MongoRepositories(database, target=target)

    def _driver(self) -> Any:
        return translated(entity="database", target=self.target, index_fields=_INDEX_FIELDS)

    async def open(self) -> None:
        """Check the server answers, create the missing indexes (idempotent), the run-time's
        collections' included, and number the chat messages stored before they had `seq`."""
        await self.ping()
        with self._driver():
            await ensure_indexes(self.database, (*ENTITIES, *EXTRA_ENTITIES))
            await ensure_collection_indexes(self.database, RUNTIME_INDEXES)
            await ensure_collection_indexes(self.database, USAGE_INDEXES)
            for model in ENTITIES:
                if model.numbering is not None:
                    await number_legacy(self.database, model)

    @asynccontextmanager
    async def unit_of_work(
        self, *, readonly: bool = False, single_write: bool = False
    ) -> AsyncIterator[MongoRepositories]:
        """The repositories. Not a transaction: an exception in the block undoes nothing
        (`readonly` and `single_write` change nothing here)."""
        yield self._repos

    async def ping(self) -> None:
        """Raise DatabaseUnreachable (naming the server and the fix) if MongoDB does not answer."""
        with self._driver():
            await self.database.command("ping")

    async def close(self) -> None:
        """Close the client (if this store was given one)."""
        if self._client is not None:
            await self._client.close()
