"""Chat sessions and turns over real HTTP (the model on the protocol server): a stopped answer is
kept, regenerate and edit-and-resend keep the old versions as branches and the model only sees
the active branch, and the session list searches, pins and pages."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tbd_agents.domain.enums import MessageRole
from tbd_agents.domain.models import ChatMessage, ChatSession
from tests.engine import test_chat_sse as sse
from tests.engine.protocol_server import ProtocolServer, Turn

# The database, live server, agent and client of the chat SSE tests.
chat_env = sse.chat_env
setup = sse.setup
events = sse.events


async def turn(client: httpx.AsyncClient, agent_id: str, **body: Any) -> list[tuple[str, dict]]:
    async with client.stream("POST", f"/api/agents/{agent_id}/chat", json=body) as r:
        assert r.status_code == 200, await r.aread()
        return [(n, d) async for n, d, _ in events(r)]


async def detail(client: httpx.AsyncClient, agent_id: str, sid: str, active: bool = True) -> dict:
    r = await client.get(
        f"/api/agents/{agent_id}/chat/sessions/{sid}", params={"active": str(active).lower()}
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_stopped_answer_is_stored_marked_stopped(
    setup, protocol_server: ProtocolServer
) -> None:
    client, agent_id, _ = setup
    full = "partial answer " * 200
    protocol_server.script(Turn(text=full, chunk_chars=5, delay=0.02))
    got = ""
    async with client.stream(
        "POST", f"/api/agents/{agent_id}/chat", json={"message": "talk slowly"}
    ) as r:
        async for name, data, _ in events(r):
            if name == "session":
                sid = data["session_id"]
            if name == "delta":
                got += data["delta"]
                if len(got) >= 30:
                    break  # the client goes away (the dashboard's Stop)
    stored: list[dict] = []
    for _ in range(200):
        stored = [
            m for m in (await detail(client, agent_id, sid))["messages"] if m["role"] == "assistant"
        ]
        if stored:
            break
        await asyncio.sleep(0.05)
    assert len(stored) == 1, "the partial answer was not stored"
    answer = stored[0]
    assert answer["metadata"]["stopped"] is True
    assert answer["content"].startswith(got) and len(answer["content"]) < len(full)
    user = (await detail(client, agent_id, sid))["messages"][0]
    assert answer["parent_id"] == user["id"]


async def test_regenerate_and_edit_keep_versions_and_the_model_sees_the_active_branch(
    setup, protocol_server: ProtocolServer
) -> None:
    client, agent_id, _ = setup
    protocol_server.script(Turn(text="alpha answer"), Turn(text="bravo answer"))
    first = await turn(client, agent_id, message="alpha question")
    sid = first[0][1]["session_id"]
    await turn(client, agent_id, message="bravo question", session_id=sid)

    # Regenerate the last answer: the model sees the branch up to the last question only.
    protocol_server.script(Turn(text="bravo again"))
    async with client.stream("POST", f"/api/agents/{agent_id}/chat/sessions/{sid}/regenerate") as r:
        assert r.status_code == 200
        regenerated = [(n, d) async for n, d, _ in events(r)]
    assert regenerated[-1][0] == "done"
    sent = protocol_server.requests[-1].all_text()
    assert "alpha question" in sent and "alpha answer" in sent and "bravo question" in sent
    assert "bravo answer" not in sent
    shown = (await detail(client, agent_id, sid))["messages"]
    assert [m["content"] for m in shown] == [
        "alpha question", "alpha answer", "bravo question", "bravo again",
    ]  # fmt: skip
    assert shown[3]["versions"]["index"] == 2 and shown[3]["versions"]["count"] == 2
    old_answer = shown[3]["versions"]["ids"][0]

    # Switch back to the first version.
    r = await client.put(
        f"/api/agents/{agent_id}/chat/sessions/{sid}/branch", json={"message_id": old_answer}
    )
    assert r.status_code == 200
    assert [m["content"] for m in r.json()["messages"]][-1] == "bravo answer"
    assert (await detail(client, agent_id, sid))["messages"][3]["versions"]["index"] == 1

    # Edit the second question: a new version of it, answered on the branch before it.
    bravo_q = shown[2]["id"]
    protocol_server.script(Turn(text="charlie answer"))
    await turn(client, agent_id, message="charlie question", session_id=sid, edit_of=bravo_q)
    sent = protocol_server.requests[-1].all_text()
    assert "alpha answer" in sent and "charlie question" in sent
    assert "bravo" not in sent
    shown = (await detail(client, agent_id, sid))["messages"]
    assert [m["content"] for m in shown] == [
        "alpha question", "alpha answer", "charlie question", "charlie answer",
    ]  # fmt: skip
    assert shown[2]["versions"] == {"index": 2, "count": 2, "ids": [bravo_q, shown[2]["id"]]}

    # The next turn continues the active branch only.
    protocol_server.script(Turn(text="delta answer"))
    await turn(client, agent_id, message="delta question", session_id=sid)
    sent = protocol_server.requests[-1].all_text()
    assert "charlie answer" in sent and "delta question" in sent and "bravo" not in sent
    everything = await detail(client, agent_id, sid, active=False)
    assert len(everything["messages"]) == 9  # nothing was lost

    # Switching to the old question brings back its newest answer ("bravo again").
    r = await client.put(
        f"/api/agents/{agent_id}/chat/sessions/{sid}/branch", json={"message_id": bravo_q}
    )
    assert [m["content"] for m in r.json()["messages"]][2:] == ["bravo question", "bravo again"]

    # Bad references are refused and change nothing.
    r = await client.post(
        f"/api/agents/{agent_id}/chat",
        json={"message": "x", "session_id": sid, "edit_of": shown[1]["id"]},  # an answer
    )
    assert r.status_code == 422
    r = await client.post(f"/api/agents/{agent_id}/chat", json={"message": "x", "edit_of": bravo_q})
    assert r.status_code == 422
    r = await client.put(
        f"/api/agents/{agent_id}/chat/sessions/{sid}/branch", json={"message_id": "nope"}
    )
    assert r.status_code == 422
    assert len((await detail(client, agent_id, sid, active=False))["messages"]) == 9


async def test_sessions_search_pin_and_page(setup) -> None:
    client, agent_id, store = setup
    async with store.unit_of_work() as repos:
        mine = [
            await repos.chat_sessions.create(
                ChatSession(agent_id=agent_id, github_user="carol", title=f"chat {i:03d}")
            )
            for i in range(130)
        ]
        await repos.chat_sessions.update(mine[5].id, {"title": "Recipe with NEEDLE inside"})
        await repos.chat_messages.create(
            ChatMessage(
                session_id=mine[7].id, role=MessageRole.USER, content="a haystack-word here"
            )
        )
        await repos.chat_sessions.create(  # another user's: never listed
            ChatSession(agent_id=agent_id, github_user="dave", title="needle of dave")
        )
    base = f"/api/agents/{agent_id}/chat/sessions"
    ids: list[str] = []
    for skip in (0, 100):
        page = (await client.get(base, params={"skip": skip, "limit": 100})).json()
        ids += [s["id"] for s in page]
    assert {s.id for s in mine} <= set(ids) and len(ids) == len(set(ids))

    found = (await client.get(base, params={"q": "needle", "limit": 50})).json()
    assert [s["id"] for s in found] == [mine[5].id]
    found = (await client.get(base, params={"q": "HAYSTACK-word"})).json()
    assert [s["id"] for s in found] == [mine[7].id]
    assert (await client.get(base, params={"q": "no such text anywhere"})).json() == []

    before = (await client.get(base, params={"limit": 3})).json()
    oldest = mine[0].id
    r = await client.patch(f"{base}/{oldest}", json={"pinned": True, "title": "Pinned one"})
    assert r.status_code == 200 and r.json()["pinned"] is True and r.json()["title"] == "Pinned one"
    assert (await client.get(base, params={"limit": 3})).json() == before  # order unchanged
    pinned = (await client.get(base, params={"limit": 3, "pinned_first": "true"})).json()
    assert pinned[0]["id"] == oldest and pinned[0]["pinned"] is True
    assert [s["id"] for s in pinned[1:]] == [s["id"] for s in before[:2]]
    r = await client.patch(f"{base}/{oldest}", json={"pinned": False})
    assert r.json()["pinned"] is False
    assert (await client.patch(f"{base}/{oldest}", json={"title": ""})).status_code == 422
    assert (await client.patch(f"{base}/{oldest}", json={"colour": "red"})).status_code == 422


async def test_editing_the_first_message_starts_a_branch_from_the_beginning(
    setup, protocol_server: ProtocolServer
) -> None:
    client, agent_id, _ = setup
    protocol_server.script(Turn(text="first answer"), Turn(text="second answer"))
    sid = (await turn(client, agent_id, message="first question"))[0][1]["session_id"]
    await turn(client, agent_id, message="second question", session_id=sid)
    first = (await detail(client, agent_id, sid))["messages"][0]
    protocol_server.script(Turn(text="echo answer"))
    opened = await turn(
        client, agent_id, message="echo question", session_id=sid, edit_of=first["id"]
    )
    assert opened[-1][0] == "done"
    assert protocol_server.requests[-1].all_text().count("question") == 1  # no history at all
    shown = (await detail(client, agent_id, sid))["messages"]
    assert [m["content"] for m in shown] == ["echo question", "echo answer"]
    assert shown[0]["parent_id"] is None and shown[0]["versions"]["ids"] == [
        first["id"],
        shown[0]["id"],
    ]
    assert opened[0][1]["user_message_id"] == shown[0]["id"]
