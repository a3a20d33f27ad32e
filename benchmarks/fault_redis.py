"""A Redis outage of 30 s: no accepted run is lost, no process needs a manual restart (run by hand).

    PYTHONPATH=src .venv/bin/python benchmarks/fault_redis.py [--outage 30] [--runs 10]

Starts a throw-away embedded PostgreSQL 18 (migrated to head), a `redis-server` of its own on a
free port (append-only file on, as in the Compose file) and one real `tbd-agents worker` (threads
pool, 4 runs at once), and, in this process, the API's `Runtime` with the default settings
(RUN_DISPATCH_RETRY_SECONDS=10, RUN_DISPATCH_DEADLINE_SECONDS=900). Every run executes a small
executor: three events 0.5 s apart, then completed.

1. `--runs` runs are started before the outage (some are in progress when Redis stops);
2. Redis is stopped with SIGTERM for `--outage` seconds; `--runs` runs are started during it,
   spread over the outage (the API accepts them; they cannot be queued);
3. Redis is started again on the same port, and `--runs` more runs are started.

Reported: how each group of runs ended (all must be completed), whether the worker is the same
process and still alive, when the worker consumed again after Redis came back, and how long the
runs accepted during the outage took to complete after it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from tbd_agents.config import Settings
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.runtime.contracts import EventSink, EventType, HaltSignal, RunOutcome
from tbd_agents.runtime.service import Runtime
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.schema import TABLES

ROOT = Path(__file__).resolve().parents[1]
TASKS = TABLES["task_executions"]


class StepExecutor:
    """Three events 0.5 s apart, then completed: runs that are in progress for 1.5 s."""

    async def execute(self, task: TaskExecution, sink: EventSink, halt: HaltSignal) -> RunOutcome:
        for step in range(3):
            await sink.emit(EventType.MESSAGE_DELTA, {"text": f"step {step}"})
            await asyncio.sleep(0.5)
        return RunOutcome(TaskStatus.COMPLETED, result="ok", turns=1)

    async def aclose(self) -> None:
        return None


def build_step_executor(context: Any) -> StepExecutor:
    return StepExecutor()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Redis:
    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--save", ""],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            probe = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            )
            if probe.stdout.strip() == "PONG":
                return
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`tbd-agents worker` with the CLI's default pool (threads, 4 runs at once)."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", "from tbd_agents.cli import app; app()", "worker",
             "--pool", "threads", "--concurrency", "4", "--name", "fault-bench@%h"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def make_workflow(runtime: Runtime) -> str:
    agent, workflow = str(uuid.uuid4()), str(uuid.uuid4())
    assert runtime.db is not None
    async with runtime.db.begin() as conn:
        await conn.execute(insert(TABLES["agents"]).values(id=agent, name="bench"))
        await conn.execute(insert(TABLES["workflows"]).values(id=workflow, agent_id=agent))
    return workflow


async def start_runs(runtime: Runtime, workflow: str, n: int, spread: float) -> list[str]:
    """`n` runs, started `spread / n` seconds apart."""
    ids = []
    for _ in range(n):
        ids.append((await runtime.start_run(workflow, "steps")).id)
        if spread:
            await asyncio.sleep(spread / n)
    return ids


async def outcomes(runtime: Runtime, ids: list[str]) -> list[tuple[str, Any, Any, Any]]:
    assert runtime.db is not None
    async with runtime.db.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    TASKS.c.status, TASKS.c.started_at, TASKS.c.finished_at, TASKS.c.worker
                ).where(TASKS.c.id.in_(ids))
            )
        ).all()
    return [(r.status, r.started_at, r.finished_at, r.worker) for r in rows]


async def bench(args: argparse.Namespace, tmp: Path) -> None:
    from tbd_agents.security.cipher import generate_fernet_key
    from tbd_agents.storage.postgres.migrate import prepare_database

    key = f"1:{generate_fernet_key()}"
    prepared = await prepare_database(Settings(data_dir=tmp, token_encryption_key=key))
    redis = Redis(tmp)
    redis.start()
    settings = Settings(
        postgres_uri=prepared.url.render_as_string(hide_password=False),
        token_encryption_key=key,
        data_dir=tmp,
        redis_url=f"redis://127.0.0.1:{redis.port}/0",
        run_queue=f"bench-{uuid.uuid4().hex[:8]}",
        run_executor="benchmarks.fault_redis:build_step_executor",
    )
    env = dict(os.environ)
    env.update(
        POSTGRES_URI=settings.postgres_uri or "",
        REDIS_URL=settings.redis_url or "",
        RUN_QUEUE=settings.run_queue,
        RUN_EXECUTOR=settings.run_executor,
        TOKEN_ENCRYPTION_KEY=key,
        DATA_DIR=str(tmp),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        LOG_LEVEL="INFO",
    )
    log_path = tmp / "worker.log"
    worker = start_worker(env, log_path)
    engine = create_engine(prepared.url, pool_size=10)
    runtime = await Runtime.open(settings, engine, role="api")
    await runtime.start()
    try:
        while "ready on queue" not in log_path.read_text(errors="replace"):
            if worker.poll() is not None:
                raise RuntimeError(log_path.read_text(errors="replace"))
            await asyncio.sleep(0.2)
        pid = worker.pid
        workflow = await make_workflow(runtime)

        before = await start_runs(runtime, workflow, args.runs, 1.0)
        await asyncio.sleep(0.5)  # the last ones are in progress
        redis.stop()
        stopped = time.time()
        during = await start_runs(runtime, workflow, args.runs, args.outage * 0.9)
        deferred = sum(runtime.dispatch_deferred(t) for t in during)
        await asyncio.sleep(max(0.0, args.outage - (time.time() - stopped)))
        alive_in_outage = worker.poll() is None
        redis.start()
        back = time.time()
        after = await start_runs(runtime, workflow, args.runs, 0.0)

        groups = {"before": before, "during": during, "after": after}
        deadline = time.monotonic() + 300
        while True:
            ended = [
                row
                for ids in groups.values()
                for row in await outcomes(runtime, ids)
                if row[0] not in ("pending", "running")
            ]
            if len(ended) == 3 * args.runs or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        all_done = time.time()

        print(f"outage {args.outage:g} s; load average {os.getloadavg()[0]:.1f}")
        print("| runs started | runs | completed | other |\n|---|---|---|---|")
        for name, ids in groups.items():
            rows = await outcomes(runtime, ids)
            completed = sum(1 for r in rows if r[0] == "completed")
            others = sorted({r[0] for r in rows if r[0] != "completed"})
            print(f"| {name} the outage | {len(ids)} | {completed} | {', '.join(others) or '-'} |")
        during_rows = await outcomes(runtime, during)
        finished = [r[2].timestamp() for r in during_rows if r[2] is not None]
        started = [r[1].timestamp() for r in during_rows if r[1] is not None]
        workers = {r[3].split(":")[1] for g in groups.values() for r in await outcomes(runtime, g)
                   if r[3]}  # fmt: skip
        text = log_path.read_text(errors="replace")
        reconnects = re.findall(
            r"^(\S+ \S+) INFO celery\.worker\.consumer\.connection: Connected", text, re.M
        )
        print(
            f"- accepted during the outage with X-Run-Dispatch: deferred: {deferred} of {len(during)}"
        )
        print(
            f"- worker alive during the outage: {alive_in_outage}; alive at the end: "
            f"{worker.poll() is None}; same pid {pid} ran every run: {workers == {str(pid)}}"
        )
        if len(reconnects) > 1:
            from datetime import datetime

            again = datetime.strptime(reconnects[-1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            print(f"- worker consuming again {again - back:.1f} s after Redis was back")
        if started and finished:
            print(
                f"- runs accepted during the outage: first started {min(started) - back:.1f} s, "
                f"last completed {max(finished) - back:.1f} s after Redis was back"
            )
        print(f"- every run ended {all_done - back:.1f} s after Redis was back")
    finally:
        await runtime.aclose(drain_seconds=2)
        await engine.dispose()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        print(f"- worker exit code after SIGTERM: {worker.returncode}")
        redis.stop()
        await prepared.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--outage", type=float, default=30.0, help="seconds Redis is down")
    parser.add_argument("--runs", type=int, default=10, help="runs per group")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tbd-fault-redis-") as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
