"""Closed by default: credentials, scopes, key management, GitHub identity, open loopback mode."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tbd_agents.api import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.errors import ConfigurationError
from tests.api.conftest import Api, make_settings
from tests.api.factory import RESOURCES, create


@pytest.mark.parametrize("name", sorted(RESOURCES))
async def test_every_resource_rejects_requests_without_credentials(api: Api, name: str) -> None:
    async with api.client() as anonymous:
        path = RESOURCES[name].path
        for response in (
            await anonymous.get(path),
            await anonymous.post(path, json={}),
            await anonymous.get(f"{path}/some-id"),
            await anonymous.patch(f"{path}/some-id", json={}),
            await anonymous.delete(f"{path}/some-id"),
        ):
            assert response.status_code == 401, (response.request.method, path)
            assert response.json()["error"]["code"] == "authentication_required"
            assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer tbd_00000000_unknownunknownunknown",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "tbd_x",
        "Bearer ghp_notakey",
    ],
)
async def test_bad_credentials_are_401(api: Api, header: str) -> None:
    async with api.client() as client:
        response = await client.get("/api/agents", headers={"Authorization": header})
    assert response.status_code == 401
    assert "tbd-agents keys create" in response.json()["error"]["message"]


async def test_health_needs_no_credentials(api: Api) -> None:
    async with api.client() as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/health/ready")
    assert ready.status_code == 200
    checks = {c["name"]: c for c in ready.json()["checks"]}
    assert checks["database"]["ok"] is True and checks["database"]["latency_ms"] >= 0
    assert "at revision" in checks["database"]["detail"]
    assert checks["vector_store"]["ok"] is True and checks["vector_store"]["detail"].startswith(
        "pgvector"
    )


async def test_read_only_key_reads_but_cannot_write(api: Api) -> None:
    owner = "ro-owner"
    async with await api.user(owner) as writer, await api.user(owner, KeyScope.READ_ONLY) as reader:
        agent = await create(writer, "agents")
        assert (await reader.get(f"/api/agents/{agent['id']}")).status_code == 200
        for response in (
            await reader.post("/api/agents", json={"name": "nope"}),
            await reader.patch(f"/api/agents/{agent['id']}", json={"description": "x"}),
            await reader.delete(f"/api/agents/{agent['id']}"),
            await reader.post("/api/keys", json={}),
        ):
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "permission_denied"


async def test_keys_api_create_list_revoke(api: Api, alice: httpx.AsyncClient) -> None:
    me = (await alice.get("/api/me")).json()
    created = await alice.post("/api/keys", json={"name": "laptop", "scope": "read_only"})
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith(body["prefix"]) and body["owner"] == me["identity"]
    listed = (await alice.get("/api/keys")).json()
    assert body["id"] in [k["id"] for k in listed]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    async with api.client(body["key"]) as laptop:
        assert (await laptop.get("/api/me")).json()["scope"] == "read_only"
        assert (await alice.delete(f"/api/keys/{body['id']}")).status_code == 204
        revoked = await laptop.get("/api/me")
    assert revoked.status_code == 401
    refused = await alice.post("/api/keys", json={"scope": "admin"})
    assert refused.status_code == 403
    for_other = await alice.post("/api/keys", json={"owner": "someone-else"})
    assert for_other.status_code == 403


async def test_users_cannot_see_or_revoke_other_users_keys(
    api: Api, alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    key = (await alice.post("/api/keys", json={"name": "a"})).json()
    assert key["id"] not in [k["id"] for k in (await bob.get("/api/keys")).json()]
    assert (await bob.delete(f"/api/keys/{key['id']}")).status_code == 404
    assert (await bob.get("/api/keys", params={"owner": key["owner"]})).status_code == 403
    mine = await admin.get("/api/keys", params={"owner": key["owner"]})
    assert key["id"] in [k["id"] for k in mine.json()]
    assert (await admin.delete(f"/api/keys/{key['id']}")).status_code == 204


async def test_last_used_is_recorded(api: Api, alice: httpx.AsyncClient) -> None:
    await alice.get("/api/me")
    keys = (await alice.get("/api/keys")).json()
    assert any(k["last_used_at"] is not None for k in keys)


def test_open_mode_is_refused_off_loopback(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, allow_unauthenticated=True, host="0.0.0.0")
    with pytest.raises(ConfigurationError, match="loopback"):
        create_app(settings, store=None)


async def test_open_mode_on_loopback_acts_as_local_admin(
    api: Api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, allow_unauthenticated=True, host="127.0.0.1")
    app = create_app(settings, api.store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client,
    ):
        me = (await client.get("/api/me")).json()
    assert me == {"identity": "local", "scope": "admin", "via": "unauthenticated"}
    assert "AUTHENTICATION IS DISABLED" in caplog.text


class _FakeGitHub(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_GET(self) -> None:
        _FakeGitHub.calls.append(self.headers.get("Authorization", ""))
        if self.path == "/user" and self.headers.get("Authorization") == "Bearer gho_good":
            body = json.dumps({"login": "octo"}).encode()
            self.send_response(200)
        else:
            body = b'{"message": "Bad credentials"}'
            self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def github_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGitHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_github_identity_with_cache(api: Api, tmp_path: Path, github_api: str) -> None:
    _FakeGitHub.calls.clear()
    settings = make_settings(tmp_path, github_auth=True, github_api_url=github_api)
    app = create_app(settings, api.store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client,
    ):
        good = {"Authorization": "Bearer gho_good"}
        first = await client.get("/api/me", headers=good)
        second = await client.get("/api/me", headers=good)
        bad = await client.get("/api/me", headers={"Authorization": "Bearer gho_bad"})
        agent = await client.post("/api/agents", json={"name": "gh"}, headers=good)
    assert first.json() == {"identity": "octo", "scope": "user", "via": "github"}
    assert second.status_code == 200
    assert bad.status_code == 401
    assert agent.json()["created_by"] == "octo"
    assert await asyncio.to_thread(lambda: _FakeGitHub.calls.count("Bearer gho_good")) == 1
