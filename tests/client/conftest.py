"""Fixtures of the client and CLI tests: the API on a real socket (uvicorn in a thread, one
migrated embedded-PostgreSQL database per module, runs executed in-process by the real engine),
the scripted model server, and an API key of a fresh user."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import URL

from tbd_agents.client import TbdAgentsClient
from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import make_settings
from tests.api.live import live_server
from tests.engine.protocol_server import ProtocolServer
from tests.support import pg


@dataclass
class Server:
    url: str
    db: URL

    def key(self, owner: str | None = None) -> str:
        """A new API key of `owner` (a fresh user by default)."""
        owner = owner or f"user-{uuid.uuid4().hex[:8]}"

        async def make() -> str:
            store = PostgresStore(create_engine(self.db, pool_size=1), url=self.db)
            try:
                async with store.unit_of_work() as repos:
                    created = await ApiKeys(repos).create(owner, scope=KeyScope.USER, name="t")
                return created.plaintext
            finally:
                await store.close()

        return asyncio.run(make())


@pytest.fixture(scope="package")
def protocol_server() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def server(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = pg.create_migrated_database(pg18_server, prefix="client")
    settings = make_settings(
        tmp_path_factory.mktemp("client"),
        postgres_uri=db.render_as_string(hide_password=False),
        postgres_pool_size=4,
        outbound_allowed_hosts="127.0.0.1",  # the users' provider is the local scripted model
    )
    with live_server(settings) as url:
        yield Server(url, db)
    pg.drop_database(db)


@pytest.fixture(scope="package")
def key(server: Server) -> str:
    return server.key()


@pytest.fixture
def client(server: Server, key: str) -> Iterator[TbdAgentsClient]:
    with TbdAgentsClient(base_url=server.url, token=key, timeout=30) as c:
        yield c


def scripted_agent(client: TbdAgentsClient, protocol_server: ProtocolServer) -> str:
    """An agent whose provider is the scripted model server; its id."""
    name = uuid.uuid4().hex[:8]
    client.tokens.create({"name": f"k-{name}", "value": "sk-not-a-real-secret"})
    provider = client.providers.create(
        {
            "name": f"p-{name}",
            "provider_type": "custom",
            "api_key_token_name": f"k-{name}",
            "base_url": f"{protocol_server.url}/v1",
        }
    )
    agent = client.agents.create(
        {"name": f"scripted-{name}", "model": "llama3.1", "provider_id": provider.id}
    )
    return agent.id
