"""Every resource: create 201, get, partial update, list with pagination, delete 204, 404s, 422."""

from __future__ import annotations

import httpx
import pytest

from tests.api.factory import RESOURCES, body_for, create

NAMES = sorted(RESOURCES)


@pytest.mark.parametrize("name", NAMES)
async def test_create_get_update_delete(alice: httpx.AsyncClient, name: str) -> None:
    path = RESOURCES[name].path
    record = await create(alice, name)
    assert record["id"]
    got = await alice.get(f"{path}/{record['id']}")
    assert got.status_code == 200
    assert got.json() == record

    patch = RESOURCES[name].patch
    changed = await alice.patch(f"{path}/{record['id']}", json=patch)
    assert changed.status_code == 200, changed.text
    after = changed.json()
    for key, value in patch.items():
        assert after[key] == value
    changing = {"updated_at", "version"}
    untouched = {k: v for k, v in record.items() if k not in patch and k not in changing}
    assert {k: after[k] for k in untouched} == untouched
    assert after["updated_at"] >= record["updated_at"]
    assert after["version"] == record["version"] + 1

    deleted = await alice.delete(f"{path}/{record['id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = await alice.get(f"{path}/{record['id']}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "bad_id", ["00000000-0000-0000-0000-000000000000", "x" * 500, "%20", "не-id", "1;DROP"]
)
async def test_unknown_and_malformed_ids_are_404(
    alice: httpx.AsyncClient, name: str, bad_id: str
) -> None:
    path = RESOURCES[name].path
    for response in (
        await alice.get(f"{path}/{bad_id}"),
        await alice.patch(f"{path}/{bad_id}", json=RESOURCES[name].patch),
        await alice.delete(f"{path}/{bad_id}"),
    ):
        assert response.status_code == 404, (response.request.method, response.text)
        assert set(response.json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize("name", NAMES)
async def test_invalid_body_is_422_with_field_path(alice: httpx.AsyncClient, name: str) -> None:
    path = RESOURCES[name].path
    body = await body_for(alice, name)
    body["no_such_field"] = 1
    response = await alice.post(path, json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert ["body", "no_such_field"] in [e["loc"] for e in error["details"]["errors"]]

    record = await create(alice, name)
    wrong = {field: {"not": "a string"} for field in RESOURCES[name].patch}
    bad_type = await alice.patch(f"{path}/{record['id']}", json=wrong)
    assert bad_type.status_code == 422
    not_json = await alice.post(
        path, content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422


@pytest.mark.parametrize("name", NAMES)
async def test_pagination_covers_every_record_once(alice: httpx.AsyncClient, name: str) -> None:
    path = RESOURCES[name].path
    created = {(await create(alice, name))["id"] for _ in range(5)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await alice.get(path, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert isinstance(page, list) and len(page) <= 2
        seen += [r["id"] for r in page]
        pages += 1
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in response.headers
            break
        assert response.headers["Link"].endswith('>; rel="next"')
        assert f"cursor={cursor}" in response.headers["Link"]
    assert created <= set(seen)
    assert len(seen) == len(set(seen))
    assert pages >= 3


async def test_limit_bounds_and_bad_cursor(alice: httpx.AsyncClient) -> None:
    assert (await alice.get("/api/agents", params={"limit": 0})).status_code == 422
    assert (await alice.get("/api/agents", params={"limit": 1001})).status_code == 422
    assert (await alice.get("/api/agents", params={"limit": 200})).status_code == 200
    bad = await alice.get("/api/agents", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "unsupported_query"


async def test_patch_clears_nullable_and_refuses_null_for_required(
    alice: httpx.AsyncClient,
) -> None:
    agent = await create(alice, "agents", model="gpt-x", temperature=0.5)
    cleared = await alice.patch(f"/api/agents/{agent['id']}", json={"model": None})
    assert cleared.status_code == 200
    assert cleared.json()["model"] is None
    assert cleared.json()["temperature"] == 0.5
    refused = await alice.patch(f"/api/agents/{agent['id']}", json={"name": None})
    assert refused.status_code == 422
    assert refused.json()["error"]["details"]["errors"][0]["loc"][:2] == ["body", "name"]
    empty = await alice.patch(f"/api/agents/{agent['id']}", json={})
    assert empty.status_code == 200
    assert empty.json()["model"] is None


async def test_unique_name_conflict_is_409(alice: httpx.AsyncClient) -> None:
    provider = await create(alice, "providers")
    again = await alice.post("/api/providers", json={"name": provider["name"]})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_key"
    token = await create(alice, "tokens")
    clash = await alice.post("/api/tokens", json={"name": token["name"], "value": "x"})
    assert clash.status_code == 409


async def test_server_managed_fields_are_not_writable(alice: httpx.AsyncClient) -> None:
    """Read-only fields a client sends (a record sent back as read) are ignored, as the existing
    API ignored them; values outside what clients may set, and immutable fields changed, are
    422; other unknown fields are 422 (dropping them silently could lose what the client meant).
    """
    agent = await create(alice, "agents")
    workflow = await create(alice, "workflows", agent_id=agent["id"])
    path = f"/api/workflows/{workflow['id']}"
    assert (await alice.patch(path, json={"status": "running"})).status_code == 422
    assert (await alice.patch(path, json={"no_such_field": 1})).status_code == 422
    for body in ({"logs": [{"event": "forged"}]}, {"github_user": "mallory"}, {"id": "x"}):
        response = await alice.patch(path, json=body)
        assert response.status_code == 200, body
    after = (await alice.get(path)).json()
    assert after["id"] == workflow["id"] and after["logs"] == []
    assert after["github_user"] == workflow["github_user"] != "mallory"
    session = await create(alice, "chat-sessions", agent_id=agent["id"])
    other = await create(alice, "agents")
    moved = await alice.patch(f"/api/chat/sessions/{session['id']}", json={"agent_id": other["id"]})
    assert moved.status_code == 422
    kept = await alice.patch(f"/api/chat/sessions/{session['id']}", json={"agent_id": agent["id"]})
    assert kept.status_code == 200
    item = await create(alice, "knowledge-items")
    other_source = await create(alice, "knowledge-sources")
    for body in ({"source_id": other_source["id"]}, {"content_type": "file"}):
        response = await alice.patch(f"/api/knowledge-items/{item['id']}", json=body)
        assert response.status_code == 422, body
    same = await alice.patch(
        f"/api/knowledge-items/{item['id']}", json={"source_id": item["source_id"]}
    )
    assert same.status_code == 200  # an immutable field sent back unchanged
    status = await alice.patch(f"/api/knowledge-items/{item['id']}", json={"status": "failed"})
    assert status.status_code == 200 and status.json()["status"] == item["status"]


async def test_unknown_route_uses_the_error_shape(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    wrong_method = await alice.put("/api/agents")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


async def test_existing_defaults_and_writable_state(alice: httpx.AsyncClient) -> None:
    """Provider: auth_type x-api-key, Azure api version 2024-12-01-preview, description shown.
    Workflow: status active, settable to inactive and back; run state is the server's."""
    provider = await create(alice, "providers", description="Team gateway")
    assert provider["auth_type"] == "x-api-key"
    assert provider["azure_api_version"] == "2024-12-01-preview"
    shown = (await alice.get(f"/api/providers/{provider['id']}")).json()
    assert shown["description"] == "Team gateway"
    bearer = await alice.patch(f"/api/providers/{provider['id']}", json={"auth_type": "bearer"})
    assert bearer.status_code == 200 and bearer.json()["auth_type"] == "bearer"

    agent = await create(alice, "agents")
    workflow = await create(alice, "workflows", agent_id=agent["id"])
    assert workflow["status"] == "active" and workflow["output_format"] == "json"
    path = f"/api/workflows/{workflow['id']}"
    off = await alice.patch(path, json={"status": "inactive"})
    assert off.status_code == 200 and off.json()["status"] == "inactive"
    assert (await alice.patch(path, json={"status": "ACTIVE"})).json()["status"] == "active"
    assert (await alice.patch(path, json={"status": "idle"})).status_code == 422
    for body in ({"current_turn": 3}, {"usage": {"total_cost": 1}}):  # run state: ignored
        assert (await alice.patch(path, json=body)).status_code == 200, body
    state = (await alice.get(path)).json()
    assert state["current_turn"] == 0 and state["usage"] is None
