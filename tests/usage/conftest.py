"""Fixtures of the usage tests: the API app on each backend (PostgreSQL: a migrated database per
module; MongoDB: the in-process emulation), with its usage store, and API keys of distinct users."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.observability.usage.records import UsageCall
from tbd_agents.observability.usage.store import UsageStore, usage_store_for
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import DocumentStore
from tests.api.conftest import make_settings
from tests.engine.protocol_server import ProtocolServer
from tests.support import pg
from tests.support.mongo import make_mongo_store

BACKENDS = ("pg", "mongo")


@pytest.fixture(scope="module")
def usage_db(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, prefix="usage")
    yield url
    pg.drop_database(url)


@dataclass
class UsageApi:
    name: str
    app: FastAPI
    store: DocumentStore
    usage: UsageStore

    async def client(self, owner: str | None = None, *, admin: bool = False) -> httpx.AsyncClient:
        owner = owner or f"user-{uuid.uuid4().hex[:8]}"
        scope = KeyScope.ADMIN if admin else KeyScope.USER
        async with self.store.unit_of_work() as repos:
            key = (await ApiKeys(repos).create(owner, scope=scope, name="test")).plaintext
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://api",
            headers={"Authorization": f"Bearer {key}"},
        )


@pytest.fixture(params=BACKENDS)
async def uapi(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UsageApi]:
    """The API app on one backend (each test once per backend)."""
    if request.param == "pg":
        url: URL = request.getfixturevalue("usage_db")
        store: Any = PostgresStore(create_engine(url, pool_size=4, max_overflow=4), url=url)
        settings = make_settings(tmp_path)
    else:
        store = await make_mongo_store()
        settings = make_settings(tmp_path, db_backend="mongo", postgres_uri=None)
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield UsageApi(request.param, app, store, usage_store_for(store))
    await store.close()


def call(
    key: str | None = None,
    *,
    at: datetime,
    cost: str = "0.001",
    tokens: tuple[int, int] = (100, 20),
    **ids: Any,
) -> UsageCall:
    """A usage call of known numbers (`ids`: user_id, agent_id, model…)."""
    values: dict[str, Any] = {"model": "gpt-4o", "purpose": "turn"} | ids
    return UsageCall(
        call_key=key or uuid.uuid4().hex,
        at=at.astimezone(UTC),
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=Decimal(cost),
        **values,
    )


@pytest.fixture(scope="session")
def protocol_server() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture
def model(protocol_server: ProtocolServer) -> Iterator[ProtocolServer]:
    """The local model server, its script and recorded requests emptied."""
    protocol_server.reset()
    yield protocol_server
    protocol_server.reset()
