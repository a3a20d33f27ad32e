"""A database outage that reached the API's edge untranslated, as the StorageError (503) it is.

The repositories translate driver errors themselves. Code that talks to the driver directly (the
run-time stores: run events, leases, webhooks) lets them through; the API's last-resort handler
asks `outage_of` whether such an error means the database is unreachable, lost the connection or
is out of disk, so the client gets the documented 503 and not a 500. Other driver errors
(constraint violations, bugs) are left alone: they stay 500s with an incident id.
"""

from __future__ import annotations

import sys
from types import TracebackType

from tbd_agents.errors import StorageError
from tbd_agents.storage.protocol import DocumentStore

#: Modules whose frames mark a bare OSError as a database connection error.
_DRIVER_MODULES = ("asyncpg", "sqlalchemy", "pymongo")


def _raised_by_driver(tb: TracebackType | None) -> bool:
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.split(".")[0] in _DRIVER_MODULES:
            return True
        tb = tb.tb_next
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def outage_of(exc: BaseException, store: DocumentStore | None) -> StorageError | None:
    """The StorageError that `exc` amounts to, if it says the database cannot serve requests
    now (unreachable, connection lost, disk full, out of connections); None otherwise."""
    chain = _chain(exc)
    if store is not None and store.backend == "mongo" and "pymongo" in sys.modules:
        from pymongo.errors import PyMongoError

        from tbd_agents.storage.mongo.errors import translate as mongo_translate

        target = str(getattr(store, "target", "the MongoDB server"))
        for err in chain:
            if isinstance(err, PyMongoError):
                mapped = mongo_translate(err, entity="record", target=target, index_fields={})
                return mapped if isinstance(mapped, StorageError) else None
        return None
    from tbd_agents.storage.postgres.errors import DRIVER_ERRORS, translate

    driver = [e for e in chain if isinstance(e, DRIVER_ERRORS)]
    if not driver:
        return None
    if all(isinstance(e, OSError) for e in driver) and not any(
        _raised_by_driver(e.__traceback__) for e in driver
    ):
        return None  # a file or socket error of something else (a tool, an upload)
    url = getattr(store, "url", None)
    embedded = bool(getattr(store, "embedded", False))
    mapped = translate(exc, url=url, embedded=embedded)
    return mapped if isinstance(mapped, StorageError) else None
