"""Losing the database connection answers 503 (never 500), and the next requests recover.

Faults injected for real on a private embedded PostgreSQL 18 (its own server, so crashing it
disturbs no other test): sessions ended by `pg_terminate_backend` while idle in the pool (57P01
seen by nobody: the pool must not hand them out again) and while a request waits on a lock
(57P01), a backend killed with SIGKILL (the server's crash restart: 57P02 for the others, a
socket closed mid-statement — 08003 — for the victim), a connection closed between two statements
of one unit of work (asyncpg InterfaceError "connection is closed", no SQLSTATE). The MongoDB
backend is checked with a real pymongo client against servers that refuse, drop or never answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.errors import DatabaseUnreachable
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.storage.postgres.errors import translate
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import make_settings
from tests.support import pg

#: Requests allowed to run into the fault (in flight when it hit): each must be a 503.
OUTAGE = {"database_unreachable"}


@pytest.fixture(scope="module")
def private_server() -> Iterator[str]:
    """An embedded PostgreSQL of this module only: the tests below crash it."""
    uri = pg.start_embedded(pg.private_dir("tbd-fault-db-") / "data")
    yield uri
    pg.stop_embedded(uri)


@dataclass
class Outage:
    app: FastAPI
    store: PostgresStore
    url: URL

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://a")

    async def admin(self) -> asyncpg.Connection:
        """A connection of the test itself (application_name `fault-injector`)."""
        return await asyncpg.connect(
            libpq_url(self.url), server_settings={"application_name": "fault-injector"}
        )


@pytest.fixture
async def outage(private_server: str, tmp_path: Path) -> AsyncIterator[Outage]:
    url = pg.create_migrated_database(private_server, prefix="outage")
    store = PostgresStore(create_engine(url, pool_size=4, max_overflow=4), url=url)
    settings = make_settings(tmp_path, allow_unauthenticated=True)
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield Outage(app, store, url)
    await store.close()
    await _until_up(url)  # a crash test leaves the server restarting
    pg.drop_database(url)


async def _until_up(url: URL, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect(libpq_url(url))
            await conn.close()
            return
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _our_backends(admin: asyncpg.Connection, database: str) -> list[int]:
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tbd-agents'",
        database,
    )
    return [r["pid"] for r in rows]


async def _blocked_backend(admin: asyncpg.Connection, database: str) -> int:
    """The pid of the app's backend waiting on a lock (the request in flight).

    `admin` holds the lock in an open transaction, and PostgreSQL reads pg_stat_activity once
    per transaction: without `pg_stat_clear_snapshot()` every poll after the first would see
    the first one's picture, and a request slower than that first poll would never show up."""
    for _ in range(300):
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND "
            "application_name LIKE 'tbd-agents%' AND wait_event_type = 'Lock'",
            database,
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("the request never reached the database")


def _is_outage(response: httpx.Response) -> bool:
    body = response.json()
    return response.status_code == 503 and body["error"]["code"] in OUTAGE


async def test_sessions_the_server_ended_are_not_handed_out_again(outage: Outage) -> None:
    """Old code: the first request after `pg_terminate_backend` of the idle pooled sessions
    got the dead connection and answered 500 ("connection is closed")."""
    async with outage.client() as client:
        warm = await asyncio.gather(
            *(client.post("/api/agents", json={"name": "w"}) for _ in range(4))
        )
        assert [r.status_code for r in warm] == [201] * 4
        admin = await outage.admin()
        try:
            pids = await _our_backends(admin, outage.url.database or "")
            assert pids, "the pool holds no connection"
            ended = await admin.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM unnest($1::int[]) pid",
                pids,
            )
            assert ended == len(pids)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)  # the sockets' end reaches the client
        after = [await client.post("/api/agents", json={"name": f"a{i}"}) for i in range(6)]
        after += await asyncio.gather(
            *(client.post("/api/agents", json={"name": "c"}) for _ in range(6))
        )
        assert [r.status_code for r in after] == [201] * 12, [r.text for r in after]


async def test_a_session_ended_during_a_request_answers_503_then_recovers(outage: Outage) -> None:
    """57P01 (admin_shutdown) in the middle of an INSERT: old code answered 500."""
    async with outage.client() as client:
        assert (await client.post("/api/agents", json={"name": "before"})).status_code == 201
        admin = await outage.admin()
        try:
            async with admin.transaction():
                await admin.execute("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
                pending = asyncio.create_task(client.post("/api/agents", json={"name": "x"}))
                victim = await _blocked_backend(admin, outage.url.database or "")
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim)
                answer = await asyncio.wait_for(pending, 30)
        finally:
            await admin.close()
        assert _is_outage(answer), answer.text
        assert "connection to PostgreSQL" in answer.json()["detail"]
        assert "was lost" in answer.json()["detail"]
        assert answer.headers["Retry-After"] == "2"
        again = await client.post("/api/agents", json={"name": "after"})
        assert again.status_code == 201, again.text


@pytest.mark.parametrize("victim", ["another backend", "the request's backend"])
async def test_a_crashed_backend_answers_503_then_the_server_recovers(
    outage: Outage, victim: str
) -> None:
    """SIGKILL of a backend: PostgreSQL ends every session (57P02 "crash of another server
    process"; the victim's socket just closes: 08003) and restarts itself. Old code: 500."""
    async with outage.client() as client:
        assert (await client.post("/api/agents", json={"name": "before"})).status_code == 201
        admin = await outage.admin()
        try:
            await admin.execute("BEGIN; LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
            pending = asyncio.create_task(client.post("/api/agents", json={"name": "x"}))
            blocked = await _blocked_backend(admin, outage.url.database or "")
            locker = await admin.fetchval("SELECT pg_backend_pid()")
            os.kill(locker if victim == "another backend" else blocked, signal.SIGKILL)
            answer = await asyncio.wait_for(pending, 30)
        finally:
            with contextlib.suppress(Exception):
                await admin.close(timeout=2)
        assert _is_outage(answer), answer.text
        # The server restarts by itself; requests in between are 503s, never 500s.
        deadline = time.monotonic() + 30
        codes = []
        while True:
            response = await client.post("/api/agents", json={"name": "after"})
            codes.append(response.status_code)
            if response.status_code == 201:
                break
            assert _is_outage(response), response.text
            assert time.monotonic() < deadline, codes
            await asyncio.sleep(0.1)


async def test_a_connection_closed_between_two_statements_is_an_outage(outage: Outage) -> None:
    """asyncpg raises InterfaceError("connection is closed"), no SQLSTATE, on a connection that
    closed inside a unit of work. Old code let it through as a raw DBAPIError (500)."""
    admin = await outage.admin()

    async def read_terminate_read() -> None:
        async with outage.store.unit_of_work() as repos:
            await repos.agents.count()
            raw = await repos.agents._conn.get_raw_connection()
            driver = raw.driver_connection
            await admin.fetchval("SELECT pg_terminate_backend($1)", driver.get_server_pid())
            for _ in range(100):
                if driver.is_closed():
                    break
                await asyncio.sleep(0.02)
            assert driver.is_closed()
            await repos.agents.count()

    try:
        with pytest.raises(DatabaseUnreachable, match="was lost"):
            await read_terminate_read()
    finally:
        await admin.close()


async def test_a_runtime_read_cut_off_by_the_server_answers_503(outage: Outage) -> None:
    """The run-time stores talk to the engine without a repository; a session ended under one
    of their queries reached the API's edge as a raw driver error (500)."""
    async with outage.client() as client:
        agent = (await client.post("/api/agents", json={"name": "a"})).json()
        flow = await client.post("/api/workflows", json={"agent_id": agent["id"]})
        assert flow.status_code == 201, flow.text
        # The app's own upkeep and scheduler also read the locked table and hold run-time
        # connections while they wait on the lock; under load the request then waited behind
        # them past the timeout. Stopped for this test: the request is the one cut off.
        runtime = outage.app.state.ctx.services["runtime"]
        runtime._stop.set()
        await asyncio.gather(*runtime._loops, return_exceptions=True)
        admin = await outage.admin()
        try:
            async with admin.transaction():
                await admin.execute("LOCK TABLE webhook_deliveries IN ACCESS EXCLUSIVE MODE")
                path = f"/api/workflows/{flow.json()['id']}/webhook-deliveries"
                pending = asyncio.create_task(client.get(path))
                # The app's background upkeep (webhook retries) may wait on the same lock: end
                # every app session that waits on it until the request has its answer.
                deadline = time.monotonic() + 30
                await _blocked_backend(admin, outage.url.database or "")
                while not pending.done():
                    await admin.fetch(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                        "datname = $1 AND application_name LIKE 'tbd-agents%' AND "
                        "wait_event_type = 'Lock'",
                        outage.url.database or "",
                    )
                    await asyncio.wait([pending], timeout=0.2)
                    assert time.monotonic() < deadline, "the request never got its answer"
                answer = pending.result()
        finally:
            await admin.close()
        assert _is_outage(answer), answer.text
        assert (await client.get(path)).status_code == 200


def test_driver_errors_without_sqlstate() -> None:
    """asyncpg's InternalClientError for a lost connection cannot be provoked on demand; its
    text is what asyncpg raises ("unexpected connection_lost() call"). A misuse of a live
    connection is not an outage and stays unknown (a 500 with an incident id)."""
    lost = translate(asyncpg.InternalClientError("unexpected connection_lost() call"))
    assert isinstance(lost, DatabaseUnreachable) and "was lost" in lost.message
    closed = translate(asyncpg.InterfaceError("cannot perform operation: connection is closed"))
    assert isinstance(closed, DatabaseUnreachable)
    busy = asyncpg.InterfaceError("cannot perform operation: another operation is in progress")
    assert translate(busy) is None


# --- MongoDB: a real pymongo client against servers that fail -------------------------------


class _Listener:
    """A TCP server on 127.0.0.1 that accepts connections and then `drop`s them at once or keeps
    them silent, in a thread; stopped with the test."""

    def __init__(self, drop: bool) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.drop = drop
        self.held: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.drop:
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()
        for conn in self.held:
            conn.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["refused", "dropped", "silent"])
def dead_mongo(request: pytest.FixtureRequest) -> Iterator[int]:
    if request.param == "refused":
        yield _closed_port()
        return
    listener = _Listener(drop=request.param == "dropped")
    yield listener.port
    listener.close()


async def test_mongo_outage_answers_503(dead_mongo: int, tmp_path: Path) -> None:
    """pymongo's ServerSelectionTimeoutError (nothing listens), AutoReconnect (connections
    dropped) and NetworkTimeout (no answer) all answer 503 with the server named."""
    from pymongo import AsyncMongoClient

    from tbd_agents.storage.mongo.repository import MongoStore

    target = f"127.0.0.1:{dead_mongo}"
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        f"mongodb://{target}/?directConnection=true",
        serverSelectionTimeoutMS=600,
        connectTimeoutMS=300,
        socketTimeoutMS=300,
        tz_aware=True,
    )
    store = MongoStore(client.get_database("faults"), client=client, target=target)
    settings = make_settings(
        tmp_path, db_backend="mongo", postgres_uri=None, allow_unauthenticated=True
    )
    app = create_app(settings, store)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as http,
        ):
            for method, path in (("POST", "/api/agents"), ("GET", "/api/agents")):
                json = {"name": "a"} if method == "POST" else None
                answer = await http.request(method, path, json=json)
                assert _is_outage(answer), answer.text
                assert f"Cannot reach MongoDB at {target}" in answer.json()["detail"]
            ready = await http.get("/health/ready")
            assert ready.status_code == 503
    finally:
        await store.close()
