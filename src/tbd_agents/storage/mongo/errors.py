"""pymongo errors → domain errors, in one place.

Duplicate keys become `DuplicateKey` naming the clashing fields; an unreachable server becomes
`DatabaseUnreachable` naming the target, the profile and what to check; a refused operation
becomes `InsufficientPrivilege`; a value BSON cannot hold becomes `InvalidData`. Anything else is
re-raised unchanged (never swallowed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bson.errors import InvalidDocument
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from tbd_agents.errors import (
    DatabaseUnreachable,
    DuplicateKey,
    InsufficientPrivilege,
    InvalidData,
    TbdError,
)

DUPLICATE_KEY_CODE = 11000
_UNAUTHORIZED = 13
_AUTH_FAILED = 18
_INDEX_NAME = re.compile(r"index: (\S+)")


def unreachable(target: str, detail: str) -> DatabaseUnreachable:
    """The error for a MongoDB server that does not answer."""
    return DatabaseUnreachable(
        f"Cannot reach MongoDB at {target} ({detail}): check that MongoDB is running and "
        "reachable at that address and that MONGO_URI is right. With Docker Compose, set "
        "COMPOSE_PROFILES=qdrant (with DB_BACKEND=mongo) in .env and run `docker compose ps` to "
        "confirm the mongodb container is Up. To use PostgreSQL instead, set DB_BACKEND=postgres.",
        details={"target": target},
    )


def _short(exc: BaseException) -> str:
    """The first, useful part of a pymongo connection error (not its topology dump)."""
    text = str(exc).split(" (configured timeouts")[0].split(", Timeout:")[0].strip()
    return (text[:300] or type(exc).__name__).rstrip(",")


def _fields_of_key_pattern(pattern: Mapping[str, Any]) -> list[str]:
    return ["id" if name == "_id" else name for name in pattern]


def duplicate_fields(
    details: Mapping[str, Any] | None, index_fields: Mapping[str, list[str]]
) -> list[str]:
    """The fields of the unique index a duplicate-key error names (empty if it names none).

    Servers since 4.2 report `keyPattern`; older messages only name the index, which is looked
    up in `index_fields` (index name → fields).
    """
    details = details or {}
    pattern = details.get("keyPattern")
    if isinstance(pattern, Mapping) and pattern:
        return _fields_of_key_pattern(pattern)
    found = _INDEX_NAME.search(str(details.get("errmsg", "")))
    if found:
        name = found.group(1)
        if name == "_id_":
            return ["id"]
        return list(index_fields.get(name, []))
    return []


def _duplicate_details(exc: PyMongoError) -> Mapping[str, Any] | None:
    if isinstance(exc, BulkWriteError):
        for err in exc.details.get("writeErrors", []):
            if err.get("code") == DUPLICATE_KEY_CODE:
                return err  # type: ignore[no-any-return]
        return None
    if isinstance(exc, DuplicateKeyError):
        return exc.details or {"errmsg": str(exc)}
    return None


def translate(
    exc: BaseException,
    *,
    entity: str,
    target: str,
    index_fields: Mapping[str, list[str]],
) -> TbdError | None:
    """Map a pymongo/BSON exception to a domain error, or None if it is not one we know."""
    if isinstance(exc, TbdError):
        return exc
    if isinstance(exc, DuplicateKeyError | BulkWriteError):
        dup = _duplicate_details(exc)
        if dup is not None:
            return DuplicateKey(entity, duplicate_fields(dup, index_fields))
        return None
    if isinstance(exc, ConnectionFailure):
        return unreachable(target, _short(exc))
    if isinstance(exc, OperationFailure):
        if exc.code == _AUTH_FAILED:
            return DatabaseUnreachable(
                f"MongoDB at {target} rejected the credentials ({exc}): fix the user and password "
                "in MONGO_URI (and authSource if the user is defined in another database).",
                details={"target": target},
            )
        if exc.code == _UNAUTHORIZED:
            return InsufficientPrivilege(
                f"MongoDB at {target} refused the operation ({exc}): grant the connection user "
                "the readWrite role on the database named by MONGO_DB_NAME (and dbAdmin to "
                "create indexes).",
                details={"target": target},
            )
        return None
    if isinstance(exc, InvalidDocument | OverflowError):
        return InvalidData(f"{entity} cannot be stored in MongoDB: {exc}")
    return None


@contextmanager
def translated(
    *, entity: str, target: str, index_fields: Mapping[str, list[str]]
) -> Iterator[None]:
    """Run the block; re-raise known driver errors as domain errors (with the cause chained)."""
    try:
        yield
    except (PyMongoError, InvalidDocument, OverflowError) as exc:
        mapped = translate(exc, entity=entity, target=target, index_fields=index_fields)
        if mapped is None:
            raise
        raise mapped from exc
