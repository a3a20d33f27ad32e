"""A Celery worker on the MongoDB profile: runs queued in Redis are executed by a real Celery
worker (in a thread of this process, so that it reaches the same emulated MongoDB data through a
client of its own), its events reach the API side over Redis, and a halt stops it there."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from tbd_agents.config import Settings
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.runtime import celery_app
from tbd_agents.runtime.halt import HaltResult
from tbd_agents.runtime.service import Runtime
from tbd_agents.storage.mongo.repository import MongoStore
from tests.runtime.conftest import REDIS_TEST_URL, make_workflow, redis_available, runtime_settings
from tests.runtime.test_runs import collect
from tests.support.mongo import EMULATION_TARGET, EmulatedClient

DB_NAME = "celery_runtime"


@pytest.fixture
def worker_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[Settings, EmulatedClient]]:
    if not redis_available():
        pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL}: start redis-server")
    client = EmulatedClient(tz_aware=True)
    # The worker opens the store from its settings like `tbd-agents worker`: its client is a
    # second client on the same data.
    monkeypatch.setattr(
        "tbd_agents.storage.mongo.connect.mongo_client", lambda settings: client.sibling()
    )
    settings = runtime_settings(
        None,
        redis_url=REDIS_TEST_URL,
        run_queue=f"test-{uuid.uuid4().hex[:10]}",
        mongo_db_name=DB_NAME,
        data_dir=tmp_path,
    )
    yield settings, client
    state, celery_app._state = celery_app._state, None
    if state is not None:
        state.close()


async def test_a_celery_worker_executes_runs_on_mongodb(
    worker_settings: tuple[Settings, EmulatedClient], tmp_path: Path
) -> None:
    settings, client = worker_settings
    store = MongoStore(client.get_database(DB_NAME), target=EMULATION_TARGET)  # type: ignore[arg-type]
    await store.open()
    celery = celery_app.make_celery(settings)
    with start_worker(celery, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        runtime = await Runtime.open(settings, store, role="api")
        await runtime.start()
        try:
            assert runtime.distributed and runtime.runs.backend == "mongo"
            workflow = await make_workflow(store)
            task = await runtime.start_run(workflow, "emit:3")
            events = await collect(runtime, task.id, timeout=60)
            assert [e.seq for e in events] == list(range(1, 7))
            assert events[0].data["worker"].startswith("worker@")  # not this API runtime
            assert events[-1].data["status"] == "completed"
            stored = await runtime.runs.load(task.id)
            assert stored is not None and stored.celery_task_id == task.id
            assert stored.status is TaskStatus.COMPLETED and stored.response == "done: emit:3"

            marker = tmp_path / "started"
            blocking = await runtime.start_run(workflow, f"marker:{marker};block")
            deadline = time.monotonic() + 30
            while not marker.exists():
                assert time.monotonic() < deadline, "the worker never started the run"
                await asyncio.sleep(0.05)
            follower = asyncio.create_task(collect(runtime, blocking.id, timeout=60))
            assert await runtime.halt(blocking.id, "tester") is HaltResult.HALTING
            halted = await follower
            assert halted[-1].data["status"] == "halted"
        finally:
            await runtime.aclose(drain_seconds=2)
    await store.close()
