"""Fixtures of the compatibility tests.

- The same in-process API as tests/api (embedded PostgreSQL): `api`, `alice`, `bob`, `admin`.
- `both` / `pg_api`: the app on PostgreSQL (a migrated database per module) or on MongoDB
  (in-process emulation) with its run-time running the scripted executor, reached through the
  ASGI transport with real API keys; `protocol_server`: a local model for chat turns."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import DocumentStore
from tests.api.conftest import admin, alice, api, api_db, bob, fresh_api, make_settings  # noqa: F401
from tests.engine.protocol_server import ProtocolServer
from tests.support import pg
from tests.support.mongo import make_mongo_store


@pytest.fixture(scope="module")
def compat_db(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, prefix="compat")
    yield url
    pg.drop_database(url)


@pytest.fixture(scope="module")
def protocol_server() -> Iterator[ProtocolServer]:
    """A local server speaking the OpenAI wire format (the engine tests' scripted model)."""
    server = ProtocolServer().start()
    yield server
    server.stop()


@dataclass
class CompatApi:
    """The app with its lifespan (and run-time) running, on one backend."""

    backend: str
    app: FastAPI
    store: DocumentStore

    async def key(self, owner: str | None = None) -> tuple[str, str]:
        owner = owner or f"user-{uuid.uuid4().hex[:8]}"
        async with self.store.unit_of_work() as repos:
            created = await ApiKeys(repos).create(owner, scope=KeyScope.USER, name="compat")
        return created.plaintext, owner

    def client_for(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://compat",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    async def user(self, owner: str | None = None) -> httpx.AsyncClient:
        key, _ = await self.key(owner)
        return self.client_for(key)


def compat_settings(tmp: Path, url: URL | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "run_executor": "tests.runtime.scripted:build_executor",
        "run_lease_seconds": 3.0,
        "outbound_allowed_hosts": "127.0.0.1",
    }
    if url is None:
        values.update(db_backend="mongo", postgres_uri=None)
    else:
        values["postgres_uri"] = url.render_as_string(hide_password=False)
    values.update(overrides)
    return make_settings(tmp, **values)


@asynccontextmanager
async def running_app(
    backend: str, request: pytest.FixtureRequest, tmp: Path
) -> AsyncIterator[CompatApi]:
    if backend == "pg":
        url: URL = request.getfixturevalue("compat_db")
        store: DocumentStore = PostgresStore(create_engine(url, pool_size=4), url=url)
        settings = compat_settings(tmp, url)
    else:
        store = await make_mongo_store()
        settings = compat_settings(tmp, None)
    app = create_app(settings, store)
    try:
        async with app.router.lifespan_context(app):
            yield CompatApi(backend, app, store)
    finally:
        await store.close()


@pytest.fixture(params=("pg", "mongo"))
async def both(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CompatApi]:
    """The app on each run store in turn (the run-time routes behave the same on both)."""
    async with running_app(request.param, request, tmp_path) as running:
        yield running


@pytest.fixture
async def pg_api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CompatApi]:
    """The app on PostgreSQL (routes whose code has no backend-specific part)."""
    async with running_app("pg", request, tmp_path) as running:
        yield running
