"""Knowledge items (text, multipart upload, download, search, delete) and memories over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx

from tbd_agents.storage.protocol import eq
from tests.api.factory import create

MARKDOWN = b"# Deployment\n\nThe staging cluster runs on kiwi-7 nodes.\n\n## Rollback\n\nUse the blue slot.\n"


async def test_upload_download_search_delete(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    source = await create(alice, "knowledge-sources")
    uploaded = await alice.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"], "tags": ["ops"]},
        files={"file": ("deploy.md", MARKDOWN, "text/markdown")},
    )
    assert uploaded.status_code == 201, uploaded.text
    item = uploaded.json()
    assert item["file_name"] == "deploy.md" and item["status"] == "indexed"
    assert item["file_size"] == len(MARKDOWN) and "kiwi-7" in item["text_content"]

    content = await alice.get(f"/api/knowledge-items/{item['id']}/content")
    assert content.status_code == 200 and content.content == MARKDOWN
    assert 'filename="deploy.md"' in content.headers["content-disposition"]
    assert (await bob.get(f"/api/knowledge-items/{item['id']}/content")).status_code == 404
    denied = await bob.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"]},
        files={"file": ("x.txt", b"x", "text/plain")},
    )
    assert denied.status_code == 422 and denied.json()["error"]["details"]["field"] == "source_id"

    text = await alice.post(
        "/api/knowledge-items",
        json={
            "source_id": source["id"],
            "name": "notes",
            "text_content": "Rotate the pager every Monday.",
        },
    )
    assert text.status_code == 201 and text.json()["status"] == "indexed"
    plain = await alice.get(f"/api/knowledge-items/{text.json()['id']}/content")
    assert plain.text == "Rotate the pager every Monday."

    hits = (
        await alice.post("/api/knowledge/search", json={"query": "kiwi-7 staging cluster"})
    ).json()
    assert hits and hits[0]["citation"]["item_id"] == item["id"]
    assert hits[0]["citation"]["source_id"] == source["id"]
    assert (await bob.post("/api/knowledge/search", json={"query": "kiwi-7"})).json() == []
    assert (
        await bob.post(
            "/api/knowledge/search", json={"query": "kiwi", "source_ids": [source["id"]]}
        )
    ).status_code == 404

    assert (await bob.delete(f"/api/knowledge-items/{item['id']}")).status_code == 404
    assert (await alice.delete(f"/api/knowledge-items/{item['id']}")).status_code == 204
    assert (await alice.get(f"/api/knowledge-items/{item['id']}")).status_code == 404
    after = (
        await alice.post("/api/knowledge/search", json={"query": "kiwi-7 staging cluster"})
    ).json()
    assert item["id"] not in [h["citation"]["item_id"] for h in after]

    assert (await alice.delete(f"/api/knowledge-sources/{source['id']}")).status_code == 204
    assert (await alice.get(f"/api/knowledge-items/{text.json()['id']}")).status_code == 404
    assert (await alice.post("/api/knowledge/search", json={"query": "pager Monday"})).json() == []


async def test_upload_refuses_empty_and_unknown_source(alice: httpx.AsyncClient) -> None:
    missing = await alice.post(
        "/api/knowledge-items/upload",
        data={"source_id": "nope"},
        files={"file": ("a.txt", b"hello", "text/plain")},
    )
    assert missing.status_code == 422
    source = await create(alice, "knowledge-sources")
    empty = await alice.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"]},
        files={"file": ("a.txt", b"   ", "text/plain")},
    )
    assert empty.status_code == 422
    no_file = await alice.post("/api/knowledge-items/upload", data={"source_id": source["id"]})
    assert no_file.status_code == 422


async def test_memories_remember_search_update_forget(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    agent = await create(alice, "agents")
    first = await alice.post(
        "/api/memories", json={"agent_id": agent["id"], "key": "favourite_colour", "value": "teal"}
    )
    assert first.status_code == 201, first.text
    memory = first.json()
    assert "embedding" not in memory
    again = await alice.post(
        "/api/memories", json={"agent_id": agent["id"], "key": "favourite_colour", "value": "amber"}
    )
    assert again.json()["id"] == memory["id"] and again.json()["value"] == "amber"
    await alice.post(
        "/api/memories", json={"agent_id": agent["id"], "key": "home_city", "value": "Lisbon"}
    )

    listed = (await alice.get("/api/memories", params={"agent_id": agent["id"]})).json()
    assert {m["key"] for m in listed} == {"favourite_colour", "home_city"}
    for mode in ("semantic", "keyword"):
        hits = (
            await alice.get(
                "/api/memories/search",
                params={"agent_id": agent["id"], "q": "Lisbon", "mode": mode},
            )
        ).json()
        assert hits and hits[0]["memory"]["key"] == "home_city", mode

    changed = await alice.patch(f"/api/memories/{memory['id']}", json={"value": "violet"})
    assert changed.status_code == 200 and changed.json()["value"] == "violet"
    assert (
        await bob.patch(f"/api/memories/{memory['id']}", json={"value": "x"})
    ).status_code == 404
    assert (
        await bob.get("/api/memories/search", params={"agent_id": agent["id"], "q": "x"})
    ).status_code == 422
    assert (
        await bob.post("/api/memories", json={"agent_id": agent["id"], "key": "k"})
    ).status_code == 422
    assert (await bob.delete(f"/api/memories/{memory['id']}")).status_code == 404
    assert (await alice.delete(f"/api/memories/{memory['id']}")).status_code == 204
    assert (await alice.get(f"/api/memories/{memory['id']}")).status_code == 404
    hits = (
        await alice.get(
            "/api/memories/search",
            params={"agent_id": agent["id"], "q": "violet colour", "mode": "keyword"},
        )
    ).json()
    assert memory["id"] not in [h["memory"]["id"] for h in hits]


async def test_the_api_server_sweeps_expired_memories_with_their_vectors(
    pg18_server: str, tmp_path: Path
) -> None:
    """MEMORY_EXPIRY_SWEEP_SECONDS: expired memories are deleted (row and vector) by the server
    itself, not only hidden from search; a memory that has not expired stays."""
    import asyncio
    from datetime import timedelta

    from sqlalchemy import text

    from tbd_agents.api import create_app
    from tbd_agents.domain.models import Memory
    from tbd_agents.storage.postgres.engine import create_engine
    from tbd_agents.storage.postgres.repository import PostgresStore
    from tests.api.conftest import Api, make_settings
    from tests.support import pg

    url = pg.create_migrated_database(pg18_server, prefix="sweep")
    store = PostgresStore(create_engine(url, pool_size=2, max_overflow=2), url=url)
    settings = make_settings(tmp_path, memory_expiry_sweep_seconds=0.2)
    app = create_app(settings, store)
    try:
        async with app.router.lifespan_context(app):
            api = Api(app, store, settings)
            async with await api.user() as client:
                agent = (await client.post("/api/agents", json={"name": "forgetful"})).json()
                for key in ("short", "long"):
                    created = await client.post(
                        "/api/memories",
                        json={"agent_id": agent["id"], "key": key, "value": f"{key} lived"},
                    )
                    assert created.status_code == 201, created.text
            async with store.unit_of_work() as repos:
                short = await repos.for_model(Memory).find_one(eq("key", "short"))
                assert short is not None
                await repos.for_model(Memory).update(
                    short.id, {"ttl": short.created_at - timedelta(seconds=1)}
                )

            async def vectors() -> set[str]:
                async with store.engine.connect() as conn:
                    rows = await conn.execute(text("SELECT id FROM memory_vectors"))
                    return {r[0] for r in rows}

            deadline = asyncio.get_running_loop().time() + 20
            while short.id in await vectors():
                assert asyncio.get_running_loop().time() < deadline, "expired memory not swept"
                await asyncio.sleep(0.1)
            async with store.unit_of_work(readonly=True) as repos:
                left = [m.key for m in (await repos.for_model(Memory).list()).items]
            assert left == ["long"]
            assert len(await vectors()) == 1
    finally:
        await store.close()
        pg.drop_database(url)


async def test_existing_source_types_items_go_to_hub_sources_only(
    alice: httpx.AsyncClient,
) -> None:
    """`mongo_db` sources hold items stored here; `vector_db` (external Qdrant) and `pgvector`
    ones are read-only collections: adding an item to one is refused, naming the fix."""
    local = await create(alice, "knowledge-sources", source_type="mongo_db")
    assert local["status"] == "registered"
    added = await alice.post(
        "/api/knowledge-items",
        json={"source_id": local["id"], "name": "n", "text_content": "Badges open door 4."},
    )
    assert added.status_code == 201, added.text
    remote = await create(
        alice,
        "knowledge-sources",
        source_type="vector_db",
        connection_config={"url": "https://qdrant.example.com", "collection": "docs"},
    )
    refused = await alice.post(
        "/api/knowledge-items",
        json={"source_id": remote["id"], "name": "n", "text_content": "x"},
    )
    assert refused.status_code == 422, refused.text
    assert "mongo_db or manual" in refused.json()["error"]["message"]
