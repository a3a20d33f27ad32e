"""The chat session routes we added, on both storage backends (PostgreSQL and the MongoDB
emulation): search (`q`), pinned first, rename/pin keeping the recency order, and branches
(`active`, `parent_id`, `versions`, switching with `PUT …/branch`) over messages stored with
`metadata.parent_id` as chat turns store them. The streamed turns themselves (regenerate,
`edit_of`, Stop) are tested over real HTTP in tests/engine/test_chat_branches.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.api.conftest import Api
from tests.api.test_mongo_backend import _client, mongo_app  # noqa: F401 (a fixture)


@pytest.fixture(params=["postgres", "mongo"])
async def user(
    request: pytest.FixtureRequest,
    api: Api,
    mongo_app: tuple[object, object],  # noqa: F811 (the imported fixture)
) -> AsyncIterator[httpx.AsyncClient]:
    owner = f"chat-{uuid.uuid4().hex[:8]}"
    client = (
        await api.user(owner) if request.param == "postgres" else await _client(mongo_app, owner)
    )
    async with client:
        yield client


async def test_search_pin_and_recency(user: httpx.AsyncClient) -> None:
    agent = (await user.post("/api/agents", json={"name": "a-" + uuid.uuid4().hex[:6]})).json()
    base = f"/api/agents/{agent['id']}/chat/sessions"
    made = []
    for title in ["Lemon tart", "Travel", "Budget", "Misc"]:
        r = await user.post("/api/chat/sessions", json={"agent_id": agent["id"], "title": title})
        made.append(r.json())
    await user.post(
        f"/api/chat/sessions/{made[1]['id']}/messages",
        json={"role": "user", "content": "Book a Zeppelin ride"},
    )
    assert [s["title"] for s in (await user.get(base, params={"q": "zeppelin"})).json()] == [
        "Travel"
    ]
    assert [s["title"] for s in (await user.get(base, params={"q": "TART"})).json()] == [
        "Lemon tart"
    ]
    assert (await user.get(base, params={"q": "nothing like it"})).json() == []
    order = [s["id"] for s in (await user.get(base)).json()]
    r = await user.patch(f"{base}/{made[0]['id']}", json={"pinned": True})
    assert r.status_code == 200 and r.json()["pinned"] is True
    assert [s["id"] for s in (await user.get(base)).json()] == order  # recency unchanged
    first = (await user.get(base, params={"pinned_first": "true", "limit": 2})).json()
    assert first[0]["id"] == made[0]["id"] and first[1]["id"] == order[0]
    page2 = (await user.get(base, params={"pinned_first": "true", "skip": 2, "limit": 2})).json()
    assert len(page2) == 2 and made[0]["id"] not in [s["id"] for s in page2]
    r = await user.patch(f"{base}/{made[0]['id']}", json={"title": "Lemon pie", "pinned": False})
    assert r.json()["title"] == "Lemon pie" and r.json()["pinned"] is False
    assert (await user.patch(f"{base}/no-such-session", json={"pinned": True})).status_code == 404


async def test_branches_active_path_versions_and_switch(user: httpx.AsyncClient) -> None:
    agent = (await user.post("/api/agents", json={"name": "b-" + uuid.uuid4().hex[:6]})).json()
    sid = (await user.post("/api/chat/sessions", json={"agent_id": agent["id"]})).json()["id"]
    messages = f"/api/chat/sessions/{sid}/messages"

    async def add(role: str, content: str, parent: str | None, **meta: object) -> str:
        body = {"role": role, "content": content, "metadata": {"parent_id": parent, **meta}}
        r = await user.post(messages, json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    q1 = await add("user", "q1", None)
    a1 = await add("assistant", "a1", q1)
    a1b = await add("assistant", "a1 again", q1)  # a regenerated answer
    q1b = await add("user", "q1 edited", None)  # an edit of the first message
    a2 = await add("assistant", "a2", q1b)
    detail = f"/api/agents/{agent['id']}/chat/sessions/{sid}"
    shown = (await user.get(detail, params={"active": "true"})).json()["messages"]
    assert [m["content"] for m in shown] == ["q1 edited", "a2"]  # the newest leaf
    assert shown[0]["versions"] == {"index": 2, "count": 2, "ids": [q1, q1b]}
    assert shown[0]["parent_id"] is None and shown[1]["parent_id"] == q1b
    everything = (await user.get(detail)).json()["messages"]
    assert [m["id"] for m in everything] == [q1, a1, a1b, q1b, a2]

    r = await user.put(f"{detail}/branch", json={"message_id": q1})
    assert [m["content"] for m in r.json()["messages"]] == ["q1", "a1 again"]
    r = await user.put(f"{detail}/branch", json={"message_id": a1})
    assert [m["content"] for m in r.json()["messages"]] == ["q1", "a1"]
    assert r.json()["messages"][1]["versions"] == {"index": 1, "count": 2, "ids": [a1, a1b]}
    again = (await user.get(detail, params={"active": "true"})).json()["messages"]
    assert [m["id"] for m in again] == [q1, a1]
    bad = await user.put(f"{detail}/branch", json={"message_id": "not-here"})
    assert bad.status_code == 422
