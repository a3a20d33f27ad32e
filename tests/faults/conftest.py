"""The fault suite: every test here breaks something real (a server, a signal, a disk, a race)
and checks that the hub heals or answers as documented in docs/operations.md."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.storage.postgres.engine import create_engine

# The API fixtures (a migrated embedded PostgreSQL per module, the app, users' clients).
from tests.api.conftest import admin, alice, api, api_db, bob, fresh_api  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
async def db(module_db: URL) -> AsyncIterator[AsyncEngine]:
    """An engine on the module's database (`module_db`, from tests/faults/redis_support.py, which
    the module imports) for the test's own reads and writes."""
    engine = create_engine(module_db, application_name="fault-tests", pool_size=5)
    yield engine
    await engine.dispose()
