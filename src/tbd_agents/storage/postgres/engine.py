"""The SQLAlchemy async engine (asyncpg driver), built once per process and event loop."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from tbd_agents.observability.gauges import watch_pool
from tbd_agents.observability.tracing_setup import instrument_engine


def _json_default(value: Any) -> Any:
    # Datetimes and other non-JSON values inside JSONB payloads: ISO text rather than a crash.
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_dumps(value: Any) -> str:
    """Compact JSON text for JSONB parameters (orjson; datetimes as ISO text). Values orjson
    refuses (integers beyond 64 bits) go through the standard library with the same layout."""
    try:
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


#: A run of digits long enough to be an integer outside orjson's 64-bit range.
_LONG_NUMBER = re.compile(r"[0-9]{19,}")
_LONG_NUMBER_BYTES = re.compile(rb"[0-9]{19,}")


def json_loads(text: str | bytes) -> Any:
    """Python objects from JSONB text (orjson). orjson reads an integer beyond 64 bits as a
    float; text with such a run of digits goes through the standard library, which keeps it."""
    long = _LONG_NUMBER.search(text) if isinstance(text, str) else _LONG_NUMBER_BYTES.search(text)
    if long:
        return json.loads(text)
    return orjson.loads(text)


def asyncpg_url(url: URL | str) -> URL:
    """`url` with the asyncpg driver, whichever of postgresql:// or postgresql+asyncpg:// it had."""
    return (
        make_url(url).set(drivername="postgresql+asyncpg")
        if isinstance(url, str)
        else url.set(drivername="postgresql+asyncpg")
    )


def libpq_url(url: URL | str) -> str:
    """`url` as a libpq connection string (for pg_dump, psql and plain asyncpg), password kept."""
    return asyncpg_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: URL | str,
    *,
    application_name: str = "tbd-agents",
    pool_size: int = 10,
    max_overflow: int = 10,
    connect_timeout: float = 10.0,
    pool_pre_ping: bool = False,
    pool_label: str | None = "app",
) -> AsyncEngine:
    """An async engine whose JSONB values round-trip as Python objects and whose sessions run
    in UTC, so TIMESTAMPTZ values come back timezone-aware UTC.

    A pooled connection the server has closed (a restart, `pg_terminate_backend`, an idle
    timeout) is never handed out again: the driver already knows it is closed, so the checkout
    replaces it, and every older pooled connection with it, at no cost (`_refuse_closed`).
    `pool_pre_ping` adds a round trip per checkout, which also catches a connection whose end
    the driver has not seen yet; without it such a connection fails its first use (translated
    to DatabaseUnreachable, 503) and SQLAlchemy then replaces every older pooled connection.

    Observed: `tbd_db_pool_connections{pool=pool_label}` follows the pool (None: not counted,
    for short-lived helper engines) and, with tracing on, each statement is a span."""
    engine = create_async_engine(
        asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pool_pre_ping,
        # Errors and echo show the statement, never its bind parameters (row values: token
        # ciphertext, connection configs, prompts).
        hide_parameters=True,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
        connect_args={
            "timeout": connect_timeout,
            "server_settings": {"application_name": application_name, "timezone": "UTC"},
        },
    )
    event.listen(engine.sync_engine.pool, "checkout", _refuse_closed)
    if pool_label is not None:
        watch_pool(engine, pool_label)
    instrument_engine(engine)
    return engine


def _refuse_closed(
    dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
) -> None:
    """Pool checkout hook: a connection whose socket the server closed while it sat in the pool
    is replaced (the database restarted or ended the session), and so are the pool's other
    connections of the same age (`InvalidatePoolError`), instead of failing the request that
    would have used it. The check is local (asyncpg saw the end of the stream), no round trip."""
    driver = record.driver_connection  # the asyncpg connection
    is_closed = getattr(driver, "is_closed", None)
    if is_closed is not None and is_closed():
        raise InvalidatePoolError("the server closed this pooled connection")
