"""Celery on Redis: the queue of runs and the workers that execute them.

The broker is `REDIS_URL`; there is no result backend (a run's state lives in the database, where
leases make it trustworthy — Celery reports unknown task ids as PENDING forever). Messages are
acknowledged late and prefetched one at a time, so a worker holds only the run it executes and
queued runs go to whichever worker is free. A message redelivered after a worker died finds its
run no longer pending and does nothing: a run is never executed twice.

A lost broker connection does not stop a worker: Celery reconnects (every 2, 4 … up to 30 s,
for BROKER_RECONNECT_MAX_RETRIES tries, by default forever) on kombu's Redis transport as repaired
in `runtime/broker.py`, and resumes consuming. A run in progress goes on meanwhile (its events
are stored in the database; their live fan-out resumes with Redis). A worker that gives up
exits with a non-zero code (`tbd-agents worker`).

Each worker process runs one asyncio event loop in a background thread, with its own database
engine, Redis connection and executor; Celery's task hands the run to that loop and waits. Stop a
worker with SIGTERM (or Ctrl-C once): Celery's warm shutdown lets the run in progress finish and
leaves queued runs in Redis for the other workers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from celery import Celery, signals
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from tbd_agents.config import Settings, redact_url
from tbd_agents.errors import TbdError
from tbd_agents.logs import protect
from tbd_agents.runtime import broker

_log = logging.getLogger(__name__)

RUN_TASK = "tbd_agents.run"
T = TypeVar("T")
#: Seconds to open a broker connection / to wait for Redis to answer a command. Without them a
#: Redis that stopped answering (paused, network partition) would block a dispatch for ever.
BROKER_CONNECT_TIMEOUT = 5.0
BROKER_SOCKET_TIMEOUT = 10.0


class BrokerUnavailable(TbdError):
    """A run could not be handed to the broker (Redis down or unreachable)."""

    http_status = 503
    code = "broker_unavailable"


def make_celery(settings: Settings) -> Celery:
    """The Celery application of TBD Agents for these settings (REDIS_URL must be set)."""
    if not settings.redis_url:
        from tbd_agents.errors import ConfigurationError

        raise ConfigurationError(
            "Celery workers need Redis: set REDIS_URL (e.g. redis://localhost:6379/0); "
            "without it runs execute in the API process and no worker is needed"
        )
    protect(settings)
    app = Celery("tbd_agents", broker=settings.redis_url, set_as_current=False)
    retries = settings.broker_reconnect_max_retries
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.run_queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=retries or None,  # None: for ever
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_transport_options={
            "visibility_timeout": 3600,
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT,
            "socket_timeout": BROKER_SOCKET_TIMEOUT,
        },
        **broker.celery_options(settings.redis_url),
    )

    # Not shared: Celery copies shared tasks into every app finalized later in the process, and
    # this one closes over `settings` (a second app would run the first one's).
    @app.task(name=RUN_TASK, ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def run_task(task_id: str) -> str:
        return worker_state(settings).execute(task_id)

    return app


class CeleryBackend:
    """Sends runs to the Celery queue `RUN_QUEUE`."""

    name = "celery"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_celery(settings)

    async def submit(self, task_id: str) -> str | None:
        """Queue the run; BrokerUnavailable when Redis cannot take it (down, unreachable)."""

        def send() -> str:
            result = self.app.send_task(
                RUN_TASK, args=[task_id], queue=self.settings.run_queue, task_id=task_id
            )
            return str(result.id)

        try:
            return await asyncio.to_thread(send)
        except (OperationalError, RedisError, OSError) as exc:
            url = redact_url(self.settings.redis_url or "")
            raise BrokerUnavailable(
                f"the broker (Redis at {url}) did not take the run: {type(exc).__name__}: {exc}"
            ) from exc

    async def aclose(self, drain_seconds: float) -> None:
        await asyncio.to_thread(self.app.close)


class WorkerState:
    """The per-process side of a worker: an event loop thread and the `Runtime` on it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tbd-worker-loop")
        self.thread.daemon = True
        self.thread.start()
        self.runtime: Any = None
        self._context: Any = None
        self.call(self._open())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    async def _open(self) -> None:
        from tbd_agents.runtime.service import process_runtime

        self._context = process_runtime(self.settings, "worker")
        self.runtime = await self._context.__aenter__()
        from tbd_agents.plugins.loader import sync_plugins

        await sync_plugins(self.runtime.store, self.settings)  # a worker may start before the API
        await self.runtime.services()  # build the executor now: a bad RUN_EXECUTOR fails start-up
        await self.runtime.start()

    def execute(self, task_id: str) -> str:
        finished = self.call(self.runtime.execute(task_id))
        return finished.status.value if finished is not None else "skipped"

    async def _close(self) -> None:
        if self.runtime is not None:
            await self.runtime.aclose(drain_seconds=0)
        if self._context is not None:
            await self._context.__aexit__(None, None, None)

    def close(self) -> None:
        try:
            self.call(self._close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


_state: WorkerState | None = None
_state_lock = threading.Lock()


def worker_state(settings: Settings) -> WorkerState:
    """This process's worker state, created on first use (after any fork)."""
    global _state
    with _state_lock:
        if _state is None:
            _state = WorkerState(settings)
        return _state


def install_worker_hooks(settings: Settings, *, prefork: bool) -> None:
    """Open the worker state when a worker (or, with prefork, each child) starts; close it when
    it stops."""
    if prefork:

        @signals.worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
        def _child_init(**_: Any) -> None:
            worker_state(settings)

    else:

        @signals.worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
        def _init(**_: Any) -> None:
            worker_state(settings)

    @signals.worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _ready(sender: Any = None, **_: Any) -> None:
        _log.info(
            "tbd-agents worker %s ready on queue %s",
            getattr(sender, "hostname", "?"),
            settings.run_queue,
        )

    @signals.worker_process_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    @signals.worker_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _shutdown(**_: Any) -> None:
        global _state
        with _state_lock:
            state, _state = _state, None
        if state is not None:
            state.close()
