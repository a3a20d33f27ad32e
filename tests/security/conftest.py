"""Fixtures of the security regression tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tbd_agents.storage.protocol import DocumentStore
from tests.contract.conftest import BACKENDS, empty_all

#: Backends whose schema has the api_keys table (PostgreSQL 15 carries the document tables only).
KEY_BACKENDS = [b for b in BACKENDS if b.name != "pg15"]


@pytest.fixture(scope="module", params=[pytest.param(b, id=b.name) for b in KEY_BACKENDS])
async def keys_backend(request: pytest.FixtureRequest) -> AsyncIterator[DocumentStore]:
    async with request.param.open(request) as store:
        yield store


@pytest.fixture
async def store(keys_backend: DocumentStore) -> DocumentStore:
    """A store with API keys, its entity collections empty when the test starts."""
    await empty_all(keys_backend)
    return keys_backend
