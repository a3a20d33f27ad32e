"""The API on a real socket for the tests of the agents' endpoints (`/v1`, `/mcp`): one migrated
embedded-PostgreSQL database per module, the scripted model server as the agents' provider, and
API keys of fresh users (modelled on tests/client/conftest.py)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import make_settings
from tests.api.live import live_server
from tests.engine.protocol_server import ProtocolServer
from tests.support import pg

SERVERS = Path(__file__).resolve().parents[1] / "engine" / "servers"


@dataclass
class LiveApi:
    url: str
    db: URL

    def key(self, owner: str | None = None, scope: KeyScope = KeyScope.USER) -> str:
        """A new API key of `owner` (a fresh user by default)."""
        owner = owner or f"user-{uuid.uuid4().hex[:8]}"

        async def make() -> str:
            store = PostgresStore(create_engine(self.db, pool_size=1), url=self.db)
            try:
                async with store.unit_of_work() as repos:
                    created = await ApiKeys(repos).create(owner, scope=scope, name="t")
                return created.plaintext
            finally:
                await store.close()

        return asyncio.run(make())


@contextmanager
def running_api(pg18_server: str, tmp: Path, prefix: str) -> Iterator[LiveApi]:
    db = pg.create_migrated_database(pg18_server, prefix=prefix)
    settings = make_settings(
        tmp,
        postgres_uri=db.render_as_string(hide_password=False),
        postgres_pool_size=4,
        outbound_allowed_hosts="127.0.0.1",  # the agents' provider is the local scripted model
    )
    try:
        with live_server(settings) as url:
            yield LiveApi(url, db)
    finally:
        pg.drop_database(db)


class User:
    """One user of the live API, making records with its key."""

    def __init__(self, api: LiveApi, protocol: ProtocolServer) -> None:
        self.identity = f"user-{uuid.uuid4().hex[:8]}"
        self.key = api.key(self.identity)
        self.http = httpx.Client(
            base_url=api.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        )
        self.protocol = protocol
        self._provider: str | None = None

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body)
        assert response.status_code in (200, 201), response.text
        data: dict[str, Any] = response.json()
        return data

    def provider(self) -> str:
        """The user's provider: the scripted model server (created once)."""
        if self._provider is None:
            name = uuid.uuid4().hex[:8]
            self.post("/api/tokens", {"name": f"k-{name}", "value": "sk-not-a-real-secret"})
            self._provider = self.post(
                "/api/providers",
                {
                    "name": f"p-{name}",
                    "provider_type": "custom",
                    "api_key_token_name": f"k-{name}",
                    "base_url": f"{self.protocol.url}/v1",
                },
            )["id"]
        return self._provider

    def agent(self, name: str | None = None, **fields: Any) -> dict[str, Any]:
        """An agent on the scripted model."""
        body = {"name": name or f"agent-{uuid.uuid4().hex[:8]}", "model": "llama3.1"}
        return self.post("/api/agents", {**body, "provider_id": self.provider(), **fields})

    def demo_mcp_server(self) -> str:
        """A stdio MCP server record running tests/engine/servers/demo_mcp.py (tool `add`),
        its source passed inline: a confined stdio server may not see the test tree."""
        source = (SERVERS / "demo_mcp.py").read_text()
        return self.post(
            "/api/mcps",
            {
                "name": f"demo-{uuid.uuid4().hex[:8]}",
                "transport_type": "stdio",
                "connection_config": {
                    "command": sys.executable,
                    "args": ["-I", "-c", source, "stdio"],
                },
                "allowed_tools": ["add"],
            },
        )["id"]

    def blocking_guardrail(self, guardrail_type: str, pattern: str) -> str:
        return self.post(
            "/api/guardrails",
            {
                "name": f"g-{uuid.uuid4().hex[:8]}",
                "guardrail_type": guardrail_type,
                "action": "block",
                "patterns": [pattern],
            },
        )["id"]

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def protocol_server() -> Iterator[ProtocolServer]:
    """The scripted model server of a module's live API tests."""
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture
def user(api: LiveApi, protocol_server: ProtocolServer) -> Iterator[User]:
    """A fresh user of the module's live API (its `api` fixture), on a reset model server."""
    protocol_server.reset()
    u = User(api, protocol_server)
    yield u
    u.close()
