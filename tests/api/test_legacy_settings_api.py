"""Settings of the existing TBD Agents seen through the API: DEFAULT_MAX_TURNS gives a workflow
created without max_turns its value, and a request bearing GITHUB_TOKEN is the admin `server`
(while a request without credentials is still refused)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.services.validation import set_default_max_turns
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import Api, make_settings
from tests.api.factory import create

TOKEN = "ghp_" + "T" * 36


@pytest.fixture(scope="module")
async def legacy_api(api_db: URL, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    store = PostgresStore(create_engine(api_db, pool_size=2, max_overflow=2), url=api_db)
    settings = make_settings(
        tmp_path_factory.mktemp("legacy"), default_max_turns=9, github_token=TOKEN
    )
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, settings)
    await store.close()
    set_default_max_turns(5)  # as an app with the default settings would


async def test_default_max_turns_applies_to_workflows_created_without_one(
    legacy_api: Api,
) -> None:
    async with await legacy_api.user() as alice:
        agent = await create(alice, "agents")
        plain = await create(alice, "workflows", agent_id=agent["id"])
        assert plain["max_turns"] == 9
        explicit = await create(alice, "workflows", agent_id=agent["id"], max_turns=3)
        assert explicit["max_turns"] == 3
        changed = await alice.patch(
            f"/api/workflows/{explicit['id']}", json={"description": "other"}
        )
        assert changed.status_code == 200 and changed.json()["max_turns"] == 3
        got = await alice.get(f"/api/workflows/{plain['id']}")
        assert got.json()["max_turns"] == 9


async def test_the_default_is_five_without_the_setting(tmp_path: Path, api_db: URL) -> None:
    store = PostgresStore(create_engine(api_db, pool_size=2, max_overflow=2), url=api_db)
    app = create_app(make_settings(tmp_path), store)
    try:
        async with app.router.lifespan_context(app):
            api = Api(app, store, make_settings(tmp_path))
            async with await api.user() as alice:
                agent = await create(alice, "agents")
                workflow = await create(alice, "workflows", agent_id=agent["id"])
        assert workflow["max_turns"] == 5
    finally:
        await store.close()


async def test_github_token_is_the_admin_server_and_nothing_else_is(legacy_api: Api) -> None:
    transport = httpx.ASGITransport(app=legacy_api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as anonymous:
        assert (await anonymous.get("/api/agents")).status_code == 401
        for wrong in (TOKEN[:-1], TOKEN + "x", TOKEN.lower()):
            refused = await anonymous.get(
                "/api/agents", headers={"Authorization": f"Bearer {wrong}"}
            )
            assert refused.status_code == 401, wrong
    async with legacy_api.client(TOKEN) as server:
        me = await server.get("/api/me")
        assert me.status_code == 200, me.text
        assert me.json() == {"identity": "server", "scope": "admin", "via": "server_token"}
        agent = await create(server, "agents")
        assert agent["created_by"] == "server"
        # Only admins may list another owner's records.
        assert (await server.get("/api/agents", params={"owner": "bob"})).status_code == 200
    async with await legacy_api.user() as alice:
        assert (await alice.get("/api/agents", params={"owner": "bob"})).status_code == 403
