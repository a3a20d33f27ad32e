"""API test fixtures: a migrated database on the embedded PostgreSQL 18 per test module, the app
with its lifespan running, and HTTP clients holding real API keys of distinct users."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

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
from tests.support import pg

#: A Fernet key used only by the tests (never a real secret).
TEST_KEY = "1:" + "A" * 43 + "="


@pytest.fixture(scope="module")
def api_db(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, prefix="api")
    yield url
    pg.drop_database(url)


@dataclass
class Api:
    app: FastAPI
    store: PostgresStore
    settings: Settings

    async def key(self, owner: str | None = None, scope: KeyScope = KeyScope.USER) -> str:
        owner = owner or f"user-{uuid.uuid4().hex[:8]}"
        async with self.store.unit_of_work() as repos:
            created = await ApiKeys(repos).create(owner, scope=scope, name="test")
        return created.plaintext

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://api", headers=headers
        )

    async def user(
        self, owner: str | None = None, scope: KeyScope = KeyScope.USER
    ) -> httpx.AsyncClient:
        return self.client(await self.key(owner, scope))


def make_settings(tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp,
        "token_encryption_key": TEST_KEY,
        "postgres_uri": "postgresql://unused@127.0.0.1:1/unused",
        "embedding_provider": "hashing",
        # no background sweep: tests that count statements would see its queries
        "memory_expiry_sweep_seconds": 0,
        # The API tests act as ordinary users on every resource, stdio MCP servers and custom
        # tools included: the operator opt-ins are on here. The gates themselves (default off)
        # are tested in tests/security/test_authz*.py.
        "user_stdio_mcp_commands": f"echo,{sys.executable}",
        "allow_user_custom_tools": True,
        # The tests send many bad credentials from one address on purpose.
        "auth_failure_limit": 100_000,
        # No plugin records in the resources these tests count (tests/plugins covers them).
        "plugins_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def api(api_db: URL, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    store = PostgresStore(create_engine(api_db, pool_size=4, max_overflow=4), url=api_db)
    settings = make_settings(tmp_path_factory.mktemp("api"))
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, settings)
    await store.close()


@pytest.fixture
async def alice(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with await api.user() as client:
        yield client


@pytest.fixture
async def bob(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with await api.user() as client:
        yield client


@pytest.fixture
async def admin(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with await api.user(f"admin-{uuid.uuid4().hex[:6]}", KeyScope.ADMIN) as client:
        yield client


@pytest.fixture
async def fresh_api(pg18_server: str, tmp_path: Path) -> AsyncIterator[Api]:
    """An app on its own new database (for tests that act on every row of a table)."""
    url = pg.create_migrated_database(pg18_server, prefix="apifresh")
    store = PostgresStore(create_engine(url, pool_size=2, max_overflow=2), url=url)
    settings = make_settings(tmp_path / "fresh")
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, settings)
    await store.close()
    pg.drop_database(url)
