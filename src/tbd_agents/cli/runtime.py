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
import logging
import os
import signal
import socket
import warnings
from enum import StrEnum
from typing import Annotated

import typer

from tbd_agents.cli.common import friendly_errors, settings
from tbd_agents.config import Settings
from tbd_agents.logs import configure_logging
from tbd_agents.observability.processes import close_process, scheduler_process, worker_process

app = typer.Typer(add_completion=False)
_log = logging.getLogger(__name__)


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

    A Redis outage does not stop it: it reconnects by itself and goes on consuming
    (BROKER_RECONNECT_MAX_RETRIES). It exits with code 0 only when asked to stop; any other
    end (gave up reconnecting, unrecoverable error) exits non-zero, so a supervisor restarts it.
    """
    from celery import signals

    from tbd_agents.embeddings.factory import prefetch_model
    from tbd_agents.runtime.celery_app import install_worker_hooks, make_celery

    config = settings()
    configure_logging(config)
    celery = make_celery(config)
    install_worker_hooks(config, prefork=pool is Pool.PREFORK)
    # metrics mode and port, tracing, Celery's logging: before anything forks, and after the
    # hooks above (its shutdown hooks run after theirs: the closing runtime's spans are flushed)
    worker_process(config, prefork=pool is Pool.PREFORK)
    prefetch_model(config)  # once per machine, before the pool's processes start
    concurrency = 1 if pool is Pool.SOLO else concurrency
    node = name or f"tbd-worker-{os.getpid()}@{socket.gethostname()}"
    signals.celeryd_after_setup.connect(_quiet_cancel_warning, weak=False)
    ended: dict[str, int] = {}

    @signals.worker_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _exit_code(sender: object = None, **_: object) -> None:
        ended["code"] = int(getattr(sender, "exitcode", 0) or 0)

    celery.worker_main(
        [
            # JSON logs: no start-up banner on stdout between the JSON lines
            *(["--quiet"] if config.log_format == "json" else []),
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
    code = ended.get("code", 0)
    if code:  # `worker_main` drops the worker's exit code: a crash looked like a clean stop
        _log.critical(
            "tbd-agents worker %s stopped on an error (exit code %s): see the log above; a "
            "supervisor (systemd, Docker restart policy) restarts it",
            node,
            code,
        )
        raise typer.Exit(code)


def _quiet_cancel_warning(**_: object) -> None:
    """We rely on Celery NOT cancelling a run when the broker connection drops (the run's lease
    keeps it safe, its message is acknowledged when it ends): silence the warning, logged at
    every reconnect, that Celery 6 may change that default. (After Celery's logging set-up,
    which puts its own `always` filter first.)"""
    warnings.filterwarnings(
        "ignore", message=r"(?s).*worker_cancel_long_running_tasks_on_connection_loss"
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
        failure: RuntimeError | None = None
        try:
            await runtime.run_until(stop)
        except RuntimeError as exc:
            failure = exc
            _log.critical("scheduler %s: %s; exiting with code 1", runtime.worker_id, exc)
        typer.echo("Scheduler stopping: letting runs in progress finish…", err=True)
        await runtime.aclose(drain_seconds=config.run_lease_seconds)
        if failure is not None:
            raise typer.Exit(1)


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
    RUN_LEASE_SECONDS to finish and are then halted. Database and Redis outages do not stop
    it: it logs them, backs off and resumes; runs it could not queue are queued once Redis is
    back. It exits with code 0 only when asked to stop.
    """
    config = settings()
    if poll_seconds is not None:
        config = config.model_copy(update={"scheduler_poll_seconds": poll_seconds})
    configure_logging(config)
    server = scheduler_process(config)
    try:
        asyncio.run(_scheduler(config))
    finally:
        close_process(server)


if __name__ == "__main__":
    app()
