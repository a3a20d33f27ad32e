"""The conventions every route of the existing TBD Agents API follows (reference §1.0), as its
clients rely on them: lists are JSON arrays, updates are PUT (partial), errors carry `detail`, and
the derived fields its response models require are present."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tests.api.conftest import Api
from tests.api.factory import create, uniq


async def test_a_list_without_limit_is_every_record_as_a_bare_array(
    alice: httpx.AsyncClient,
) -> None:
    tag = uniq("all")
    made = {(await create(alice, "skills", tags=[tag]))["id"] for _ in range(60)}
    listed = await alice.get("/api/skills", params={"tags": tag})
    assert listed.status_code == 200
    body = listed.json()
    assert isinstance(body, list)
    assert {s["id"] for s in body} == made  # more than the old default page of 50
    assert "X-Next-Cursor" not in listed.headers and "Link" not in listed.headers


async def test_a_limited_list_names_the_next_page_in_headers(alice: httpx.AsyncClient) -> None:
    tag = uniq("pg")
    made = {(await create(alice, "skills", tags=[tag]))["id"] for _ in range(5)}
    first = await alice.get("/api/skills", params={"tags": tag, "limit": 3})
    assert [len(first.json())] == [3]
    cursor = first.headers["X-Next-Cursor"]
    link = first.headers["Link"]
    assert link.startswith("<http") and link.endswith('>; rel="next"') and "limit=3" in link
    following = await alice.get(link[1 : link.index(">")])
    assert following.status_code == 200 and len(following.json()) == 2
    assert "X-Next-Cursor" not in following.headers
    by_cursor = await alice.get("/api/skills", params={"tags": tag, "limit": 3, "cursor": cursor})
    assert by_cursor.json() == following.json()
    assert {s["id"] for s in first.json() + following.json()} == made


async def test_put_changes_only_the_fields_given(alice: httpx.AsyncClient) -> None:
    agent = await create(alice, "agents", description="keep me", system_prompt="Be brief.")
    changed = await alice.put(f"/api/agents/{agent['id']}", json={"model": "gpt-4.1"})
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert after["model"] == "gpt-4.1"
    assert after["description"] == "keep me" and after["system_prompt"] == "Be brief."
    assert (await alice.get(f"/api/agents/{agent['id']}")).json()["model"] == "gpt-4.1"
    # PATCH is the same operation.
    patched = await alice.patch(f"/api/agents/{agent['id']}", json={"description": "new"})
    assert patched.json()["model"] == "gpt-4.1" and patched.json()["description"] == "new"


async def test_errors_carry_a_detail_string_beside_the_structured_error(
    alice: httpx.AsyncClient,
) -> None:
    missing = await alice.get("/api/agents/no-such-agent")
    assert missing.status_code == 404
    body = missing.json()
    assert isinstance(body["detail"], str) and "no-such-agent" in body["detail"]
    assert body["error"]["code"] == "not_found" and body["error"]["message"] == body["detail"]

    invalid = await alice.post("/api/skills", json={"name": ""})
    assert invalid.status_code == 422
    assert isinstance(invalid.json()["detail"], str) and "name" in invalid.json()["detail"]

    put_missing = await alice.put("/api/skills/nope", json={"description": "x"})
    assert put_missing.status_code == 404 and isinstance(put_missing.json()["detail"], str)

    anonymous = await alice.get("/api/agents", headers={"Authorization": "Bearer nope"})
    assert anonymous.status_code == 401 and isinstance(anonymous.json()["detail"], str)


async def test_tokens_show_a_masked_value_and_never_the_secret(alice: httpx.AsyncClient) -> None:
    secret = "sk-live-" + "x" * 20 + "9f3Q"
    long = await alice.post("/api/tokens", json={"name": uniq("tok"), "value": secret})
    assert long.status_code == 201, long.text
    assert long.json()["masked_value"] == "…9f3Q"
    assert isinstance(long.json()["created_by"], str) and long.json()["created_by"]
    short = await alice.post("/api/tokens", json={"name": uniq("tok"), "value": "abc12"})
    assert short.json()["masked_value"] == "****"
    listed = (await alice.get("/api/tokens")).json()
    mine = {t["id"]: t for t in listed}
    assert mine[long.json()["id"]]["masked_value"] == "…9f3Q"
    assert mine[short.json()["id"]]["masked_value"] == "****"
    assert secret not in (await alice.get("/api/tokens")).text
    rotated = await alice.put(
        f"/api/tokens/{long.json()['id']}", json={"value": "another-secret-value-ABCD"}
    )
    assert rotated.status_code == 200 and rotated.json()["masked_value"] == "…ABCD"


async def test_a_provider_without_a_key_name_shows_an_empty_string(
    alice: httpx.AsyncClient,
) -> None:
    provider = await alice.post(
        "/api/providers",
        json={"name": uniq("prov"), "provider_type": "openai", "description": "d"},
    )
    assert provider.status_code == 201, provider.text
    assert provider.json()["api_key_token_name"] == ""
    listed = [
        p for p in (await alice.get("/api/providers")).json() if p["id"] == provider.json()["id"]
    ]
    assert listed[0]["api_key_token_name"] == ""


async def test_workflows_report_their_runs(api: Api, alice: httpx.AsyncClient) -> None:
    workflow = await create(alice, "workflows")
    other = await create(alice, "workflows")
    fresh = (await alice.get(f"/api/workflows/{workflow['id']}")).json()
    assert fresh["task_count"] == 0 and fresh["last_task_status"] is None
    assert fresh["last_task_at"] is None
    assert isinstance(fresh["github_user"], str) and fresh["github_user"]
    now = datetime.now(UTC)
    async with api.store.unit_of_work() as repos:
        for minutes, status in (
            (30, TaskStatus.COMPLETED),
            (10, TaskStatus.FAILED),
            (20, TaskStatus.COMPLETED),
        ):
            await repos.task_executions.create(
                TaskExecution(
                    workflow_id=workflow["id"],
                    prompt="p",
                    status=status,
                    created_at=now - timedelta(minutes=minutes),
                )
            )
        await repos.task_executions.create(
            TaskExecution(workflow_id=other["id"], prompt="q", status=TaskStatus.RUNNING)
        )
    one = (await alice.get(f"/api/workflows/{workflow['id']}")).json()
    assert one["task_count"] == 3 and one["last_task_status"] == "failed"
    at = datetime.fromisoformat(one["last_task_at"].replace("Z", "+00:00"))
    assert abs(at - (now - timedelta(minutes=10))) < timedelta(seconds=1)
    listed = {w["id"]: w for w in (await alice.get("/api/workflows")).json()}
    assert listed[workflow["id"]]["task_count"] == 3
    assert listed[workflow["id"]]["last_task_status"] == "failed"
    assert listed[other["id"]]["task_count"] == 1
    assert listed[other["id"]]["last_task_status"] == "running"


async def test_tag_filters_take_the_existing_forms_and_ours(alice: httpx.AsyncClient) -> None:
    a, b, c = uniq("a"), uniq("b"), uniq("c")
    only_a = (await create(alice, "knowledge-sources", tags=[a]))["id"]
    both = (await create(alice, "knowledge-sources", tags=[a, b]))["id"]
    only_c = (await create(alice, "knowledge-sources", tags=[c]))["id"]

    async def ids(params: list[tuple[str, str]]) -> set[str]:
        found = await alice.get("/api/knowledge-sources", params=params)
        assert found.status_code == 200, found.text
        return {r["id"] for r in found.json()}

    # `tags=a,b` (the SDKs join with commas): any of them, as the existing API matched.
    assert await ids([("tags", f"{a},{c}")]) == {only_a, both, only_c}
    # Repeated `tags`: every one of them (ours).
    assert await ids([("tags", a), ("tags", b)]) == {both}
    assert await ids([("tags", a)]) == {only_a, both}

    guard = await create(alice, "guardrails", tags=[c])
    listed = await alice.get("/api/guardrails", params={"tag": c})
    assert [g["id"] for g in listed.json()] == [guard["id"]]


async def test_tasks_carry_the_summary_fields(api: Api, alice: httpx.AsyncClient) -> None:
    agent = await create(alice, "agents")
    workflow = await create(alice, "workflows", agent_id=agent["id"], title="Nightly")
    started = datetime.now(UTC) - timedelta(seconds=90)
    async with api.store.unit_of_work() as repos:
        task = await repos.task_executions.create(
            TaskExecution(
                workflow_id=workflow["id"],
                prompt="p",
                status=TaskStatus.COMPLETED,
                started_at=started,
                finished_at=started + timedelta(seconds=30),
                progress={
                    "todos": [{"id": 1, "title": "read", "status": "completed"}],
                    "current_step": 1,
                    "percent_complete": 1.0,
                },
            )
        )
    listed = [t for t in (await alice.get("/api/tasks")).json() if t["id"] == task.id]
    one = (await alice.get(f"/api/tasks/{task.id}")).json()
    for shown in (listed[0], one):
        assert shown["workflow_title"] == "Nightly" and shown["agent_name"] == agent["name"]
        assert shown["elapsed_seconds"] == 30.0
        assert shown["progress"]["todos"] == [{"id": 1, "title": "read", "status": "completed"}]
        assert shown["progress"]["percent_complete"] == 1.0


async def test_changing_an_items_text_or_tags_indexes_it_again(alice: httpx.AsyncClient) -> None:
    source = await create(alice, "knowledge-sources")
    item = (
        await alice.post(
            "/api/knowledge-items",
            json={
                "source_id": source["id"],
                "name": "Runbook",
                "text_content": "zebra crossing",
                "tags": ["old"],
            },
        )
    ).json()

    async def hits(query: str, tags: list[str] | None = None) -> list[str]:
        found = await alice.post(
            "/api/knowledge/search",
            json={"query": query, "source_ids": [source["id"]], "tags": tags or []},
        )
        assert found.status_code == 200, found.text
        return [h["citation"]["item_id"] for h in found.json() if query.split()[0] in h["text"]]

    assert await hits("zebra crossing") == [item["id"]]
    changed = await alice.put(
        f"/api/knowledge-items/{item['id']}",
        json={"text_content": "giraffe enclosure", "tags": ["new"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["text_content"] == "giraffe enclosure"
    assert changed.json()["tags"] == ["new"] and changed.json()["status"] == "indexed"
    assert await hits("zebra crossing") == []
    assert await hits("giraffe enclosure", ["new"]) == [item["id"]]
    refused = await alice.put(f"/api/knowledge-items/{item['id']}", json={"text_content": ""})
    assert refused.status_code == 422
    assert (await alice.get(f"/api/knowledge-items/{item['id']}")).json()["text_content"] == (
        "giraffe enclosure"
    )


async def test_knowledge_items_filter_by_content_type(alice: httpx.AsyncClient) -> None:
    source = await create(alice, "knowledge-sources")
    text = await create(alice, "knowledge-items", source_id=source["id"])
    params = {"source_id": source["id"], "content_type": "text"}
    assert [i["id"] for i in (await alice.get("/api/knowledge-items", params=params)).json()] == [
        text["id"]
    ]
    params["content_type"] = "file"
    assert (await alice.get("/api/knowledge-items", params=params)).json() == []


async def test_memories_filter_by_their_metadata_tags(alice: httpx.AsyncClient) -> None:
    agent = await create(alice, "agents")

    async def remember(key: str, tags: object) -> str:
        made = await alice.post(
            "/api/memories",
            json={"agent_id": agent["id"], "key": key, "value": "v", "metadata": {"tags": tags}},
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    both = await remember("both", ["ops", "db"])
    ops = await remember("ops", ["ops"])
    await remember("odd", "ops")  # not an array: never matches a tag filter

    async def keys(params: list[tuple[str, str]]) -> set[str]:
        found = await alice.get("/api/memories", params=[("agent_id", agent["id"]), *params])
        assert found.status_code == 200, found.text
        return {m["id"] for m in found.json()}

    assert await keys([("tags", "ops")]) == {both, ops}
    assert await keys([("tags", "ops"), ("tags", "db")]) == {both}
    assert await keys([("tags", "db,nothing")]) == {both}
    assert await keys([("tags", "nothing")]) == set()
