"""Shared fixtures: one embedded PostgreSQL 18 per test process, the machine's PostgreSQL 15;
and the hooks that run the suite on several worker processes (tests/support/parallel.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tbd_agents.config_legacy import LEGACY, Fate
from tests.support import parallel, pg

# Tests never see a developer's settings: every variable of ours comes from the test itself.
_OURS = ("DB_", "POSTGRES_", "MONGO_", "VECTOR_", "COMPOSE_", "QDRANT_", "REDIS_")
_OURS += ("EMBEDDING_", "KNOWLEDGE_", "MEMORY_", "PROMPT_", "COMPACTION_", "TOOL_RESULT_")
_OURS += ("DEFAULT_MODEL", "DEFAULT_MAX_TURNS", "GITHUB_TOKEN", "TOOL_DEFINITION_")
_OURS += ("ANTHROPIC_GATEWAY_",)
_OURS += ("OTEL_", "METRICS_", "LOG_FORMAT", "SCHEDULER_METRICS_", "CELERY_QUEUE_")
# ... and the existing TBD Agents' variables that Settings reads (a developer's GITHUB_TOKEN or
# OTEL_EXPORTER_OTLP_ENDPOINT would change what the tests see).
_OURS += tuple(v.name for v in LEGACY if v.fate is not Fate.NOT_READ)
for _name in list(os.environ):
    if _name.upper().startswith(_OURS):
        del os.environ[_name]
# Nothing in the tests may download a model: the default (EMBEDDING_ALLOW_DOWNLOAD=true) is
# turned off for every test and subprocess, and the Hugging Face libraries are told to stay
# offline. A test of the download path sets its own values with monkeypatch.
os.environ["EMBEDDING_ALLOW_DOWNLOAD"] = "false"
# Worker and scheduler processes started by tests serve no metrics port unless the test asks for
# one (the default ports would collide between parallel tests).
os.environ["WORKER_METRICS_PORT"] = "0"
os.environ["SCHEDULER_METRICS_PORT"] = "0"
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """`python -m pytest` runs on pytest-xdist workers unless `-n` / `-p no:xdist` says otherwise
    (before xdist's own hook reads `-n`)."""
    parallel.default_to_parallel(config)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return parallel.auto_workers()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return parallel.make_scheduler(config, log)


@pytest.fixture(scope="session")
def pg18_server() -> Iterator[str]:
    """libpq URI of an embedded PostgreSQL 18 + pgvector, started once per test process (each
    xdist worker has its own, in its own temp dir on its own Unix socket)."""
    # Not under pytest's temp dir: see pg.private_dir.
    uri = pg.start_embedded()
    yield uri
    pg.stop_embedded(uri)  # before the session ends: see pg.stop_embedded


@pytest.fixture(scope="session")
def pg15_server() -> str:
    """libpq URI of the machine's PostgreSQL 15 (127.0.0.1:5432, trust auth, no pgvector)."""
    return pg.PG15_URI
