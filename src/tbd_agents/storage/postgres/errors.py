"""Driver errors → domain errors, in one place.

Every row of the guide's troubleshooting table becomes an error whose message names the cause and
the fix. Other SQL states map to the domain hierarchy (unique → DuplicateKey, check / not-null /
foreign key → InvalidData). Anything unrecognised is returned as None and re-raised by the caller.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from tbd_agents.errors import (
    DatabaseUnreachable,
    DiskFull,
    DuplicateKey,
    ExtensionMissing,
    InsufficientPrivilege,
    InvalidData,
    SchemaNotReady,
    TbdError,
)

#: What a database call can raise that `translate` knows about: SQLAlchemy's wrapped driver
#: errors, socket errors, and the asyncpg errors SQLAlchemy passes through unwrapped (the
#: direct statements of `direct.py`; InternalClientError, which it has no DB-API class for).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    DBAPIError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

UPGRADE_HINT = "run `alembic upgrade head` (or `tbd-agents db upgrade`) against this database"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__


def sqlstate_of(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of `exc` or of the driver error it wraps."""
    for err in _chain(exc):
        state = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(state, str) and state:
            return state
    return None


def _driver_message(exc: BaseException) -> str:
    for err in _chain(exc):
        if getattr(err, "sqlstate", None):
            return str(err).strip()
    return str(exc).strip()


def where(url: URL | None) -> str:
    """`host:port/database` of `url` for messages (never the password)."""
    if url is None:
        return "the configured PostgreSQL server"
    host = url.host or url.query.get("host") or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    port = f":{url.port or 5432}" if url.host else ""
    return f"{host}{port}/{url.database}"


def connection_refused(
    url: URL | None, detail: str, *, embedded: bool = False
) -> DatabaseUnreachable:
    if embedded:
        fix = (
            "the embedded PostgreSQL did not answer: check its log in the data directory "
            "(EMBEDDED_PG_DATA_DIR, default DATA_DIR/pgdata) and that no other process holds it"
        )
    else:
        fix = (
            "check that PostgreSQL is running and reachable at that address. With Docker Compose, "
            "set COMPOSE_PROFILES=pgvector (and DB_BACKEND=postgres) in .env and run "
            "`docker compose ps` to confirm the pgvector container is Up. To use the embedded "
            "server instead, unset POSTGRES_URI"
        )
    return DatabaseUnreachable(
        f"Cannot connect to PostgreSQL at {where(url)} ({detail}): {fix}.",
        details={"target": where(url)},
    )


def _data_dir_hint(embedded: bool) -> str:
    if embedded:
        return (
            "the embedded PostgreSQL's data directory (EMBEDDED_PG_DATA_DIR, default "
            "DATA_DIR/pgdata)"
        )
    return "the PostgreSQL server's data directory"


def connection_lost(url: URL | None, detail: str, *, embedded: bool = False) -> DatabaseUnreachable:
    """The error for a connection the server closed or lost while it was in use."""
    if embedded:
        after = (
            "`tbd-agents serve` restarts its embedded PostgreSQL by itself; if this persists, "
            "see GET /health/ready and the server log in the data directory"
        )
    else:
        after = "if it persists, check that PostgreSQL is running and reachable at that address"
    return DatabaseUnreachable(
        f"The connection to PostgreSQL at {where(url)} was lost ({detail}): the server stopped, "
        "restarted or ended the session, and this request's changes were not confirmed. Retry "
        f"the request once the database is back; {after}.",
        details={"target": where(url), "reason": "connection_lost"},
    )


def disk_full(url: URL | None, detail: str, *, embedded: bool = False) -> DiskFull:
    """The error for a write the server refused because its disk is full (SQLSTATE 53100)."""
    detail = detail.splitlines()[0] if detail else "No space left on device"
    return DiskFull(
        f"PostgreSQL at {where(url)} cannot write: disk full ({detail}). Free space on the "
        f"volume holding {_data_dir_hint(embedded)} (delete files, grow the volume); writes "
        "succeed again as soon as there is room, without a restart.",
        details={"target": where(url), "reason": "disk_full"},
    )


_CONNECTION_ERRORS = (ConnectionRefusedError, ConnectionResetError, socket.gaierror, TimeoutError)
#: SQLSTATEs of a connection that was open and is gone: 08000 connection_exception, 08003
#: connection_does_not_exist (asyncpg: closed in the middle of an operation), 08006
#: connection_failure, 08007 transaction_resolution_unknown, 57P01 admin_shutdown (server
#: stopping, pg_terminate_backend), 57P02 crash_shutdown (another backend crashed), 57P05
#: idle_session_timeout.
_LOST_STATES = frozenset({"08000", "08003", "08006", "08007", "57P01", "57P02", "57P05"})
#: Driver errors without a SQLSTATE (asyncpg InterfaceError / InternalClientError) that mean the
#: connection is gone, by their text: "connection is closed", "connection was closed in the
#: middle of operation", "unexpected connection_lost() call".
_LOST_TEXT = re.compile(r"connection(?: is| was)? (?:closed|lost)|connection_lost", re.IGNORECASE)


def _lost_without_state(exc: BaseException) -> BaseException | None:
    """The error in `exc`'s chain saying the connection is gone, when it carries no SQLSTATE:
    SQLAlchemy marked the connection invalidated (its dialect saw a disconnect), or an asyncpg
    InterfaceError / InternalClientError says the connection is closed or lost."""
    for err in _chain(exc):
        if isinstance(err, DBAPIError) and err.connection_invalidated:
            return err.orig if err.orig is not None else err
        if isinstance(err, asyncpg.InterfaceError | asyncpg.InternalClientError) and (
            _LOST_TEXT.search(str(err))
        ):
            found: BaseException = err
            return found
    return None


_EXTENSION_RE = re.compile(r'extension "([^"]+)"')
_RELATION_RE = re.compile(r'relation "([^"]+)" does not exist')
_COLUMN_RE = re.compile(r'column "([^"]+)"')
_UNIQUE_KEY_RE = re.compile(r"Key \(([^)]*)\)")


def translate(
    exc: BaseException,
    *,
    url: URL | None = None,
    entity: str = "record",
    embedded: bool = False,
) -> TbdError | None:
    """Map a driver/SQLAlchemy exception to a domain error, or None if it is not one we know."""
    if isinstance(exc, TbdError):
        return exc
    state = sqlstate_of(exc)
    message = _driver_message(exc)
    if state is None:
        lost = _lost_without_state(exc)
        if lost is not None:
            return connection_lost(url, str(lost) or type(lost).__name__, embedded=embedded)
        for err in _chain(exc):
            if isinstance(err, _CONNECTION_ERRORS) or (
                isinstance(err, OSError) and err.errno is not None
            ):
                return connection_refused(url, str(err) or type(err).__name__, embedded=embedded)
        return None
    if state in ("08001", "08004"):
        return connection_refused(url, message, embedded=embedded)
    if state == "57P03":  # cannot_connect_now: starting up, shutting down or in crash recovery
        return connection_refused(
            url,
            f"{message}; retry in a few seconds",
            embedded=embedded,
        )
    if state in _LOST_STATES:
        return connection_lost(url, message, embedded=embedded)
    if state == "53100":
        return disk_full(url, message, embedded=embedded)
    if state == "53300":
        return DatabaseUnreachable(
            f"PostgreSQL at {where(url)} refused a connection ({message}): raise the server's "
            "max_connections, or lower POSTGRES_POOL_SIZE / POSTGRES_MAX_OVERFLOW of the "
            "processes sharing it.",
            details={"target": where(url), "reason": "too_many_connections"},
        )
    if state == "53200":
        return DatabaseUnreachable(
            f"PostgreSQL at {where(url)} is out of memory ({message}): give the server more "
            "memory or lower its work_mem / shared_buffers; retry the request.",
            details={"target": where(url), "reason": "out_of_memory"},
        )
    if state == "3D000":
        db = url.database if url else "the database"
        return DatabaseUnreachable(
            f'Database "{db}" does not exist on {where(url)}: create it (`createdb {db}` or '
            f"`CREATE DATABASE {db};`), or point POSTGRES_URI / POSTGRES_DB_NAME at an existing one.",
        )
    if state in ("28P01", "28000"):
        return DatabaseUnreachable(
            f"PostgreSQL at {where(url)} rejected the credentials ({message}): fix the user and "
            "password in POSTGRES_URI.",
        )
    if state == "42P01":
        found = _RELATION_RE.search(message)
        rel = found.group(1) if found else "a table"
        return SchemaNotReady(
            f'relation "{rel}" does not exist: the tables have not been created in {where(url)}; '
            f"{UPGRADE_HINT}.",
        )
    if state == "42703":
        found = _COLUMN_RE.search(message)
        col = found.group(1) if found else "?"
        return SchemaNotReady(
            f'column "{col}" does not exist in {where(url)}: the database schema is older than this '
            f"version of TBD Agents; {UPGRADE_HINT}, then confirm with `alembic current` that it is "
            "at head.",
        )
    if state == "42501":
        user = url.username if url and url.username else "the connection user"
        db = url.database if url and url.database else "the database"
        found = _EXTENSION_RE.search(message)
        if found:  # only superusers may create an untrusted extension such as pgvector
            return InsufficientPrivilege(
                f"Permission denied on {where(url)} ({message}): a superuser must create the "
                f"extension once, e.g. `psql -U postgres -d {db} -c 'CREATE EXTENSION IF NOT "
                f"EXISTS {found.group(1)};'`, then run `alembic upgrade head` again (or make "
                f"{user} a superuser).",
                details={"extension": found.group(1)},
            )
        return InsufficientPrivilege(
            f"Permission denied on {where(url)} ({message}): grant the privilege to the "
            f"connection user, e.g. `GRANT CREATE ON DATABASE {db} TO {user};` and "
            f"`GRANT CREATE ON SCHEMA public TO {user};` (or make it a superuser).",
        )
    if state in ("58P01", "0A000") and "extension" in message.lower():
        found = _EXTENSION_RE.search(message)
        ext = found.group(1) if found else "vector"
        return extension_missing(url, ext)
    if state == "23505":
        found = _UNIQUE_KEY_RE.search(message)
        fields = [f.strip() for f in found.group(1).split(",")] if found else []
        return DuplicateKey(entity, fields)
    if state in ("22021", "22P05") and ("0x00" in message or "Unicode escape" in message):
        # A NUL character (U+0000): PostgreSQL text and JSONB cannot hold it.
        return InvalidData(
            f"{entity} rejected by the database: a text value contains the NUL character "
            "(U+0000), which PostgreSQL cannot store in text or JSON; remove it from the value"
        )
    if state in ("23514", "23502", "23503", "22P02", "22001", "22003", "22007", "22021", "22P05"):
        return InvalidData(f"{entity} rejected by the database: {message}")
    return None


def extension_missing(url: URL | None, extension: str = "vector") -> ExtensionMissing:
    return ExtensionMissing(
        f'PostgreSQL extension "{extension}" is not available on {where(url)}: pgvector is not '
        "installed on this server. Use the pgvector/pgvector:pg16 image (the pgvector compose "
        "profile does this), install your distribution's pgvector package (e.g. "
        "postgresql-16-pgvector) and run `CREATE EXTENSION vector;`, or unset POSTGRES_URI to use "
        "the embedded PostgreSQL, which ships pgvector.",
        details={"extension": extension},
    )


_DIAGNOSTICS = ("schema_name", "table_name", "column_name", "constraint_name", "data_type_name")


def describe(exc: BaseException) -> str | None:
    """What a database error is, without any value it carried: SQLSTATE, driver error class,
    table / column / constraint and the statement's shape (its SQL with placeholders, never the
    bind parameters or the server's message, which can quote a row). None if `exc` is not a
    database error."""
    state = sqlstate_of(exc)
    if state is None:
        return None
    parts = [f"SQLSTATE {state}"]
    chain = list(_chain(exc))
    names = [type(e).__name__ for e in chain if getattr(e, "sqlstate", None)]
    if names:
        parts.append(names[-1])
    for attr in _DIAGNOSTICS:
        value = next((getattr(e, attr) for e in chain if getattr(e, attr, None)), None)
        if isinstance(value, str):
            parts.append(f"{attr.removesuffix('_name')}={value}")
    statement = next(
        (getattr(e, "statement", None) for e in chain if getattr(e, "statement", None)), None
    )
    if isinstance(statement, str):
        shape = " ".join(statement.split())
        parts.append(f"statement: {shape[:300]}{'…' if len(shape) > 300 else ''}")
    return "; ".join(parts)
