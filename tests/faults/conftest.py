"""The fault suite: every test here breaks something real (a server, a signal, a disk, a race)
and checks that the hub heals or answers as documented in docs/operations.md."""

from __future__ import annotations

import pytest

# The API fixtures (a migrated embedded PostgreSQL per module, the app, users' clients).
from tests.api.conftest import admin, alice, api, api_db, bob, fresh_api  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)
