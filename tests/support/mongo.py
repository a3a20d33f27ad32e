"""An in-process stand-in for MongoDB: mongomock behind the subset of pymongo's async API that
`MongoStore` uses.

No MongoDB server can run on the test machines, so the MongoDB backend is tested against this
emulation. It keeps as close to a real `AsyncMongoClient(tz_aware=True)` as the repository needs:

* every method that does I/O in pymongo is a coroutine here and yields to the event loop once;
  `find()` returns a cursor with `sort` / `limit` / `skip`, `async for` and `to_list()`;
* documents, filters and updates pass through real BSON (`bson.encode` / `bson.decode`) on the
  way in and out, so values BSON cannot hold fail as they would with the driver, datetimes keep
  milliseconds and come back timezone-aware UTC, and 64-bit integers come back as `Int64`;
* a unique-index clash raises pymongo's own `DuplicateKeyError` / `BulkWriteError` with the
  details a server sends (`keyPattern`, `keyValue`, an `errmsg` naming the index), which
  mongomock alone does not provide.

Known differences from a real server are listed in docs/storage-mongo.md.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC
from typing import Any, TypeVar

import bson
import mongomock
import pytest
from bson.codec_options import CodecOptions
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.results import InsertManyResult, InsertOneResult

from tbd_agents.storage.mongo.repository import MongoStore
from tbd_agents.storage.protocol import DocumentStore

Doc = dict[str, Any]
T = TypeVar("T")

_AWARE = CodecOptions(tz_aware=True, tzinfo=UTC)
_NAIVE = CodecOptions(tz_aware=False)


def _through_bson(value: Any, options: CodecOptions = _AWARE) -> Any:
    """`value` encoded to BSON and decoded again, as a round trip to a server would."""
    return bson.decode(bson.encode({"v": value}), codec_options=options)["v"]


_UPDATE_OPERATORS = frozenset({"$set", "$setOnInsert", "$unset", "$inc", "$currentDate", "$min"})


async def _checkpoint() -> None:
    await asyncio.sleep(0)


def _atomic(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Yield to the event loop once, then run the call whole, holding the client's lock: a call
    is atomic against other tasks and against other threads using the same data (a worker's
    event loop in a thread), as a server's single-document operations are."""

    @functools.wraps(method)
    async def atomic(self: Any, *args: Any, **kwargs: Any) -> T:
        await _checkpoint()
        with self.client_lock:
            return await method(self, *args, **kwargs)

    return atomic


class EmulatedCursor:
    """The part of `pymongo.asynchronous.cursor.AsyncCursor` the repository uses."""

    def __init__(self, collection: EmulatedCollection, spec: Doc, projection: Any) -> None:
        self._collection = collection
        self.client_lock = collection.client_lock
        self._spec = spec
        self._projection = projection
        self._sort: list[tuple[str, int]] | None = None
        self._limit = 0
        self._skip = 0

    def sort(self, key: Any, direction: int | None = None) -> EmulatedCursor:
        self._sort = [(key, direction or 1)] if isinstance(key, str) else list(key)
        return self

    def limit(self, limit: int) -> EmulatedCursor:
        self._limit = limit
        return self

    def skip(self, skip: int) -> EmulatedCursor:
        self._skip = skip
        return self

    @_atomic
    async def to_list(self, length: int | None = None) -> list[Doc]:
        found = self._collection.sync.find(
            self._spec,
            self._projection,
            sort=self._sort,
            limit=self._limit,
            skip=self._skip,
        )
        docs = [self._collection.out(d) for d in found]
        return docs if length is None else docs[:length]

    async def __aiter__(self) -> AsyncIterator[Doc]:
        for doc in await self.to_list():
            yield doc


class EmulatedCollection:
    """The part of `pymongo.asynchronous.collection.AsyncCollection` the repository uses."""

    def __init__(self, database: EmulatedDatabase, sync: mongomock.Collection) -> None:
        self.database = database
        self.client_lock = database.client.lock
        self.sync = sync
        self.name = sync.name

    # --- BSON in and out ---------------------------------------------------------------------
    def out(self, doc: Doc | None) -> Doc | None:
        return None if doc is None else _through_bson(doc, self.database.codec_options)

    @staticmethod
    def _in(value: Any) -> Any:
        return _through_bson(value)

    # --- server-like duplicate-key errors -------------------------------------------------
    def _clash(self, candidate: Mapping[str, Any], own_id: Any = None) -> Doc | None:
        """The write-error details a server would send if `candidate` breaks a unique index."""
        for name, info in self.sync.index_information().items():
            if name != "_id_" and not info.get("unique"):
                continue
            keys = [k for k, _ in info["key"]]
            probe = {k: candidate.get(k) for k in keys}
            query: Doc = probe if own_id is None else {"$and": [probe, {"_id": {"$ne": own_id}}]}
            if self.sync.find_one(query) is not None:
                shown = ", ".join(f"{k}: {v!r}" for k, v in probe.items())
                return {
                    "index": 0,
                    "code": 11000,
                    "errmsg": (
                        f"E11000 duplicate key error collection: {self.database.name}.{self.name} "
                        f"index: {name} dup key: {{ {shown} }}"
                    ),
                    "keyPattern": dict(info["key"]),
                    "keyValue": probe,
                }
        return None

    def _duplicate(self, candidate: Mapping[str, Any], own_id: Any = None) -> DuplicateKeyError:
        details = self._clash(candidate, own_id) or {"code": 11000, "errmsg": "E11000"}
        return DuplicateKeyError(details["errmsg"], 11000, details)

    # --- writes ---------------------------------------------------------------------------
    @_atomic
    async def insert_one(self, document: Doc) -> InsertOneResult:
        document.setdefault("_id", bson.ObjectId())
        doc = self._in(document)
        clash = self._clash(doc)
        if clash is not None:
            raise DuplicateKeyError(clash["errmsg"], 11000, clash)
        self.sync.insert_one(doc)
        return InsertOneResult(doc["_id"], acknowledged=True)

    @_atomic
    async def insert_many(self, documents: Iterable[Doc], ordered: bool = True) -> InsertManyResult:
        inserted: list[Any] = []
        errors: list[Doc] = []
        for index, document in enumerate(documents):
            document.setdefault("_id", bson.ObjectId())
            doc = self._in(document)
            clash = self._clash(doc)
            if clash is None:
                self.sync.insert_one(doc)
                inserted.append(doc["_id"])
                continue
            errors.append({**clash, "index": index, "op": doc})
            if ordered:
                break
        if errors:
            raise BulkWriteError(
                {
                    "writeErrors": errors,
                    "writeConcernErrors": [],
                    "nInserted": len(inserted),
                    "nUpserted": 0,
                    "nMatched": 0,
                    "nModified": 0,
                    "nRemoved": 0,
                    "upserted": [],
                }
            )
        return InsertManyResult(inserted, acknowledged=True)

    @_atomic
    async def find_one_and_update(
        self,
        filter: Doc,
        update: Doc,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = False,
    ) -> Doc | None:
        spec, change = self._in(filter), self._in(update)
        self._check_operators(change)
        target = self.sync.find_one(spec, sort=sort)
        if target is not None:
            candidate, own_id = {**target, **change.get("$set", {})}, target["_id"]
        elif upsert:
            equal = {
                k: v for k, v in spec.items() if not k.startswith("$") and not isinstance(v, dict)
            }
            candidate = {**equal, **change.get("$setOnInsert", {}), **change.get("$set", {})}
            own_id = None
        else:
            return None
        if self._clash(candidate, own_id) is not None:
            raise self._duplicate(candidate, own_id)
        result = self.sync.find_one_and_update(
            spec, change, projection, sort=sort, upsert=upsert, return_document=return_document
        )
        return self.out(result)

    @staticmethod
    def _check_operators(change: Mapping[str, Any]) -> None:
        # The unique-index check below applies `$set` only: the other operators must not touch
        # a uniquely indexed field (the run-time's `$inc` / `$unset` never do).
        unsupported = set(change) - _UPDATE_OPERATORS
        if unsupported:
            raise NotImplementedError(f"emulation supports {sorted(_UPDATE_OPERATORS)} only")

    @_atomic
    async def update_one(self, filter: Doc, update: Doc, upsert: bool = False) -> Any:
        spec, change = self._in(filter), self._in(update)
        self._check_operators(change)
        target = self.sync.find_one(spec)
        if target is not None:
            candidate = {**target, **change.get("$set", {})}
            if self._clash(candidate, target["_id"]) is not None:
                raise self._duplicate(candidate, target["_id"])
        return self.sync.update_one(spec, change, upsert=upsert)

    @_atomic
    async def update_many(self, filter: Doc, update: Doc) -> Any:
        change = self._in(update)
        self._check_operators(change)
        return self.sync.update_many(self._in(filter), change)

    @_atomic
    async def distinct(self, key: str, filter: Doc | None = None) -> list[Any]:
        values = self.sync.distinct(key, self._in(filter or {}))
        return [_through_bson(v, self.database.codec_options) for v in values]

    @_atomic
    async def find_one_and_delete(self, filter: Doc, projection: Any = None) -> Doc | None:
        return self.out(self.sync.find_one_and_delete(self._in(filter), projection))

    @_atomic
    async def delete_one(self, filter: Doc) -> Any:
        return self.sync.delete_one(self._in(filter))

    @_atomic
    async def delete_many(self, filter: Doc) -> Any:
        return self.sync.delete_many(self._in(filter))

    # --- reads ----------------------------------------------------------------------------
    def find(
        self,
        filter: Doc | None = None,
        projection: Any = None,
        *,
        sort: Any = None,
        limit: int = 0,
        skip: int = 0,
    ) -> EmulatedCursor:
        cursor = EmulatedCursor(self, self._in(filter or {}), projection)
        if sort:
            cursor.sort(sort)
        return cursor.limit(limit).skip(skip)

    @_atomic
    async def find_one(self, filter: Doc | None = None, projection: Any = None) -> Doc | None:
        return self.out(self.sync.find_one(self._in(filter or {}), projection))

    @_atomic
    async def count_documents(self, filter: Doc) -> int:
        return int(self.sync.count_documents(self._in(filter)))

    # --- indexes --------------------------------------------------------------------------
    @_atomic
    async def create_index(
        self, keys: Any, *, name: str | None = None, unique: bool = False
    ) -> str:
        return str(self.sync.create_index(keys, name=name, unique=unique))

    @_atomic
    async def index_information(self) -> dict[str, Any]:
        return dict(self.sync.index_information())


class EmulatedDatabase:
    """The part of `pymongo.asynchronous.database.AsyncDatabase` the store uses."""

    def __init__(self, client: EmulatedClient, name: str) -> None:
        self.client = client
        self.name = name
        self.sync = client.sync.get_database(name)
        self.codec_options = _AWARE if client.tz_aware else _NAIVE
        self._collections: dict[str, EmulatedCollection] = {}

    def get_collection(self, name: str) -> EmulatedCollection:
        if name not in self._collections:
            self._collections[name] = EmulatedCollection(self, self.sync.get_collection(name))
        return self._collections[name]

    def __getitem__(self, name: str) -> EmulatedCollection:
        return self.get_collection(name)

    async def command(self, command: str) -> dict[str, Any]:
        await _checkpoint()
        if self.client.closed:
            raise RuntimeError("the emulated client is closed")
        if command != "ping":
            raise NotImplementedError(f"emulation answers ping only, not {command!r}")
        return {"ok": 1.0}


class EmulatedClient:
    """`AsyncMongoClient`-like: `get_database`, async `close`, `tz_aware` like the driver's."""

    def __init__(self, *, tz_aware: bool = True, sibling_of: EmulatedClient | None = None) -> None:
        self.tz_aware = tz_aware
        self.sync = (
            sibling_of.sync if sibling_of is not None else mongomock.MongoClient(tz_aware=tz_aware)
        )
        self.lock = sibling_of.lock if sibling_of is not None else threading.RLock()
        self.closed = False

    def sibling(self) -> EmulatedClient:
        """Another client on the same data (as a second process's client of one server would
        be); closing it leaves this one open."""
        return EmulatedClient(tz_aware=self.tz_aware, sibling_of=self)

    def get_database(self, name: str) -> EmulatedDatabase:
        return EmulatedDatabase(self, name)

    async def close(self) -> None:
        self.closed = True


EMULATION_TARGET = "mongomock (in-process MongoDB emulation)"


async def make_mongo_store(name: str | None = None) -> MongoStore:
    """A `MongoStore` on a fresh emulated database, opened (indexes created)."""
    client = EmulatedClient(tz_aware=True)
    database = client.get_database(name or f"tbd_{uuid.uuid4().hex[:12]}")
    store = MongoStore(database, client=client, target=EMULATION_TARGET)  # type: ignore[arg-type]
    await store.open()
    return store


@asynccontextmanager
async def _contract_store() -> AsyncIterator[DocumentStore]:
    store = await make_mongo_store()
    try:
        yield store
    finally:
        await store.close()


def contract_store(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[DocumentStore]:
    """Store factory of the contract suite (see tests/contract/conftest.py)."""
    return _contract_store()


#: A real MongoDB-compatible server to run the contract suite against as well (opt-in: none can
#: run on the build machines), e.g. `mongodb://127.0.0.1:27017` or a FerretDB.
SERVER_URI_VARIABLE = "TBD_TEST_MONGO_URI"


@asynccontextmanager
async def _server_store(uri: str) -> AsyncIterator[DocumentStore]:
    from tbd_agents.config import Settings
    from tbd_agents.storage.mongo.connect import open_mongo_store

    name = f"tbd_contract_{uuid.uuid4().hex[:12]}"
    settings = Settings(db_backend="mongo", mongo_uri=uri, mongo_db_name=name)  # type: ignore[call-arg]
    store = await open_mongo_store(settings)
    try:
        yield store
    finally:
        await store.database.client.drop_database(name)
        await store.close()


def server_contract_store(uri: str) -> Any:
    """Store factory of the contract suite for a real server at `uri` (a fresh database each
    module, dropped afterwards)."""

    def factory(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[DocumentStore]:
        return _server_store(uri)

    return factory
