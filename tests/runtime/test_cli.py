"""`tbd-agents worker` and `tbd-agents scheduler` as processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.storage.postgres.schema import TABLES
from tests.runtime.conftest import (
    ROOT,
    TBD_AGENTS,
    make_workflow,
    runtime_settings,
    settings_env,
)


def test_worker_without_redis_says_what_to_set(module_db: URL) -> None:
    env = settings_env(runtime_settings(module_db))
    result = subprocess.run(
        [*TBD_AGENTS, "worker"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Celery workers need Redis: set REDIS_URL" in result.stderr


async def test_scheduler_process_fires_a_due_schedule_and_stops_on_sigterm(
    module_db: URL, db: AsyncEngine, tmp_path: Path
) -> None:
    workflow = await make_workflow(db)
    schedule_id = "cli-schedule"
    async with db.begin() as conn:
        await conn.execute(
            insert(TABLES["scheduled_agents"]).values(
                id=schedule_id,
                workflow_id=workflow,
                prompt="emit:1",
                interval_value=1,
                interval_unit="hours",
                next_run_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    env = settings_env(runtime_settings(module_db, scheduler_poll_seconds=0.2))
    log = (tmp_path / "scheduler.log").open("wb")
    proc = subprocess.Popen(
        [*TBD_AGENTS, "scheduler"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    tasks = TABLES["task_executions"]
    try:
        deadline = time.monotonic() + 60
        while True:
            async with db.connect() as conn:
                done = (
                    await conn.execute(
                        select(func.count())
                        .select_from(tasks)
                        .where(tasks.c.scheduled_agent_id == schedule_id)
                        .where(tasks.c.status == "completed")
                    )
                ).scalar_one()
            if done:
                break
            assert proc.poll() is None, (tmp_path / "scheduler.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
            await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "scheduler.log").read_text()
    assert "runs execute on this process (no REDIS_URL)" in output
    assert done == 1
