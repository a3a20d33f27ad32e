"""Run dispatch latency and throughput through Celery workers with a no-op model (run by hand).

    .venv/bin/python benchmarks/runtime_bench.py [--workers 2] [--concurrency 4] [--runs 300]

Starts a throw-away embedded PostgreSQL 18 in a temporary directory (migrated to head) and real
`tbd-agents worker` processes on the machine's Redis (redis://127.0.0.1:6379/12, a queue of its
own). Every run executes a no-op executor (one `message` event, then completed), so the numbers
are the runtime's own cost: claim, lease, stored-then-published events, final status.

Measured from the API side (a `Runtime` in this process, as the API uses it):
- dispatch latency: `start_run()` called → the run's `running` event received by a follower
  (insert + commit, Celery send, worker pick-up, claim, first event stored and published);
- end-to-end latency: `start_run()` → the final `completed` event received;
- throughput: `--runs` runs submitted at once, until all are completed (from the database).
The same latencies are measured for the in-process backend (no Redis) for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from tbd_agents.config import Settings
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.runtime.contracts import EventSink, EventType, HaltSignal, RunOutcome
from tbd_agents.runtime.service import Runtime
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.schema import TABLES

ROOT = Path(__file__).resolve().parents[1]
REDIS = "redis://127.0.0.1:6379/12"


class NoopExecutor:
    async def execute(self, task: TaskExecution, sink: EventSink, halt: HaltSignal) -> RunOutcome:
        await sink.emit(EventType.MESSAGE, {"role": "assistant", "content": "ok"})
        return RunOutcome(TaskStatus.COMPLETED, result="ok", turns=1)

    async def aclose(self) -> None:
        return None


def build_noop_executor(context: Any) -> NoopExecutor:
    return NoopExecutor()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def make_workflow(runtime: Runtime) -> str:
    agent, workflow = str(uuid.uuid4()), str(uuid.uuid4())
    async with runtime.db.begin() as conn:
        await conn.execute(insert(TABLES["agents"]).values(id=agent, name="bench"))
        await conn.execute(insert(TABLES["workflows"]).values(id=workflow, agent_id=agent))
    return workflow


async def latencies(runtime: Runtime, workflow: str, n: int) -> tuple[list[float], list[float]]:
    dispatch, total = [], []
    for _ in range(n):
        started = time.perf_counter()
        task = await runtime.start_run(workflow, "noop")
        async for event in runtime.follow(task.id):
            if event.type == "status" and event.data.get("status") == "running":
                dispatch.append((time.perf_counter() - started) * 1000)
            if event.is_terminal:
                total.append((time.perf_counter() - started) * 1000)
    return dispatch, total


async def throughput(runtime: Runtime, workflow: str, n: int) -> float:
    tasks = TABLES["task_executions"]
    started = time.perf_counter()
    sem = asyncio.Semaphore(32)

    async def submit() -> None:
        async with sem:
            await runtime.start_run(workflow, "noop")

    await asyncio.gather(*(submit() for _ in range(n)))
    while True:
        async with runtime.db.connect() as conn:
            done = (
                await conn.execute(
                    select(func.count())
                    .select_from(tasks)
                    .where(tasks.c.workflow_id == workflow, tasks.c.status == "completed")
                )
            ).scalar_one()
        if done >= n:
            return n / (time.perf_counter() - started)
        await asyncio.sleep(0.05)


def start_workers(settings: Settings, count: int, concurrency: int, log_dir: Path) -> list[Any]:
    env = dict(os.environ)
    env.update(
        POSTGRES_URI=settings.postgres_uri or "",
        REDIS_URL=REDIS,
        RUN_QUEUE=settings.run_queue,
        RUN_EXECUTOR="benchmarks.runtime_bench:build_noop_executor",
        TOKEN_ENCRYPTION_KEY=settings.token_encryption_key.get_secret_value()  # type: ignore[union-attr]
        if settings.token_encryption_key
        else "",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        LOG_LEVEL="WARNING",
    )
    procs = []
    for i in range(count):
        log = (log_dir / f"worker{i}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", "from tbd_agents.cli import app; app()", "worker", "--pool", "threads",
                 "--concurrency", str(concurrency), "--name", f"bench{i}@%h"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
    return procs


async def bench(args: argparse.Namespace, tmp: Path) -> None:
    from tbd_agents.security.cipher import generate_fernet_key
    from tbd_agents.storage.postgres.migrate import prepare_database

    key = f"1:{generate_fernet_key()}"
    embedded = Settings(data_dir=tmp, token_encryption_key=key)
    prepared = await prepare_database(embedded)
    uri = prepared.url.render_as_string(hide_password=False)
    base = Settings(postgres_uri=uri, token_encryption_key=key, data_dir=tmp,
                    run_executor="benchmarks.runtime_bench:build_noop_executor")  # fmt: skip
    engine = create_engine(prepared.url, pool_size=20, max_overflow=10)
    rows: list[tuple[str, str]] = []
    try:
        local = await Runtime.open(base, engine, role="bench")
        workflow = await make_workflow(local)
        await latencies(local, workflow, 5)  # warm-up
        dispatch, total = await latencies(local, workflow, args.samples)
        rate = await throughput(local, workflow, args.runs)
        await local.aclose()
        rows += [
            ("in-process: dispatch → running event, p50 / p95", f"{pct(dispatch, .5):.1f} / {pct(dispatch, .95):.1f} ms"),
            ("in-process: start → completed event, p50 / p95", f"{pct(total, .5):.1f} / {pct(total, .95):.1f} ms"),
            (f"in-process: {args.runs} runs at once", f"{rate:.0f} runs/s"),
        ]  # fmt: skip

        celery = base.model_copy(
            update={"redis_url": REDIS, "run_queue": f"bench-{uuid.uuid4().hex[:8]}"}
        )
        procs = start_workers(celery, args.workers, args.concurrency, tmp)
        try:
            remote = await Runtime.open(celery, engine, role="bench")
            workflow = await make_workflow(remote)
            await latencies(remote, workflow, 5)  # waits for the workers to be up
            dispatch, total = await latencies(remote, workflow, args.samples)
            rate = await throughput(remote, workflow, args.runs)
            await remote.aclose()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
        label = f"Celery ({args.workers} workers x {args.concurrency} threads)"
        rows += [
            (f"{label}: dispatch → running event, p50 / p95", f"{pct(dispatch, .5):.1f} / {pct(dispatch, .95):.1f} ms"),
            (f"{label}: start → completed event, p50 / p95", f"{pct(total, .5):.1f} / {pct(total, .95):.1f} ms"),
            (f"{label}: {args.runs} runs at once", f"{rate:.0f} runs/s"),
        ]  # fmt: skip
    finally:
        await engine.dispose()
        await prepared.aclose()
    print(
        f"samples={args.samples} (median of sequential runs); load average {os.getloadavg()[0]:.1f}"
    )
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"(mean dispatch {statistics.mean(dispatch):.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tbd-runtime-bench-") as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
