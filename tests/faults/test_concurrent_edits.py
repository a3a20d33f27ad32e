"""Concurrent edits over real HTTP (#16 point 7): the API on a real socket (uvicorn in a thread),
20 clients editing one record at once, on PostgreSQL and on the MongoDB backend (in-process
emulation).

Before: no version, no ETag, no If-Match; a read-modify-write of tags by 20 clients kept 1 of the
20 tags, silently. Now every record has a version (its `ETag`), a PUT/PATCH/DELETE with a stale
`If-Match` is refused with 412 and changes nothing, and a client that retries on 412 keeps every
change. Without If-Match the last writer still wins, as before (and as the second test shows, the
lost update is then the client's choice, not the hub's accident).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tbd_agents.api import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import DocumentStore
from tests.api.conftest import make_settings
from tests.api.factory import create
from tests.api.live import free_port
from tests.support import pg
from tests.support.mongo import make_mongo_store

WRITERS = 20
#: Rounds a client retries after 412 before the test gives up (each 412 means another client
#: succeeded, so 20 writers need at most 20).
MAX_ROUNDS = WRITERS + 5


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """`app` on a real socket (uvicorn in a thread with its own event loop); yield its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Served:
    backend: str
    url: str
    #: The same data as the server's store, for making API keys from the test's event loop.
    store: DocumentStore

    async def client(self) -> httpx.AsyncClient:
        async with self.store.unit_of_work() as repos:
            key = await ApiKeys(repos).create(
                f"editor-{uuid.uuid4().hex[:8]}", scope=KeyScope.USER, name="edits"
            )
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key.plaintext}"},
            limits=httpx.Limits(max_connections=WRITERS + 5),
            timeout=60,
        )


@pytest.fixture(scope="module", params=["pg", "mongo"])
async def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    tmp: Path = tmp_path_factory.mktemp(f"edits-{request.param}")
    if request.param == "pg":
        url = pg.create_migrated_database(request.getfixturevalue("pg18_server"), "edits")
        settings = make_settings(
            tmp, postgres_uri=url.render_as_string(hide_password=False), postgres_pool_size=8
        )
        keys_store = PostgresStore(create_engine(url, pool_size=1, max_overflow=0), url=url)
        try:
            with serve(create_app(settings)) as base:  # the app opens its own store
                yield Served("pg", base, keys_store)
        finally:
            await keys_store.close()
            pg.drop_database(url)
        return
    store = await make_mongo_store()
    settings = make_settings(tmp, db_backend="mongo", postgres_uri=None)
    try:
        with serve(create_app(settings, store)) as base:
            yield Served("mongo", base, store)
    finally:
        await store.close()


async def _new_agent(client: httpx.AsyncClient) -> dict[str, Any]:
    created = await client.post("/api/agents", json={"name": f"edited-{uuid.uuid4().hex[:6]}"})
    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == '"1"' and created.json()["version"] == 1
    return dict(created.json())


def _check_412(answer: httpx.Response) -> int:
    """The 412's shape: our error body naming the current version, and its ETag."""
    assert answer.status_code == 412, answer.text
    body = answer.json()
    assert body["error"]["code"] == "precondition_failed"
    current = body["error"]["details"]["current_version"]
    assert isinstance(current, int)
    assert f"version {current}" in body["detail"] == body["error"]["message"]
    assert answer.headers["ETag"] == f'"{current}"'
    return int(current)


async def test_20_read_modify_writes_with_if_match_keep_every_tag(served: Served) -> None:
    async with await served.client() as client:
        agent = await _new_agent(client)
        path = f"/api/agents/{agent['id']}"
        all_read = asyncio.Barrier(WRITERS)  # every client has read before anyone writes
        conflicts = 0
        etags: list[str] = []

        async def add_tag(tag: str) -> None:
            nonlocal conflicts
            first = True
            for _ in range(MAX_ROUNDS):
                read = await client.get(path)
                assert read.status_code == 200
                if first:
                    await all_read.wait()
                    first = False
                tags = [*read.json()["tags"], tag]
                written = await client.put(
                    path, json={"tags": tags}, headers={"If-Match": read.headers["ETag"]}
                )
                if written.status_code == 200:
                    etags.append(written.headers["ETag"])
                    return
                _check_412(written)
                conflicts += 1
            raise AssertionError(f"{tag} never got through")

        await asyncio.gather(*(add_tag(f"t{i:02}") for i in range(WRITERS)))
        final = (await client.get(path)).json()
    assert sorted(final["tags"]) == [f"t{i:02}" for i in range(WRITERS)]
    assert final["version"] == WRITERS + 1
    assert sorted(etags, key=lambda e: int(e.strip('"'))) == [
        f'"{v}"' for v in range(2, WRITERS + 2)
    ]  # every successful write made a new ETag
    assert conflicts >= WRITERS - 1  # all read version 1 at once: 19 of them were refused


async def test_without_if_match_the_last_writer_wins_as_before(served: Served) -> None:
    async with await served.client() as client:
        agent = await _new_agent(client)
        path = f"/api/agents/{agent['id']}"
        all_read = asyncio.Barrier(WRITERS)

        async def add_tag(tag: str) -> httpx.Response:
            read = await client.get(path)
            await all_read.wait()
            return await client.put(path, json={"tags": [*read.json()["tags"], tag]})

        answers = await asyncio.gather(*(add_tag(f"t{i:02}") for i in range(WRITERS)))
        final = (await client.get(path)).json()
    assert [a.status_code for a in answers] == [200] * WRITERS  # nobody is refused
    assert final["version"] == WRITERS + 1  # each write was applied, whole
    assert len(final["tags"]) == 1  # each wrote its own read of []: the last one stays


async def test_a_stale_if_match_is_412_for_put_patch_and_delete(served: Served) -> None:
    async with await served.client() as client:
        agent = await _new_agent(client)
        path = f"/api/agents/{agent['id']}"
        got = await client.get(path)
        assert got.headers["ETag"] == '"1"'
        changed = await client.patch(
            path, json={"description": "first"}, headers={"If-Match": '"1"'}
        )
        assert changed.status_code == 200 and changed.headers["ETag"] == '"2"'
        for method, body in (("PUT", {"description": "x"}), ("PATCH", {"model": "y"})):
            refused = await client.request(method, path, json=body, headers={"If-Match": '"1"'})
            assert _check_412(refused) == 2, method
        assert _check_412(await client.delete(path, headers={"If-Match": '"1"'})) == 2
        after = await client.get(path)
        assert after.headers["ETag"] == '"2"'
        assert (after.json()["description"], after.json()["model"]) == ("first", None)

        # one of several tags, a weak tag (as a compressing proxy sends it back), and `*`
        assert (
            await client.patch(path, json={"model": "a"}, headers={"If-Match": '"7", "2"'})
        ).headers["ETag"] == '"3"'
        assert (
            await client.patch(path, json={"model": "b"}, headers={"If-Match": 'W/"3"'})
        ).headers["ETag"] == '"4"'
        assert (await client.patch(path, json={"model": "c"}, headers={"If-Match": "*"})).headers[
            "ETag"
        ] == '"5"'
        assert _check_412(await client.patch(path, json={}, headers={"If-Match": '"4"'})) == 5
        bad = await client.patch(path, json={"model": "d"}, headers={"If-Match": "5"})
        assert bad.status_code == 400 and "double quotes" in bad.json()["detail"]
        assert (await client.delete(path, headers={"If-Match": '"5"'})).status_code == 204
        assert (await client.get(path)).status_code == 404


async def test_updated_at_follows_the_versions_under_concurrency(served: Served) -> None:
    async with await served.client() as client:
        agent = await _new_agent(client)
        path = f"/api/agents/{agent['id']}"
        start = asyncio.Barrier(WRITERS)

        async def write(i: int) -> httpx.Response:
            await start.wait()
            return await client.patch(path, json={"description": f"writer {i}"})

        answers = await asyncio.gather(*(write(i) for i in range(WRITERS)))
        final = (await client.get(path)).json()
    records = sorted((a.json() for a in answers), key=lambda r: r["version"])
    assert [r["version"] for r in records] == list(range(2, WRITERS + 2))
    assert [a.headers["ETag"] for a in answers] == [f'"{a.json()["version"]}"' for a in answers]
    times = [datetime.fromisoformat(r["updated_at"]) for r in records]
    assert times == sorted(times), "a later version must not carry an earlier updated_at"
    if served.backend == "pg":  # microseconds of clock_timestamp(); BSON dates hold ms
        assert len(set(times)) == WRITERS
    assert final == records[-1]  # the stored record is the last version acknowledged


async def test_skills_installed_at_once_on_one_workflow_all_stay(served: Served) -> None:
    """The hub's own read-modify-writes (a workflow's skill list) are conditional on the version
    they read and retried: concurrent installs no longer overwrite each other."""
    async with await served.client() as client:
        agent = await _new_agent(client)
        workflow = await create(client, "workflows", agent_id=agent["id"])
        skills = [await create(client, "skills") for _ in range(WRITERS // 2)]
        path = f"/api/workflows/{workflow['id']}/skills"
        answers = await asyncio.gather(*(client.post(f"{path}/{s['id']}") for s in skills))
        assert [a.status_code for a in answers] == [200] * len(skills), answers[0].text
        final = await client.get(f"/api/workflows/{workflow['id']}")
        stale = await client.delete(f"{path}/{skills[0]['id']}", headers={"If-Match": '"1"'})
    assert sorted(final.json()["skill_ids"]) == sorted(s["id"] for s in skills)
    assert final.json()["version"] == 1 + len(skills)
    assert _check_412(stale) == 1 + len(skills)
