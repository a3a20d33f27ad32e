"""`tbd-agents serve` always lets go of the embedded PostgreSQL it started.

Real signals to a real `serve` process: SIGTERM, SIGINT and SIGHUP while it serves, and SIGTERM
during start-up, must leave no postgres process behind (checked by pid, by the processes working
in the data directory, and with `pg_ctl status`). A server left behind by a serve killed with
SIGKILL is adopted by the next serve, which restarts it when a restart-only setting changed; a
server another live process uses keeps running until that process lets go, then stops.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import asyncpg
import pytest

from tbd_agents.storage.postgres import embedded_process as process
from tests.faults.serving import ROOT, Serving, base_dir, serve_fixture  # noqa: F401

Serve = Callable[..., Serving]


def _assert_no_server(server: Serving, pid: int | None) -> None:
    deadline = time.monotonic() + 10  # the postmaster's backends exit with it
    while server.postgres_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.postgres_processes() == [], server.output()
    assert pid is not None and not process.pid_alive(pid)
    status = server.pg_ctl("status")
    assert status.returncode == 3 and "no server running" in status.stdout, status.stdout


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name
)
def test_a_stop_signal_stops_the_embedded_server(serve: Serve, sig: signal.Signals) -> None:
    """Old code: uvicorn re-raised SIGTERM before the store closed (the process died by the
    signal, the server kept running); SIGHUP killed the process outright."""
    server = serve()
    postmaster = server.postmaster()
    assert postmaster.alive
    assert server.request("POST", "/api/agents", json={"name": "a"}).status_code == 201
    server.send(sig)
    assert server.wait() == 0, server.output()
    assert f"Stopped ({sig.name})" in server.output()
    _assert_no_server(server, postmaster.pid)


def test_a_signal_during_start_up_stops_the_embedded_server(serve: Serve) -> None:
    """SIGTERM as soon as the embedded server accepts connections, while serve still tunes and
    migrates it: old code died by the signal's default action and left the server running."""
    server = serve(start=False).start(ready=False)
    deadline = time.monotonic() + 120
    while not (server.postmaster().alive and server.postmaster().status == "ready"):
        assert time.monotonic() < deadline, server.output()
        assert server.proc is not None and server.proc.poll() is None, server.output()
        time.sleep(0.02)
    pid = server.postmaster().pid
    server.send(signal.SIGTERM)
    assert server.wait() == 0, server.output()
    # A restart for changed settings may have replaced the first postmaster: none may be left.
    _assert_no_server(server, pid)


async def _setting(server: Serving, name: str) -> str:
    state = server.postmaster()
    password = (server.data_dir / "pgdata.password").read_text().strip()
    conn = await asyncpg.connect(
        host=str(state.socket_dir), user="postgres", password=password, database="postgres"
    )
    try:
        return str(await conn.fetchval(f"SHOW {name}"))
    finally:
        await conn.close()


async def test_a_server_left_by_a_killed_serve_is_adopted_with_new_settings(
    serve: Serve,
) -> None:
    """SIGKILL leaves the server running with the dead serve on its list of users. Old code:
    the next serve joined it, found "other users", and never restarted it for the new
    shared_buffers — nor stopped it on exit."""
    data_dir = base_dir()
    first = serve(data_dir)
    orphan = first.postmaster().pid
    assert first.proc is not None
    first.proc.kill()
    first.wait()
    assert first.postmaster().alive  # left behind
    assert await _setting(first, "shared_buffers") == "128MB"

    second = serve(data_dir, EMBEDDED_PG_SHARED_BUFFERS="144MB")
    assert await _setting(second, "shared_buffers") == "144MB"
    assert second.postmaster().pid != orphan
    assert "forgot 1 process(es) that died without letting go" in second.output()
    pid = second.postmaster().pid
    second.send(signal.SIGTERM)
    assert second.wait() == 0, second.output()
    _assert_no_server(second, pid)


HOLDER = textwrap.dedent(
    """
    import sys
    from tbd_agents.config import load_settings
    from tbd_agents.storage.postgres.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(load_settings())
    server.start()
    print("ready", flush=True)
    sys.stdin.readline()
    server.stop()
    print("let go", flush=True)
    """
)


def test_a_server_another_process_uses_keeps_running_until_it_lets_go(serve: Serve) -> None:
    """The rule for a joined server: serve lets go of it on SIGTERM, and it stops only when the
    last live process using it lets go. Old code: the dead serve stayed on the list of users, so
    the last real user never stopped the server."""
    data_dir = base_dir()
    server = serve(data_dir, start=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        env=server.env,
        cwd=str(ROOT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        server.start()
        pid = server.postmaster().pid
        server.send(signal.SIGTERM)
        assert server.wait() == 0, server.output()
        assert "left running for the processes still using it" in server.output()
        assert server.postmaster().alive and server.postmaster().pid == pid

        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "let go"
        assert holder.wait(60) == 0
        _assert_no_server(server, pid)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
