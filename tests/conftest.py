"""Shared fixtures: one embedded PostgreSQL 18 for the whole run, the machine's PostgreSQL 15."""

from __future__ import annotations

import os

import pytest

from tests.support import pg

# Tests never see a developer's settings: every variable of ours comes from the test itself.
_OURS = ("DB_", "POSTGRES_", "MONGO_", "VECTOR_", "COMPOSE_", "QDRANT_", "REDIS_")
_OURS += ("EMBEDDING_", "KNOWLEDGE_", "MEMORY_")
for _name in list(os.environ):
    if _name.startswith(_OURS):
        del os.environ[_name]


@pytest.fixture(scope="session")
def pg18_server() -> str:
    """libpq URI of an embedded PostgreSQL 18 + pgvector, started once per test run."""
    # Not under pytest's temp dir: see pg.private_dir.
    return pg.start_embedded()


@pytest.fixture(scope="session")
def pg15_server() -> str:
    """libpq URI of the machine's PostgreSQL 15 (127.0.0.1:5432, trust auth, no pgvector)."""
    return pg.PG15_URI
