"""GET /api/providers/{id}/models: the stored list, or the provider's live /models with the API
key and header secrets resolved only for that call."""

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
from tests.api.factory import create, post, uniq

KEY = "sk-models-test-91c2"
ORG = "org-secret-77"


class _Provider(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        _Provider.seen.append(dict(self.headers))
        ok = (
            self.headers.get("Authorization") == f"Bearer {KEY}"
            and self.headers.get("X-Org") == ORG
        )
        if self.path == "/v1/models" and ok:
            body, status = json.dumps({"data": [{"id": "m-b"}, {"id": "m-a"}]}).encode(), 200
        else:
            body, status = b'{"error": "no"}', 401 if not ok else 500
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
async def api(api_db: URL, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """The module's app, with the local provider's address on the operator allow-list (the
    records are alice's, a non-admin: without it the refresh is refused, see
    tests/security/test_outbound.py)."""
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


async def test_stored_and_live_models(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, provider_api: str
) -> None:
    key = await post(alice, "/api/tokens", {"name": uniq("k"), "value": KEY})
    org = await post(alice, "/api/tokens", {"name": uniq("org"), "value": ORG})
    provider = await create(
        alice,
        "providers",
        provider_type="custom",
        base_url=provider_api,
        models=["stored-1"],
        default_model="stored-1",
        api_key_token_name=key["name"],
        extra_headers={"X-Org": "{{token:" + org["name"] + "}}"},
    )
    stored = (await alice.get(f"/api/providers/{provider['id']}/models")).json()
    assert stored == {
        "provider_id": provider["id"],
        "default_model": "stored-1",
        "models": ["stored-1"],
        "source": "stored",
    }
    live = await alice.get(f"/api/providers/{provider['id']}/models", params={"refresh": True})
    assert live.status_code == 200, live.text
    assert live.json()["models"] == ["m-a", "m-b"] and live.json()["source"] == "provider"
    assert (await bob.get(f"/api/providers/{provider['id']}/models")).status_code == 404
    again = await alice.get(f"/api/providers/{provider['id']}")
    assert again.json()["extra_headers"] == {"X-Org": "{{token:" + org["name"] + "}}"}

    broken = await create(
        alice, "providers", provider_type="custom", base_url=provider_api + "/nope"
    )
    failed = await alice.get(f"/api/providers/{broken['id']}/models", params={"refresh": True})
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "upstream_error"
