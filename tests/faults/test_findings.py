"""Findings 10, 11, 13c and 13d of the fault hunt (issue #16), on the embedded PostgreSQL: an admin's
knowledge search without sources, connection tokens shared by imported copies, the embedder
fallback warning repeated at start-up, and a new schedule's next run."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import Query, eq
from tests.api.conftest import Api, make_settings
from tests.api.factory import create, uniq

PASSWORD = "s3cret-pw-7f1"


async def test_an_admin_search_without_sources_searches_every_source(
    api: Api, admin: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    """Before the fix an admin's search without `source_ids` or `tags` answered `[]`."""
    for client, word in ((admin, "quokka-44"), (alice, "wombat-19")):
        source = (await client.post("/api/knowledge-sources", json={"name": uniq("ks")})).json()
        item = await client.post(
            "/api/knowledge-items",
            json={"source_id": source["id"], "text_content": f"The {word} runbook lives here."},
        )
        assert item.status_code == 201, item.text
    mine = (await admin.post("/api/knowledge/search", json={"query": "quokka-44 runbook"})).json()
    assert mine and "quokka-44" in mine[0]["text"]
    # An admin can list every source, so the default scope covers alice's too.
    theirs = (await admin.post("/api/knowledge/search", json={"query": "wombat-19"})).json()
    assert theirs and "wombat-19" in theirs[0]["text"]
    # A user's default scope stays their own sources.
    hits = (await alice.post("/api/knowledge/search", json={"query": "quokka-44"})).json()
    assert hits and not [h for h in hits if "quokka-44" in h["text"]]


async def _token_names(api: Api, prefix: str) -> list[str]:
    async with api.store.unit_of_work(readonly=True) as repos:
        names = [t.name async for t in repos.tokens.iterate(Query(filters=()))]
    return sorted(n for n in names if n.startswith(prefix))


async def test_a_renamed_import_gets_its_own_connection_token(
    api: Api, alice: httpx.AsyncClient
) -> None:
    """Before the fix the copy referenced the original's generated token, which the original's
    deletion removed: the copy's password was gone."""
    dsn = f"postgresql://app:{PASSWORD}@db.example:5432/app"
    mcp = (
        await alice.post(
            "/api/mcps",
            json={
                "name": uniq("mcp"),
                "transport_type": "streamable_http",
                "connection_config": {
                    "url": "https://mcp.example/x",
                    "env": {"DATABASE_URL": dsn},
                },
            },
        )
    ).json()
    assert mcp["connection_config"]["env"]["DATABASE_URL"].startswith(
        "{{token:conn.mcp_servers." + mcp["id"]
    )
    bundle = (await alice.get("/api/export")).json()
    report = await alice.post("/api/import", params={"mode": "rename"}, json=bundle)
    assert report.status_code == 200, report.text
    copies = [m for m in (await alice.get("/api/mcps")).json() if m["id"] != mcp["id"]]
    (copy,) = [m for m in copies if m["name"].startswith(mcp["name"])]
    reference = copy["connection_config"]["env"]["DATABASE_URL"]
    assert reference == "{{token:conn.mcp_servers." + copy["id"] + ".env.DATABASE_URL}}"

    assert (await alice.delete(f"/api/mcps/{mcp['id']}")).status_code == 204
    assert await _token_names(api, f"conn.mcp_servers.{mcp['id']}") == []
    assert await _token_names(api, f"conn.mcp_servers.{copy['id']}") == [reference[8:-2]]
    async with api.store.unit_of_work(readonly=True) as repos:
        token = await repos.tokens.find_one(eq("name", reference[8:-2]))
        assert token is not None
        assert api.app.state.ctx.cipher().decrypt(token.encrypted_value) == dsn


async def test_a_config_sent_back_as_a_new_record_copies_the_token(
    api: Api, alice: httpx.AsyncClient
) -> None:
    """GET one knowledge source, POST its body as a new one: the new record owns a copy."""
    dsn = f"postgresql://app:{PASSWORD}@db.example:5432/vectors"
    first = (
        await alice.post(
            "/api/knowledge-sources",
            json={"name": uniq("ks"), "source_type": "pgvector", "connection_config": {"dsn": dsn}},
        )
    ).json()
    second = (
        await alice.post(
            "/api/knowledge-sources",
            json={
                "name": uniq("ks"),
                "source_type": "pgvector",
                "connection_config": first["connection_config"],
            },
        )
    ).json()
    assert second["connection_config"]["dsn"].startswith(
        "{{token:conn.knowledge_sources." + second["id"]
    )
    assert (await alice.delete(f"/api/knowledge-sources/{first['id']}")).status_code == 204
    assert await _token_names(api, f"conn.knowledge_sources.{second['id']}")


async def test_the_embedder_fallback_is_logged_once_per_start(
    api_db: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default fastembed model, absent and not downloadable: the start-up says so once
    (it said it twice in one process, three times with `serve`'s prefetch)."""
    settings = make_settings(
        tmp_path, embedding_provider="fastembed", embedding_allow_download=False
    )
    store = PostgresStore(create_engine(api_db, pool_size=2, max_overflow=2), url=api_db)
    app = create_app(settings, store)
    with caplog.at_level(logging.INFO):
        async with app.router.lifespan_context(app):
            pass
    await store.close()
    said = [r for r in caplog.records if "Falling back" in r.getMessage()]
    assert len(said) == 1, [r.name for r in said]
    assert said[0].levelno == logging.WARNING


async def test_a_schedule_shows_its_next_run_as_soon_as_it_is_saved(
    alice: httpx.AsyncClient,
) -> None:
    """Finding 13d: `next_run_at` was null until a scheduler tick filled it in (never, with no
    scheduler running), however far away `start_at` was."""
    workflow = await create(alice, "workflows")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    created = await alice.post(
        "/api/scheduled-agents",
        json={
            "name": uniq("s"),
            "workflow_id": workflow["id"],
            "prompt": "report",
            "interval_value": 6,
            "interval_unit": "hours",
            "start_at": tomorrow.isoformat(),
        },
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert datetime.fromisoformat(schedule["next_run_at"]) == tomorrow
    path = f"/api/scheduled-agents/{schedule['id']}"
    assert (await alice.get(path)).json()["next_run_at"] == schedule["next_run_at"]

    renamed = await alice.put(path, json={"name": uniq("s2")})
    assert renamed.json()["next_run_at"] == schedule["next_run_at"]  # not a timing change
    later = tomorrow + timedelta(days=2)
    moved = await alice.patch(path, json={"start_at": later.isoformat()})
    assert datetime.fromisoformat(moved.json()["next_run_at"]) == later
    off = await alice.patch(f"{path}/disable")
    assert off.json()["next_run_at"] is None
    on = await alice.patch(f"{path}/enable")
    assert datetime.fromisoformat(on.json()["next_run_at"]) == later

    cron = await alice.post(
        "/api/scheduled-agents",
        json={
            "name": uniq("c"),
            "workflow_id": workflow["id"],
            "prompt": "report",
            "cron_expression": "30 7 * * *",
            "timezone": "Europe/Paris",
            "start_at": tomorrow.isoformat(),
        },
    )
    assert cron.status_code == 201, cron.text
    first = datetime.fromisoformat(cron.json()["next_run_at"])
    assert first >= tomorrow and first.astimezone(ZoneInfo("Europe/Paris")).hour == 7
