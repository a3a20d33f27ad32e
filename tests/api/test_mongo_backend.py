"""The same API on the MongoDB backend (in-process emulation + Qdrant local mode): API keys in
the `api_keys` collection, CRUD, ownership, references and delete rules behave the same."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tbd_agents.api import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tests.api.conftest import make_settings
from tests.api.factory import RESOURCES, create
from tests.support.mongo import make_mongo_store


@pytest.fixture(scope="module")
async def mongo_app(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[object, object]]:
    store = await make_mongo_store()
    settings = make_settings(
        tmp_path_factory.mktemp("mongo"), db_backend="mongo", postgres_uri=None
    )
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield app, store
    await store.close()


async def _client(
    mongo_app: tuple[object, object], owner: str, scope: KeyScope = KeyScope.USER
) -> httpx.AsyncClient:
    app, store = mongo_app
    async with store.unit_of_work() as repos:  # type: ignore[attr-defined]
        key = (await ApiKeys(repos).create(owner, scope=scope)).plaintext
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://m",  # type: ignore[arg-type]
        headers={"Authorization": f"Bearer {key}"},
    )


@pytest.mark.parametrize("name", sorted(RESOURCES))
async def test_crud_and_ownership_on_mongo(mongo_app: tuple[object, object], name: str) -> None:
    async with (
        await _client(mongo_app, f"ann-{name}") as ann,
        await _client(mongo_app, f"ben-{name}") as ben,
    ):
        path = RESOURCES[name].path
        record = await create(ann, name)
        assert (await ann.get(f"{path}/{record['id']}")).json() == record
        assert (await ben.get(f"{path}/{record['id']}")).status_code == 404
        changed = await ann.patch(f"{path}/{record['id']}", json=RESOURCES[name].patch)
        assert changed.status_code == 200, changed.text
        listed = (await ann.get(path)).json()
        assert record["id"] in [r["id"] for r in listed]
        assert record["id"] not in [r["id"] for r in (await ben.get(path)).json()]
        assert (await ann.delete(f"{path}/{record['id']}")).status_code == 204
        assert (await ann.get(f"{path}/{record['id']}")).status_code == 404
        assert (await ann.get(f"{path}/not-an-object-id")).status_code == 404


async def test_auth_references_and_delete_rules_on_mongo(mongo_app: tuple[object, object]) -> None:
    app, _ = mongo_app
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://m"
    ) as anonymous:  # type: ignore[arg-type]
        assert (await anonymous.get("/api/agents")).status_code == 401
    async with await _client(mongo_app, "carol") as carol:
        assert (
            await carol.post("/api/agents", json={"name": "a", "skill_ids": ["nope"]})
        ).status_code == 422
        agent = await create(carol, "agents")
        workflow = await create(carol, "workflows", agent_id=agent["id"])
        refused = await carol.delete(f"/api/agents/{agent['id']}")
        assert refused.status_code == 409
        assert refused.json()["error"]["details"]["dependants"] == {"workflows": [workflow["id"]]}
        session = await create(carol, "chat-sessions", agent_id=agent["id"])
        messages = f"/api/chat/sessions/{session['id']}/messages"
        assert (
            await carol.post(messages, json={"role": "user", "content": "hi"})
        ).status_code == 201
        assert (await carol.delete(f"/api/chat/sessions/{session['id']}")).status_code == 204
        keys = (await carol.get("/api/keys")).json()
        assert len(keys) == 1 and keys[0]["owner"] == "carol"
        assert (await carol.delete(f"/api/keys/{keys[0]['id']}")).status_code == 204
        assert (await carol.get("/api/me")).status_code == 401
