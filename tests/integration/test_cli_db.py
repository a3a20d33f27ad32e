"""`tbd-agents db ...`: from a new process with no environment of ours, and its error lines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner

from tbd_agents.cli import app
from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.engine import libpq_url
from tests.support import pg

CLI = [sys.executable, "-c", "from tbd_agents.cli import app; app()"]
runner = CliRunner()


def _bare_env(home: Path, **extra: str) -> dict[str, str]:
    """HOME and PATH only (plus `extra`): none of our variables, data dir under `home`."""
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "XDG_DATA_HOME": str(home / "data"),
        **extra,
    }


def _tbd(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )


@pytest.fixture
def head_db(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, "cli")
    yield url
    pg.drop_database(url)


@pytest.mark.slow
def test_upgrade_then_current_on_a_fresh_embedded_server_with_no_environment() -> None:
    home = pg.private_dir("tbd-cli-")  # not under pytest's temp dir: see pg.private_dir
    env = _bare_env(home)
    head = migrate.head_revision()

    up = _tbd("db", "upgrade", env=env, cwd=home)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"Running upgrade  -> {migrate.INITIAL_REVISION}" in up.stderr
    assert f"is at {head} (head)" in up.stdout

    pgdata = home / "data" / "tbd-agents" / "pgdata"
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists()  # stopped when the command ended

    current = _tbd("db", "current", env=env, cwd=home)
    assert current.returncode == 0, current.stdout + current.stderr
    assert current.stdout.strip() == f"{head} (head)"
    assert not (pgdata / "postmaster.pid").exists()


def test_history_needs_no_database(tmp_path: Path) -> None:
    result = runner.invoke(app, ["db", "history"], env={"XDG_DATA_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split(",")[0].endswith(f"{migrate.head_revision()} (head)")
    assert lines[-1].startswith(f"<base> -> {migrate.INITIAL_REVISION},")
    assert not (tmp_path / "tbd-agents").exists()
    verbose = runner.invoke(app, ["db", "history", "--verbose"])
    assert verbose.exit_code == 0
    assert f"Rev: {migrate.DOCUMENT_SCHEMA_REVISION}" in verbose.stdout
    assert "Path: " in verbose.stdout


def test_mongo_backend_makes_upgrade_a_no_op(tmp_path: Path) -> None:
    env = {"DB_BACKEND": "mongo", "XDG_DATA_HOME": str(tmp_path)}
    result = runner.invoke(app, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("DB_BACKEND=mongo: documents are stored in MongoDB")
    assert not (tmp_path / "tbd-agents").exists()  # no embedded server was started


def test_upgrade_current_downgrade_check_with_url(pg18_server: str) -> None:
    url = pg.create_database(pg18_server, "cliurl")
    try:
        target = ["--url", libpq_url(url)]
        up = runner.invoke(app, ["db", "upgrade", *target])
        assert up.exit_code == 0, up.output
        current = runner.invoke(app, ["db", "current", *target])
        assert current.stdout.strip() == f"{migrate.head_revision()} (head)"
        down = runner.invoke(app, ["db", "downgrade", *target])
        assert down.exit_code == 0, down.output
        parent = migrate.history()[0].down_revision
        assert f"is at {parent}" in down.stdout
        base = runner.invoke(app, ["db", "downgrade", "base", *target])
        assert base.exit_code == 0
        empty = runner.invoke(app, ["db", "current", *target])
        assert "no revision (empty database" in empty.stdout
    finally:
        pg.drop_database(url)


def test_check_reports_a_dropped_index(head_db: URL) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(libpq_url(head_db))
        try:
            await conn.execute("DROP INDEX idx_agents_name")
        finally:
            await conn.close()

    pg.run(drop())
    result = runner.invoke(app, ["db", "check", "--url", libpq_url(head_db)])
    assert result.exit_code == 1
    assert "idx_agents_name" in result.stderr


def test_check_refuses_a_database_behind_head(pg18_server: str) -> None:
    url = pg.create_migrated_database(
        pg18_server, "cliold", revision=migrate.DOCUMENT_SCHEMA_REVISION
    )
    try:
        result = runner.invoke(app, ["db", "check", "--url", libpq_url(url)])
        assert result.exit_code == 1
        assert "run `alembic upgrade head`" in result.stderr
    finally:
        pg.drop_database(url)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    port = _closed_port()
    result = _tbd(
        "db",
        "current",
        env=_bare_env(tmp_path, POSTGRES_URI=f"postgresql://u:secret@127.0.0.1:{port}/x"),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Error: Cannot connect to PostgreSQL at 127.0.0.1:{port}/x")
    assert "secret" not in result.stderr


@pytest.mark.pg15
def test_upgrade_on_a_server_without_pgvector(pg15_server: str) -> None:
    url = pg.create_database(pg15_server, "clinovec")
    try:
        result = runner.invoke(app, ["db", "upgrade", "--url", libpq_url(url)])
        assert result.exit_code == 1
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith(f"Running upgrade  -> {migrate.INITIAL_REVISION}")
        assert lines[-1].startswith('Error: PostgreSQL extension "vector" is not available')
    finally:
        pg.drop_database(url)


def test_profile_mismatch_stops_the_command() -> None:
    result = runner.invoke(app, ["db", "current"], env={"COMPOSE_PROFILES": "qdrant"})
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "COMPOSE_PROFILES=qdrant does not match DB_BACKEND=postgres" in result.stderr


@pytest.mark.parametrize("command", ["upgrade", "current", "history", "downgrade", "check"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, ["db", command, "--help"])
    assert result.exit_code == 0
    assert "alembic" in result.stdout
    assert "Usage:" in result.stdout
