"""Finding 12 of the fault hunt (issue #16): an Anthropic provider created through the API with
no `auth_type` sends its key the way Anthropic's API reads it, `x-api-key`, and never as
`Authorization: Bearer` (which the installed SDK generation puts on every `api_key` client).
Checked on the wire, through a real chat turn of the official SDK against the protocol server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import Api, make_settings
from tests.api.factory import post, uniq
from tests.engine.protocol_server import ProtocolServer, Turn

KEY = "sk-ant-api03-fault-test-key"


@pytest.fixture(scope="module")
def wire() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def api(api_db: URL, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """The app with the loopback protocol server allowed by the outbound policy."""
    store = PostgresStore(create_engine(api_db, pool_size=4, max_overflow=4), url=api_db)
    settings = make_settings(tmp_path_factory.mktemp("api"), outbound_allowed_hosts="127.0.0.1")
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, settings)
    await store.close()


async def test_the_default_anthropic_provider_sends_x_api_key(
    alice: httpx.AsyncClient, wire: ProtocolServer
) -> None:
    token = await post(alice, "/api/tokens", {"name": uniq("ant"), "value": KEY})
    provider = await post(
        alice,
        "/api/providers",
        {
            "name": uniq("anthropic"),
            "provider_type": "anthropic",
            "base_url": wire.url,
            "api_key_token_name": token["name"],
        },
    )
    assert provider["auth_type"] == "x-api-key"  # the existing system's default
    agent = await post(
        alice,
        "/api/agents",
        {"name": uniq("a"), "provider_id": provider["id"], "model": "claude-sonnet-4-5"},
    )
    wire.reset()
    wire.script(Turn(text="hello from claude"))
    reply = await alice.post(f"/api/agents/{agent['id']}/chat", json={"message": "hi"})
    assert reply.status_code == 200, reply.text
    assert "hello from claude" in reply.text
    (request,) = [r for r in wire.requests if r.path.endswith("/messages")]
    assert request.headers["x-api-key"] == KEY
    assert "authorization" not in request.headers
    assert request.headers["anthropic-version"]
