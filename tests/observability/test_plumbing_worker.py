"""The metrics port of real `tbd-agents worker` processes: the prefork pool's children are added
up (prometheus_client's multiprocess mode), a child's counters survive its death while its live
gauges leave the sum; the threads pool is one process. And the port's access rule."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.config import Settings
from tbd_agents.errors import ConfigurationError
from tbd_agents.observability.exposition import start_metrics_server
from tbd_agents.runtime.service import Runtime
from tests.observability.conftest import Samples, samples, value
from tests.runtime.conftest import (
    TBD_AGENTS,
    WorkerProcess,
    celery_settings,
    db,
    make_workflow,
    module_db,
    redis_available,
    runtime_settings,
    settings_env,
)
from tests.runtime.test_runs import collect
from tests.runtime.test_workers import wait_for
from tests.support.otlp_receiver import OtlpHttpReceiver, ReceivedSpan

__all__ = ["db", "module_db"]  # fixtures

PROBE = "tests.observability.probe_executor:build_executor"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def config(module_db: URL) -> Settings:
    if not redis_available():
        pytest.fail("Redis is not reachable at 127.0.0.1:6379: start redis-server")
    return celery_settings(module_db).model_copy(update={"run_executor": PROBE})


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    for worker in started:
        try:
            worker.proc.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()


def start_worker(
    config: Settings,
    tmp: Path,
    pool: str,
    port: int,
    multiproc: Path | None = None,
    **extra: str,
) -> WorkerProcess:
    env = {**settings_env(config), **extra}
    env["WORKER_METRICS_PORT"] = str(port)
    env["METRICS_BIND_HOST"] = "127.0.0.1"
    if multiproc is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    log = tmp / f"worker-{pool}.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [
                *TBD_AGENTS, "worker", "--pool", pool, "--concurrency", "2",
                "--name", f"obs-{pool}@test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}",
            ],
            env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=tmp,
        )  # fmt: skip
    worker = WorkerProcess(pool, proc, log)
    worker.wait_ready()
    return worker


def scrape_port(port: int) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return samples(response.text)


async def scrape_until(port: int, check: str, wanted: float, timeout: float = 20.0) -> Samples:
    """Scrapes until `check` (a gauge without labels) has `wanted` (a child's death is seen by
    the parent a moment after the kill)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await asyncio.to_thread(scrape_port, port)
        if value(found, check) == wanted or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def worker_spans(spans: list[ReceivedSpan]) -> bool:
    """A Celery run span and a SQL statement span have arrived."""
    return any(s.name.startswith("run/") for s in spans) and any(
        s.kind == "CLIENT" and "postgresql" in (s.attributes.get("db.system"),
                                               s.attributes.get("db.system.name"))
        for s in spans
    )  # fmt: skip


def probe(found: Samples) -> float:
    return value(found, "tool_calls_total", tool_name="probe")


async def test_prefork_children_are_added_up_and_a_dead_child_keeps_its_counts(
    db: AsyncEngine, config: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    port, multiproc = free_port(), tmp_path / "prom"
    multiproc.mkdir()
    (multiproc / "counter_99999999.db").write_bytes(b"stale")  # from an earlier start
    receiver = OtlpHttpReceiver().__enter__()
    workers.append(
        start_worker(
            config, tmp_path, "prefork", port, multiproc,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        )
    )  # fmt: skip
    assert not (multiproc / "counter_99999999.db").exists()  # cleared at start
    runtime = await Runtime.open(config, db, role="api")
    try:
        workflow = await make_workflow(db)
        release = tmp_path / "release"
        markers = [tmp_path / "a", tmp_path / "b"]
        runs = [
            await runtime.start_run(workflow, f"count:2;marker:{m};wait:{release}") for m in markers
        ]
        for marker in markers:
            await wait_for(marker, timeout=60)
        pids = [int(m.read_text()) for m in markers]
        assert pids[0] != pids[1] and workers[0].proc.pid not in pids  # two children

        both = await asyncio.to_thread(scrape_port, port)
        assert value(both, "agent_tasks_active") == 2  # livesum over the two children
        assert probe(both) == 4
        assert "python_info" not in {name for name, _ in both}  # the children's sum only

        os.kill(pids[0], signal.SIGKILL)
        one = await scrape_until(port, "agent_tasks_active", 1)
        assert value(one, "agent_tasks_active") == 1  # the dead child's gauge left the sum
        assert probe(one) == 4  # ... and its counter stayed

        release.touch()
        events = await collect(runtime, runs[1].id, timeout=60)
        assert events[-1].data["status"] == "completed"
        third = await runtime.start_run(workflow, "count:3")
        events = await collect(runtime, third.id, timeout=60)
        assert events[-1].data["status"] == "completed"
        done = await asyncio.to_thread(scrape_port, port)
        assert value(done, "agent_tasks_active") == 0
        assert probe(done) == 7
        # each child set up its own exporter after the fork
        spans = await asyncio.to_thread(receiver.wait_for, worker_spans, 30)
        assert {s.service for s in spans} == {"tbd-agents-worker"}
    finally:
        await runtime.aclose(drain_seconds=2)
        receiver.__exit__()


async def test_threads_pool_is_one_process_in_single_process_mode(
    db: AsyncEngine, config: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    port = free_port()
    receiver = OtlpHttpReceiver().__enter__()
    workers.append(
        start_worker(
            config, tmp_path, "threads", port, LOG_FORMAT="json",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        )
    )  # fmt: skip
    runtime = await Runtime.open(config, db, role="api")
    try:
        workflow = await make_workflow(db)
        runs = [await runtime.start_run(workflow, "count:3") for _ in range(2)]
        for run in runs:
            events = await collect(runtime, run.id, timeout=60)
            assert events[-1].data["status"] == "completed"
        found = await asyncio.to_thread(scrape_port, port)
        assert probe(found) == 6
        assert "python_info" in {name for name, _ in found}  # the process's own registry
        assert value(found, "agent_tasks_active") == 0
        # LOG_FORMAT=json: our records and Celery's own are JSON lines (Celery did not take
        # over the root logger's format)
        records = [json.loads(line) for line in workers[0].output().splitlines() if line[:1] == "{"]
        loggers = {r["logger"] for r in records}
        assert any("ready on queue" in r["message"] for r in records)
        assert any(name.startswith("celery") for name in loggers), loggers
        assert "[tasks]" not in workers[0].output()  # no banner between the JSON lines
        # tracing in the worker: Celery's run spans and the statements, as tbd-agents-worker
        spans = await asyncio.to_thread(receiver.wait_for, worker_spans, 30)
        assert {s.service for s in spans} == {"tbd-agents-worker"}
    finally:
        await runtime.aclose(drain_seconds=2)
        receiver.__exit__()


def test_the_metrics_port_applies_the_access_rule(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path, "metrics_bind_host": "127.0.0.1"}
    with_token = start_metrics_server(
        Settings(**base, metrics_token="port-token-123456"), free_port(), "WORKER_METRICS_PORT"
    )
    remote_only = start_metrics_server(
        Settings(**base, metrics_allowed_networks="10.0.0.0/8"), free_port(), "WORKER_METRICS_PORT"
    )
    assert with_token is not None and remote_only is not None
    try:
        url = f"http://127.0.0.1:{with_token.port}"
        assert httpx.get(f"{url}/metrics").status_code == 401
        wrong = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer port-token-123456"})
        assert right.status_code == 200 and "agent_tasks_active" in right.text
        assert httpx.get(f"{url}/other", headers=right.request.headers).status_code == 404
        refused = httpx.get(f"http://127.0.0.1:{remote_only.port}/metrics")
        assert refused.status_code == 403 and "METRICS_TOKEN" in refused.text

        with pytest.raises(ConfigurationError, match="WORKER_METRICS_PORT"):
            start_metrics_server(Settings(**base), with_token.port, "WORKER_METRICS_PORT")
        assert start_metrics_server(Settings(**base), 0, "WORKER_METRICS_PORT") is None
        assert (
            start_metrics_server(
                Settings(**base, metrics_enabled=False), free_port(), "WORKER_METRICS_PORT"
            )
            is None
        )
    finally:
        with_token.close()
        remote_only.close()


def test_the_scheduler_serves_its_metrics_port_and_stops_cleanly(
    module_db: URL, tmp_path: Path
) -> None:
    port = free_port()
    env = settings_env(runtime_settings(module_db, scheduler_poll_seconds=0.2))
    env.update(SCHEDULER_METRICS_PORT=str(port), METRICS_TOKEN="sched-token-123456")
    log = tmp_path / "scheduler.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [*TBD_AGENTS, "scheduler"], env=env, cwd=tmp_path, stdout=handle,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:  # until the process has opened its port
            try:
                refused = httpx.get(url, timeout=5)
                break
            except httpx.ConnectError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert refused.status_code == 401
        scraped = httpx.get(url, headers={"Authorization": "Bearer sched-token-123456"})
        assert scraped.status_code == 200
        assert "tbd_scheduler_lag_seconds" in scraped.text
        while "polling every" not in log.read_text():  # started: SIGTERM is a clean stop now
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()
