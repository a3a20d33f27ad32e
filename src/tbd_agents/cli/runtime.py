"""`tbd-agents worker` and `tbd-agents scheduler`: the processes of a scaled-out deployment.

- `worker` starts a Celery worker on REDIS_URL that executes queued runs (any number of them,
  on any number of machines sharing the database and Redis).
- `scheduler` fires scheduled agents. Several can run at once (each occurrence is claimed once
  in the database). Without REDIS_URL it also executes the runs it starts, in-process.

Both take their database from the settings like the API: PostgreSQL (POSTGRES_URI, or the
embedded server; they refuse to start on a database that is not at the current Alembic
revision) or, with DB_BACKEND=mongo, MongoDB (MONGO_URI / MONGO_DB_NAME).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from enum import StrEnum
from typing import Annotated

import typer

from tbd_agents.cli.common import friendly_errors, settings
from tbd_agents.config import Settings
from tbd_agents.logs import configure_logging

app = typer.Typer(add_completion=False)


class Pool(StrEnum):
    THREADS = "threads"
    SOLO = "solo"
    PREFORK = "prefork"


@app.command()
@friendly_errors
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, help="Runs executed at once by this worker.")
    ] = 4,
    pool: Annotated[
        Pool,
        typer.Option(
            help="threads: runs share one event loop (default; runs are I/O bound); "
            "solo: one run at a time; prefork: one process per run slot."
        ),
    ] = Pool.THREADS,
    name: Annotated[
        str | None, typer.Option(help="Worker name (default tbd-worker-<pid>@<host>).")
    ] = None,
) -> None:
    """Run a Celery worker that executes queued runs (needs REDIS_URL).

    Stop it with SIGTERM or Ctrl-C: the runs in progress finish first (warm shutdown), queued
    runs stay in Redis for the other workers. A worker killed outright leaves its runs to the
    lease reaper, which marks them failed after RUN_LEASE_SECONDS.
    """
    from tbd_agents.embeddings.factory import prefetch_model
    from tbd_agents.runtime.celery_app import install_worker_hooks, make_celery

    config = settings()
    configure_logging(config)
    prefetch_model(config)  # once per machine, before the pool's processes start
    celery = make_celery(config)
    install_worker_hooks(config, prefork=pool is Pool.PREFORK)
    concurrency = 1 if pool is Pool.SOLO else concurrency
    node = name or f"tbd-worker-{os.getpid()}@{socket.gethostname()}"
    celery.worker_main(
        [
            "worker",
            f"--pool={pool.value}",
            f"--concurrency={concurrency}",
            f"--queues={config.run_queue}",
            f"--hostname={node}",
            f"--loglevel={config.log_level.upper()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


async def _scheduler(config: Settings) -> None:
    from tbd_agents.runtime.service import process_runtime

    async with process_runtime(config, "scheduler") as runtime:
        where = "Celery workers" if runtime.distributed else "this process (no REDIS_URL)"
        typer.echo(
            f"Scheduler {runtime.worker_id}: polling every {config.scheduler_poll_seconds:g} s; "
            f"runs execute on {where}.",
            err=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start(scheduler=True)
        await stop.wait()
        typer.echo("Scheduler stopping: letting runs in progress finish…", err=True)
        await runtime.aclose(drain_seconds=config.run_lease_seconds)


@app.command()
@friendly_errors
def scheduler(
    poll_seconds: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="Seconds between looks for due schedules (SCHEDULER_POLL_SECONDS)."
        ),
    ] = None,
) -> None:
    """Fire scheduled agents (several schedulers may run at once; each occurrence fires once).

    Stop it with SIGTERM or Ctrl-C; without REDIS_URL, runs it started in-process get
    RUN_LEASE_SECONDS to finish and are then halted.
    """
    config = settings()
    if poll_seconds is not None:
        config = config.model_copy(update={"scheduler_poll_seconds": poll_seconds})
    configure_logging(config)
    asyncio.run(_scheduler(config))


if __name__ == "__main__":
    app()
