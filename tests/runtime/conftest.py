"""Fixtures of the runtime tests: a migrated database per test module, the `rt` fixture that
runs a test once per backend (PostgreSQL, and MongoDB through the in-process emulation), a
workflow factory, settings for the runtime, Redis on a test database number, and real Celery
worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.config import Settings
from tbd_agents.domain.models import Agent, TaskExecution, Workflow
from tbd_agents.runtime.service import Runtime
from tbd_agents.runtime.store import RunStore, as_run_store
from tbd_agents.security.cipher import generate_fernet_key
from tbd_agents.storage.mongo.codec import bson_value, id_forms
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.postgres.schema import TABLES
from tbd_agents.storage.protocol import DocumentStore
from tests.support import pg
from tests.support.mongo import make_mongo_store

ROOT = Path(__file__).resolve().parents[2]
REDIS_TEST_URL = "redis://127.0.0.1:6379/11"
#: The `tbd-agents` command line, as installed (the registered commands, run by this Python).
TBD_AGENTS = [sys.executable, "-c", "from tbd_agents.cli import app; app()"]
FERNET = f"1:{generate_fernet_key()}"


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def runtime_settings(url: URL | None, **overrides: Any) -> Settings:
    """Settings for a runtime on the database at `url` (None: MongoDB, `db_backend="mongo"`)."""
    values: dict[str, Any] = {
        "postgres_uri": url.render_as_string(hide_password=False) if url is not None else None,
        "db_backend": "postgres" if url is not None else "mongo",
        "run_executor": "tests.runtime.scripted:build_executor",
        "run_lease_seconds": 3.0,
        "token_encryption_key": FERNET,
        "webhook_backoff_seconds": 0.2,
        "scheduler_misfire_grace_seconds": 90.0,
        "redis_url": None,
    }
    values.update(overrides)
    return Settings(**values)


def settings_env(config: Settings) -> dict[str, str]:
    """The environment that gives a subprocess the same settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("DB_", "POSTGRES_", "REDIS_", "RUN_", "SCHEDULER_", "WEBHOOK_", "OUTBOUND_")
        )
    }
    for name in (
        "db_backend",
        "postgres_uri",
        "redis_url",
        "run_queue",
        "run_executor",
        "run_lease_seconds",
        "scheduler_misfire_grace_seconds",
        "scheduler_poll_seconds",
        "webhook_backoff_seconds",
        "webhook_allowed_hosts",
        "outbound_allowed_hosts",
        "embedding_provider",
        "data_dir",
        "worker_metrics_port",
        "scheduler_metrics_port",
    ):
        value = getattr(config, name)
        if value is not None:
            env[name.upper()] = str(value)
    assert config.token_encryption_key is not None
    env["TOKEN_ENCRYPTION_KEY"] = config.token_encryption_key.get_secret_value()
    env["LOG_LEVEL"] = "INFO"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src")])
    return env


@pytest.fixture(scope="module")
def module_db(pg18_server: str) -> Iterator[URL]:
    """A migrated database shared by the tests of one module (tests make their own rows)."""
    url = pg.create_migrated_database(pg18_server, "rt")
    yield url
    pg.drop_database(url)


@pytest.fixture
async def db(module_db: URL) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(module_db, application_name="runtime-tests", pool_size=5)
    yield engine
    await engine.dispose()


async def make_workflow(
    target: AsyncEngine | DocumentStore | RtBackend,
    *,
    webhook_url: str | None = None,
    error_webhook_url: str | None = None,
    owner: str | None = None,
) -> str:
    """Store an agent and a workflow of it (through the document store); the workflow id."""
    if isinstance(target, RtBackend):
        store: DocumentStore = target.store
    elif isinstance(target, AsyncEngine):
        store = PostgresStore(target, owns_engine=False)
    else:
        store = target
    async with store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name="runtime test agent"))
        workflow = await repos.workflows.create(
            Workflow(
                agent_id=agent.id,
                title="runtime test workflow",
                webhook_url=webhook_url,
                error_webhook_url=error_webhook_url,
                github_user=owner,
            )
        )
    return str(workflow.id)


@dataclass
class RtBackend:
    """One database the run-time runs on in a test: PostgreSQL or MongoDB (emulated)."""

    name: str
    store: DocumentStore
    engine: AsyncEngine | None = None
    url: URL | None = None

    @property
    def db(self) -> Any:
        """What `Runtime.open` takes for this backend (the engine, or the MongoDB store)."""
        return self.engine if self.engine is not None else self.store

    @property
    def runs(self) -> RunStore:
        return as_run_store(self.db)

    def settings(self, **overrides: Any) -> Settings:
        return runtime_settings(self.url, **overrides)

    async def runtime(self, config: Settings | None = None, *, start: bool = True) -> Runtime:
        runtime = await Runtime.open(
            config or self.settings(), self.db, role="api", store=self.store
        )
        if start:
            await runtime.start()
        return runtime

    async def task(self, task_id: str) -> TaskExecution:
        found = await self.runs.load(task_id)
        assert found is not None, f"no task execution {task_id}"
        return found

    async def set_fields(self, collection: str, record_id: str, **values: Any) -> None:
        """Overwrite stored fields as they are, bypassing the models (e.g. move times back)."""
        if self.engine is not None:
            table = TABLES[collection]
            async with self.engine.begin() as conn:
                await conn.execute(update(table).where(table.c.id == record_id).values(**values))
            return
        database: Any = self.store.database  # type: ignore[attr-defined]
        await database.get_collection(collection).update_one(
            {"_id": {"$in": id_forms(record_id, include_int=True)}},
            {"$set": {k: bson_value(v) for k, v in values.items()}},
        )


#: The backends `rt` runs a test on.
RT_BACKENDS = ("pg", "mongo")


@asynccontextmanager
async def open_backend(request: pytest.FixtureRequest, name: str) -> AsyncIterator[RtBackend]:
    """`name` ("pg" or "mongo") for one test: the module's migrated PostgreSQL database, or a
    fresh emulated MongoDB database."""
    if name == "pg":
        url: URL = request.getfixturevalue("module_db")
        engine = create_engine(url, application_name="runtime-tests", pool_size=5)
        try:
            yield RtBackend("pg", PostgresStore(engine, url=url, owns_engine=False), engine, url)
        finally:
            await engine.dispose()
    else:
        store = await make_mongo_store()
        try:
            yield RtBackend("mongo", store)
        finally:
            await store.close()


@pytest.fixture(params=RT_BACKENDS)
async def rt(request: pytest.FixtureRequest) -> AsyncIterator[RtBackend]:
    """The test's database, once per backend (same behaviour expected of both)."""
    async with open_backend(request, request.param) as backend:
        yield backend


@dataclass
class WorkerProcess:
    """A real `tbd-agents worker` subprocess."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready on queue" in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} not ready after {timeout}s:\n{self.output()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@dataclass
class WorkerPool:
    config: Settings
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start(
        self, name: str, *, wait: bool = True, pool: str = "solo", concurrency: int = 1
    ) -> WorkerProcess:
        log = self.tmp / f"{name}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(
            [
                *TBD_AGENTS,
                "worker",
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "--name",
                # Node names are global on the broker: unique per xdist worker process.
                f"{name}@test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}",
            ],
            env=settings_env(self.config),
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
        )
        handle.close()
        worker = WorkerProcess(name, proc, log)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.proc.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()


def celery_settings(url: URL) -> Settings:
    return runtime_settings(
        url, redis_url=REDIS_TEST_URL, run_queue=f"test-{uuid.uuid4().hex[:10]}"
    )


@pytest.fixture
def worker_pool(module_db: URL, tmp_path: Path) -> Iterator[WorkerPool]:
    if not redis_available():
        pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL}: start redis-server")
    pool = WorkerPool(celery_settings(module_db), tmp_path)
    yield pool
    pool.stop_all()
