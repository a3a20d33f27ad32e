"""A provider set up with its API key in one step: test the connection, then store the provider
and the token holding its key together (or neither)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import Api, make_settings
from tests.api.factory import uniq

KEY = "sk-onboarding-5f1e"


class _Provider(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/v1/models":
            body, status = b'{"error": "not found"}', 404
        elif self.headers.get("Authorization") == f"Bearer {KEY}":
            body, status = json.dumps({"data": [{"id": "m-2"}, {"id": "m-1"}]}).encode(), 200
        else:
            body, status = b'{"error": "bad key"}', 401
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
async def api(api_db: URL, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    store = PostgresStore(create_engine(api_db, pool_size=4, max_overflow=4), url=api_db)
    settings = make_settings(tmp_path_factory.mktemp("api"), outbound_allowed_hosts="127.0.0.1")
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, settings)
    await store.close()


@pytest.fixture
def provider_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


async def _token_names(client: httpx.AsyncClient) -> set[str]:
    return {t["name"] for t in (await client.get("/api/tokens")).json()}


async def test_test_connection_says_what_to_fix(
    alice: httpx.AsyncClient, provider_api: str
) -> None:
    url = "/api/providers/test-connection"
    body = {"provider_type": "custom", "base_url": provider_api, "api_key": KEY}
    ok = await alice.post(url, json=body)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"models": ["m-1", "m-2"]}
    refused = await alice.post(url, json={**body, "api_key": "sk-wrong"})
    assert refused.status_code == 422
    assert refused.json()["error"]["message"] == (
        "The provider refused the key (401). Check the key and try again."
    )
    assert refused.json()["error"]["details"]["field"] == "api_key"
    wrong_path = await alice.post(url, json={**body, "base_url": provider_api + "/x"})
    assert wrong_path.status_code == 422 and "base URL" in wrong_path.json()["error"]["message"]
    gone = await alice.post(url, json={**body, "base_url": "http://127.0.0.1:9/v1"})
    assert gone.status_code == 502 and "could not be reached" in gone.json()["error"]["message"]
    assert (await alice.post(url, json={**body, "api_key": ""})).status_code == 422
    pasted = await alice.post(url, json={**body, "api_key": "sk-\u00d1 key"})  # not sendable
    assert pasted.status_code == 422 and "printable ASCII" in pasted.text
    padded = await alice.post(url, json={**body, "api_key": f"  {KEY}\n"})  # pasted with spaces
    assert padded.status_code == 200
    assert await _token_names(alice) == set()  # a test stores nothing


async def test_provider_with_key_is_created_whole_or_not_at_all(
    alice: httpx.AsyncClient, provider_api: str
) -> None:
    name = uniq("My Provider")
    body = {"name": name, "provider_type": "custom", "base_url": provider_api, "api_key": KEY,
            "default_model": "m-1", "models": ["m-1", "m-2"]}  # fmt: skip
    created = await alice.post("/api/providers/with-key", json=body)
    assert created.status_code == 201, created.text
    provider = created.json()
    token_name = provider["api_key_token_name"]
    assert token_name == f"{name.replace(' ', '-')}-api-key"
    assert provider["name"] == name and provider["default_model"] == "m-1"
    assert token_name in await _token_names(alice)
    # the stored key works: the provider's live listing uses it
    live = await alice.get(f"/api/providers/{provider['id']}/models", params={"refresh": True})
    assert live.status_code == 200 and live.json()["models"] == ["m-1", "m-2"]
    # the key is never shown back
    token = next(t for t in (await alice.get("/api/tokens")).json() if t["name"] == token_name)
    assert KEY not in json.dumps(token)

    before = await _token_names(alice)
    taken = await alice.post("/api/providers/with-key", json=body)  # the name is taken
    assert taken.status_code == 409, taken.text
    assert await _token_names(alice) == before  # the token was rolled back
    bad_url = await alice.post(
        "/api/providers/with-key", json={**body, "name": uniq("p"), "base_url": "ftp://x"}
    )
    assert bad_url.status_code == 422
    assert await _token_names(alice) == before
