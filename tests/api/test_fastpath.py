"""The CRUD fast path (api/fastpath.py) answers exactly as the FastAPI routes do.

A query string (`?via=routes`, which every CRUD route ignores) sends the same request through
FastAPI's routing and dependencies, so each case compares the two answers: status, body and the
headers clients read.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tbd_agents.api.fastpath import CrudFastPath, build_table
from tbd_agents.domain.auth import KeyScope
from tests.api.conftest import Api
from tests.api.factory import RESOURCES, body_for, create, uniq

ROUTED = "?via=routes"
HEADERS = ("content-type", "cache-control", "www-authenticate", "x-next-cursor", "etag")


def _same(fast: httpx.Response, routed: httpx.Response) -> None:
    assert fast.status_code == routed.status_code, (fast.text, routed.text)
    assert {h: fast.headers.get(h) for h in HEADERS} == {h: routed.headers.get(h) for h in HEADERS}
    if routed.content:
        assert fast.json() == routed.json()
    else:
        assert fast.content == routed.content


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("updated_at", "version")}


@pytest.mark.parametrize("name", sorted(RESOURCES))
async def test_get_and_list_answer_as_the_routes(alice: httpx.AsyncClient, name: str) -> None:
    path = RESOURCES[name].path
    record = await create(alice, name)
    for target in (f"{path}/{record['id']}", path, f"{path}/no-such-id"):
        _same(await alice.get(target), await alice.get(target + ROUTED))


@pytest.mark.parametrize("name", sorted(set(RESOURCES) - {"memories"}))
async def test_writes_answer_as_the_routes(alice: httpx.AsyncClient, name: str) -> None:
    path = RESOURCES[name].path
    patch = RESOURCES[name].patch
    record = await create(alice, name)
    for method in ("PATCH", "PUT"):
        fast = await alice.request(method, f"{path}/{record['id']}", json=patch)
        routed = await alice.request(method, f"{path}/{record['id']}{ROUTED}", json=patch)
        assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
        assert _comparable(fast.json()) == _comparable(routed.json())
    bad = {"no_such_field": 1}
    _same(
        await alice.patch(f"{path}/{record['id']}", json=bad),
        await alice.patch(f"{path}/{record['id']}{ROUTED}", json=bad),
    )
    other = await create(alice, name)
    _same(
        await alice.delete(f"{path}/{record['id']}"),
        await alice.delete(f"{path}/{other['id']}{ROUTED}"),
    )
    _same(
        await alice.delete(f"{path}/{record['id']}"),  # gone now: 404 both ways
        await alice.delete(f"{path}/{record['id']}{ROUTED}"),
    )


async def test_create_answers_as_the_route(alice: httpx.AsyncClient) -> None:
    body = await body_for(alice, "agents")
    fast = await alice.post("/api/agents", json=body)
    routed = await alice.post("/api/agents" + ROUTED, json={**body, "name": uniq("agent")})
    assert fast.status_code == routed.status_code == 201
    assert set(fast.json()) == set(routed.json())
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    # a reference to an unknown record: the service's 422, the same way
    dangling = {**body, "provider_id": "no-such-provider"}
    refused = await alice.post("/api/agents", json=dangling)
    assert refused.status_code == 422
    _same(refused, await alice.post("/api/agents" + ROUTED, json=dangling))


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"name": ', "application/json"),  # does not parse
        (b"[1, 2]", "application/json"),  # not an object
        (b'{"name": 5}', "application/json"),  # fails the schema
        (b'{"name": "ok", "temperature": "hot"}', "application/json"),  # a bad field
        (b"", "application/json"),  # no body
        (b'{"name": "plain"}', "text/plain"),  # another content type
        (b'{"name": "plain"}', ""),  # none
        (b'{"name": NaN}', "application/json"),  # what json.loads reads and orjson refuses
    ],
)
async def test_bodies_the_fast_path_leaves_to_fastapi(
    alice: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    fast = await alice.post("/api/agents", content=content, headers=headers)
    routed = await alice.post("/api/agents" + ROUTED, content=content, headers=headers)
    assert fast.status_code == routed.status_code
    assert fast.status_code in (400, 415, 422), fast.text
    assert fast.json() == routed.json()


async def test_authentication_failures_answer_as_the_routes(
    api: Api, alice: httpx.AsyncClient
) -> None:
    record = await create(alice, "agents")
    target = f"/api/agents/{record['id']}"
    async with api.client() as anonymous, api.client("tbd_not-a-real-key") as wrong:
        for client in (anonymous, wrong):
            for method, url, body in (
                ("GET", target, None),
                ("GET", "/api/agents", None),
                ("PUT", target, {"description": "x"}),
                ("POST", "/api/agents", {"name": uniq()}),
                ("DELETE", target, None),
            ):
                fast = await client.request(method, url, json=body)
                routed = await client.request(method, url + ROUTED, json=body)
                assert fast.status_code == 401, (method, url, fast.text)
                _same(fast, routed)
    # bad JSON without credentials: the body error comes first, as in FastAPI
    async with api.client() as anonymous:
        bad = b'{"name": '
        headers = {"content-type": "application/json"}
        fast = await anonymous.post("/api/agents", content=bad, headers=headers)
        routed = await anonymous.post("/api/agents" + ROUTED, content=bad, headers=headers)
        assert fast.status_code == routed.status_code == 422
        assert fast.json() == routed.json()


async def test_ownership_and_scope_as_the_routes(api: Api, alice: httpx.AsyncClient) -> None:
    record = await create(alice, "agents")
    target = f"/api/agents/{record['id']}"
    async with await api.user() as bob, await api.user(scope=KeyScope.READ_ONLY) as reader:
        for method in ("GET", "PUT", "DELETE"):
            body = {"description": "mine now"} if method == "PUT" else None
            fast = await bob.request(method, target, json=body)
            assert fast.status_code == 404
            _same(fast, await bob.request(method, target + ROUTED, json=body))
        listed = await bob.get("/api/agents")
        assert record["id"] not in {a["id"] for a in listed.json()}
        _same(listed, await bob.get("/api/agents" + ROUTED))
        denied = await reader.post("/api/agents", json={"name": uniq()})
        assert denied.status_code == 403
        _same(denied, await reader.post("/api/agents" + ROUTED, json={"name": uniq()}))
    assert (await alice.get(target)).json()["description"] == record["description"]


async def test_routes_registered_before_a_resource_keep_their_paths(
    alice: httpx.AsyncClient,
) -> None:
    # /api/memories/search is a route of its own, not the memory with id "search"
    search = await alice.get("/api/memories/search")
    assert search.status_code != 404 or search.json()["error"]["code"] != "not_found"
    assert search.json() == (await alice.get("/api/memories/search" + ROUTED)).json()
    # knowledge items are created by the knowledge router (ingestion), not the CRUD route
    source = await create(alice, "knowledge-sources")
    body = {"source_id": source["id"], "name": uniq("item"), "content": "some text"}
    created = await alice.post("/api/knowledge-items", json=body)
    routed = await alice.post("/api/knowledge-items" + ROUTED, json={**body, "name": uniq()})
    assert created.status_code == routed.status_code, (created.text, routed.text)
    assert set(created.json()) == set(routed.json())


def test_the_table_holds_the_crud_routes_not_the_shadowed_ones(api: Api) -> None:
    middleware = next(m for m in api.app.user_middleware if m.cls is CrudFastPath)
    table = build_table(api.app.routes, middleware.kwargs["resources"])
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        assert (method, "/api/agents/{record_id}") in table
    assert ("GET", "/api/agents") in table
    assert ("POST", "/api/agents") in table
    # taken by routes/knowledge.py, registered before the CRUD routers
    assert ("POST", "/api/knowledge-items") not in table
    assert ("DELETE", "/api/knowledge-items/{record_id}") not in table
    # memories are read-only through the CRUD router
    assert ("PUT", "/api/memories/{record_id}") not in table
    searching = table[("GET", "/api/memories/{record_id}")]
    assert any(rx.match("/api/memories/search") for rx in searching.earlier)


async def test_a_body_is_replayed_to_fastapi_whole(alice: httpx.AsyncClient) -> None:
    # a schema failure goes to FastAPI with the body it was sent: the 422 names the field
    body = json.dumps({"name": uniq(), "tags": "not-a-list"}).encode()
    answer = await alice.post(
        "/api/agents", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["details"]["errors"][0]["loc"] == ["body", "tags"]


async def test_single_write_creates_and_updates_are_those_of_plain_records(api: Api) -> None:
    """`catalog.writes_once` (no transaction for a create or update) holds exactly for the
    models whose service is the plain `Records`, which writes once."""
    from tbd_agents.domain.models import ENTITIES
    from tbd_agents.services.access import Principal
    from tbd_agents.services.catalog import records_for, writes_once
    from tbd_agents.services.records import Records

    principal = Principal("someone", KeyScope.USER)
    async with api.store.unit_of_work(readonly=True) as repos:
        for model in ENTITIES:
            service = records_for(model, repos, principal, api.app.state.ctx.cipher)
            assert writes_once(model) == (type(service) is Records), model.__name__
