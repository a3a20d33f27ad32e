"""`Runtime`: where runs execute and how their events flow, built once per process.

The backend is chosen once from the settings: without `REDIS_URL` runs execute in this process
(`InProcessBackend`) and events travel on an in-process bus; with `REDIS_URL` runs are sent to
Celery workers (`CeleryBackend`) and events travel over Redis pub/sub. Everything else — the
stored events, leases, halts, schedules and webhooks — is the same code over the run store
(`runtime.store.RunStore`: PostgreSQL, or MongoDB with DB_BACKEND=mongo), so a run behaves the
same with or without Redis, on either database.

Use from the API process::

    runtime = await Runtime.open(settings, store, role="api")  # PostgreSQL or MongoDB
    await runtime.start()                      # reaper, webhooks, purge, retention (+ scheduler)
    task = await runtime.start_run(workflow_id, "prompt")
    async for event in runtime.follow(task.id, after_seq=last_event_id): ...
    await runtime.halt(task.id)
    await runtime.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.config import Settings
from tbd_agents.domain.enums import TaskStatus, TaskTrigger
from tbd_agents.domain.models import TaskExecution
from tbd_agents.errors import TbdError
from tbd_agents.observability.metrics import RUN_DISPATCHES
from tbd_agents.observability.runs import count_lost_runs
from tbd_agents.runtime import leases
from tbd_agents.runtime.backoff import Backoff
from tbd_agents.runtime.bus import EventBus, InProcessBus, RedisBus
from tbd_agents.runtime.contracts import EventSink, EventType, HaltSignal, RunOutcome
from tbd_agents.runtime.events import TERMINAL_STATUSES, PersistingEventSink, RunEvent, follow
from tbd_agents.runtime.executor import ExecutorContext, RunExecutor, build_executor
from tbd_agents.runtime.halt import HaltResult, request_halt
from tbd_agents.runtime.runner import (
    RunServices,
    announce,
    complete_followups,
    execute_run,
    reap,
)
from tbd_agents.runtime.scheduler import Clock, Scheduler
from tbd_agents.runtime.store import RunStore, as_run_store
from tbd_agents.runtime.webhooks import SecretCipher, WebhookService
from tbd_agents.services.retention import PruneReport, retention_for
from tbd_agents.storage.protocol import DocumentStore

_log = logging.getLogger(__name__)

MAINTENANCE_SECONDS = 1.0
#: The longest wait after start before the first retention pass.
RETENTION_FIRST_DELAY = timedelta(minutes=5)
#: Longest pause of the upkeep loop after failed rounds (database down): 1, 2, 4 … this many s.
MAINTENANCE_MAX_BACKOFF_SECONDS = 30.0
PURGE_EVERY = timedelta(hours=1)
#: Follow-up writes (final events, webhooks) left undone this long are taken over (MongoDB).
FOLLOWUP_STALE_SECONDS = 30.0


class RunBackend(Protocol):
    name: str

    async def submit(self, task_id: str) -> str | None:
        """Start or queue the run; return the backend's id for it (Celery task id) if any."""
        ...

    async def aclose(self, drain_seconds: float) -> None: ...


def default_cipher(settings: Settings) -> SecretCipher | None:
    """The API's token cipher (webhook secrets are encrypted with the same keys), if usable."""
    try:
        from tbd_agents.security.cipher import KeyRingProvider
    except ImportError:  # pragma: no cover - the security package ships with the product
        return None
    cipher: SecretCipher = KeyRingProvider(settings).cipher()
    return cipher


class Runtime:
    """Runs, events, halts, schedules and webhooks of one process."""

    def __init__(
        self,
        settings: Settings,
        db: AsyncEngine | RunStore | Any,
        bus: EventBus,
        *,
        role: str,
        cipher: SecretCipher | None = None,
        executor: RunExecutor | None = None,
        store: DocumentStore | None = None,
        vectors: Any = None,
    ) -> None:
        self.settings = settings
        self.runs: RunStore = as_run_store(db)
        #: The PostgreSQL engine of the run store (None on MongoDB).
        self.db: AsyncEngine | None = getattr(self.runs, "engine", None)
        self.bus = bus
        self.role = role
        self.worker_id = leases.new_worker_id(role)
        self.events = self.runs.events
        self.webhooks = WebhookService(self.runs.webhooks, settings, cipher)
        if store is None and hasattr(db, "unit_of_work"):
            store = cast(DocumentStore, db)  # opened on a document store: the executor uses it
        self.store = store
        #: The process's vector store, shared with the executor (None: it opens its own).
        self.vectors = vectors
        self._executor = executor
        self._services: RunServices | None = None
        self._services_lock = asyncio.Lock()
        self._loops: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        #: Runs this process could not hand to the backend yet, with the last reason.
        self._undispatched: dict[str, str] = {}
        self.backend: RunBackend = self._make_backend()

    @classmethod
    async def open(
        cls,
        settings: Settings,
        db: AsyncEngine | RunStore | Any,
        *,
        role: str = "api",
        cipher: SecretCipher | None = None,
        executor: RunExecutor | None = None,
        store: DocumentStore | None = None,
        vectors: Any = None,
    ) -> Runtime:
        """The runtime the settings ask for: Celery + Redis with REDIS_URL, else in-process.

        `db` is where runs are stored: a PostgreSQL engine, a document store (PostgreSQL or
        MongoDB) or a `RunStore`."""
        bus: EventBus = RedisBus(settings.redis_url) if settings.redis_url else InProcessBus()
        if cipher is None:
            cipher = default_cipher(settings)
        return cls(
            settings,
            db,
            bus,
            role=role,
            cipher=cipher,
            executor=executor,
            store=store,
            vectors=vectors,
        )

    def _make_backend(self) -> RunBackend:
        if self.settings.redis_url:
            from tbd_agents.runtime.celery_app import CeleryBackend

            return CeleryBackend(self.settings)
        from tbd_agents.runtime.inprocess import InProcessBackend

        return InProcessBackend(self)

    @property
    def distributed(self) -> bool:
        return bool(self.settings.redis_url)

    # --- execution ------------------------------------------------------------------------
    async def services(self) -> RunServices:
        """What executing runs needs in this process (the executor is built on first use)."""
        async with self._services_lock:
            if self._services is None:
                executor = self._executor or await build_executor(
                    ExecutorContext(self.settings, self.db, self.store, self.vectors, self.bus)
                )
                self._executor = executor
                self._services = RunServices(
                    runs=self.runs,
                    bus=self.bus,
                    events=self.events,
                    executor=executor,
                    webhooks=self.webhooks,
                    worker_id=self.worker_id,
                    lease_seconds=self.settings.run_lease_seconds,
                )
            return self._services

    async def execute(self, task_id: str) -> TaskExecution | None:
        """Execute a pending run here (what a worker does with a queued run)."""
        return await execute_run(await self.services(), task_id)

    # --- API-facing operations -------------------------------------------------------------
    async def start_run(
        self,
        workflow_id: str,
        prompt: str,
        *,
        trigger: TaskTrigger = TaskTrigger.API,
        reasoning_effort: str | None = None,
    ) -> TaskExecution:
        """Create a pending run of the workflow, commit it, then hand it to the backend.

        The run is accepted once it is stored: if the backend cannot take it now (Redis down),
        it is handed over again later (see `dispatch`); `dispatch_deferred(task.id)` says so."""
        task = await self.runs.create_run(
            workflow_id, prompt, trigger=trigger, reasoning_effort=reasoning_effort
        )
        await self.dispatch(task.id)
        return task

    async def dispatch(self, task_id: str) -> bool:
        """Hand a committed pending run to the backend (after the transaction that made it).

        False when the backend could not take it (the broker is down): the run stays pending,
        the upkeep loop hands it over again every RUN_DISPATCH_RETRY_SECONDS and fails it, with
        the reason, once RUN_DISPATCH_DEADLINE_SECONDS have passed. Never raises: the caller's
        run is stored, and answering an error would hide that it exists."""
        try:
            backend_id = await self.backend.submit(task_id)
        except Exception as exc:
            reason = exc.message if isinstance(exc, TbdError) else f"{type(exc).__name__}: {exc}"
            first = task_id not in self._undispatched
            self._undispatched[task_id] = reason
            RUN_DISPATCHES.labels("deferred").inc()
            _log.log(
                logging.WARNING if first else logging.INFO,
                "run %s is accepted but not queued yet: %s; it is queued again every %g s, and "
                "fails if that has not worked %g s after it was accepted",
                task_id,
                reason,
                self.settings.run_dispatch_retry_seconds,
                self.settings.run_dispatch_deadline_seconds,
                exc_info=not isinstance(exc, TbdError),
            )
            return False
        if self._undispatched.pop(task_id, None) is not None:
            RUN_DISPATCHES.labels("requeued").inc()
            _log.warning("run %s is queued now", task_id)
        else:
            RUN_DISPATCHES.labels("queued").inc()
        if backend_id is not None:
            try:
                await self.runs.set_backend_id(task_id, backend_id)
            except Exception:
                # Queued all the same; the sweep may queue it once more, which is harmless
                # (only one worker can claim it).
                _log.exception("run %s is queued but its queue id was not recorded", task_id)
        return True

    def dispatch_deferred(self, task_id: str) -> bool:
        """True while this process could not hand the run to the backend yet."""
        return task_id in self._undispatched

    async def sweep_undispatched(self) -> None:
        """Fail the runs no backend took within RUN_DISPATCH_DEADLINE_SECONDS, then hand the
        others that have waited RUN_DISPATCH_RETRY_SECONDS to the backend again."""
        settings = self.settings
        deadline = settings.run_dispatch_deadline_seconds
        reasons = set(self._undispatched.values())
        last = f" (last error: {reasons.pop()})" if len(reasons) == 1 else ""
        if self.distributed:
            reason = (
                f"the run queue (Redis) did not take it within RUN_DISPATCH_DEADLINE_SECONDS "
                f"({deadline:g} s){last}; start it again once Redis is back"
            )
        else:
            reason = (
                f"it was not started within RUN_DISPATCH_DEADLINE_SECONDS ({deadline:g} s): "
                f"the process that accepted it stopped or lost the database{last}; start it again"
            )
        failed = await self.runs.fail_undispatched(deadline, reason)
        count_lost_runs(failed)
        for item in failed:
            self._undispatched.pop(item.task.id, None)
            _log.error("run %s failed: %s", item.task.id, item.task.error)
        await announce(await self._maintenance_services(), [e for t in failed for e in t.events])
        orphans = await self.runs.orphaned_pending(settings.run_dispatch_retry_seconds)
        # Forget what another process queued or failed meanwhile (the map stays small).
        self._undispatched = {k: v for k, v in self._undispatched.items() if k in orphans}
        for task_id in orphans:
            if task_id not in self._undispatched:
                _log.warning("run %s was never queued; queueing it now", task_id)
            if not await self.dispatch(task_id):
                break  # the backend is down: the others wait for the next sweep

    # --- approvals (services/approvals.py) ----------------------------------------------------
    async def resume_run(self, task_id: str, reason: str) -> bool:
        """Hand a run awaiting approval back to the backend, to resume where it paused (once,
        whoever asks: False when it is not awaiting approval any more)."""
        resumed = await self.runs.resume(task_id, reason)
        if resumed is None:
            return False
        await announce(await self._maintenance_services(), resumed.events)
        await self.dispatch(task_id)
        return True

    async def approval_decided(self, task_id: str, data: dict[str, Any]) -> bool:
        """Report a decision on the run's events and resume the run once its pause has no
        pending approval left; True if it resumed."""
        from tbd_agents.services.approvals import undecided

        task = await self.runs.load(task_id)
        if task is None or task.status in TERMINAL_STATUSES:
            return False  # ended meanwhile (halted): nothing to report on or resume
        await PersistingEventSink(self.events, self.bus, task_id).emit(
            EventType.APPROVAL_DECIDED, data
        )
        if task.status is not TaskStatus.AWAITING_APPROVAL:
            # Still pausing (the upkeep resumes it once it is parked), or already resumed by
            # the upkeep's sweep between the decision and this call.
            return False
        if self.store is None or await undecided(self.store, task_id):
            return False
        return await self.resume_run(task_id, f"approval {data.get('approval_id')} decided")

    async def expire_approvals(self) -> int:
        """Expire the approvals nobody decided in time (their policy's `on_timeout` is applied
        when the run resumes); return how many."""
        if self.store is None:
            return 0
        from tbd_agents.services.approvals import expire_due

        expired = await expire_due(self.store)
        for approval in expired:
            data = {"approval_id": approval.id, "tool": approval.tool_name, "status": "expired",
                    "on_timeout": approval.on_timeout}  # fmt: skip
            await self.approval_decided(approval.task_id, data)
        return len(expired)

    async def _resume_stranded(self) -> None:
        """Resume the paused runs with nothing left to decide: the last decision came while
        the run was still pausing, or its process stopped between deciding and resuming."""
        from tbd_agents.services.approvals import undecided
        from tbd_agents.storage.protocol import Query, eq

        assert self.store is not None
        query = Query(filters=(eq("status", TaskStatus.AWAITING_APPROVAL.value),), limit=50)
        async with self.store.unit_of_work(readonly=True) as repos:
            waiting = list((await repos.task_executions.list(query)).items)
        for task in waiting:
            if task.paused_state is not None and not await undecided(self.store, task.id):
                await self.resume_run(task.id, "every approval of its pause is decided")

    async def halt(self, task_id: str, requested_by: str | None = None) -> HaltResult:
        """Stop a run wherever it executes (NotFound / Conflict for unknown or finished runs)."""
        return await request_halt(self.runs, self.bus, task_id, requested_by)

    def follow(self, task_id: str, after_seq: int = 0) -> AsyncIterator[RunEvent]:
        """The run's events after `after_seq`: stored ones, then live ones, until it ends."""
        return follow(self.events, self.bus, task_id, after_seq)

    def scheduler(self, clock: Clock | None = None) -> Scheduler:
        return Scheduler(
            self.runs,
            self.dispatch,
            scheduler_id=self.worker_id,
            misfire_grace_seconds=self.settings.scheduler_misfire_grace_seconds,
            clock=clock,
        )

    # --- background work -------------------------------------------------------------------
    async def maintain_once(self) -> None:
        """One round of upkeep: fail runs with expired leases, finish follow-ups a dead process
        left undone, send due webhooks."""
        services = await self._maintenance_services()
        await reap(services)
        await complete_followups(services, FOLLOWUP_STALE_SECONDS)
        await self.webhooks.deliver_due()

    async def prune(self, *, dry_run: bool = False) -> PruneReport | None:
        """One pass of the retention rules (services/retention.py), logged with its counts;
        None without a document store (a runtime opened on an engine only)."""
        if self.store is None:
            return None
        summariser = None
        if self.settings.retention_chat_summary_after_messages > 0:
            services = await self.services()
            engine = getattr(services.executor, "services", None)
            if engine is not None:
                from tbd_agents.engine.chat_summary import engine_chat_summariser

                summariser = engine_chat_summariser(engine)
        retention = retention_for(
            self.settings,
            self.store,
            webhooks=self.runs.webhooks,
            summariser=summariser,
            vectors=self.vectors,
        )
        report = await retention.prune(dry_run=dry_run)
        _log.log(logging.INFO if report.total else logging.DEBUG, "%s", report.describe())
        for reason in report.skipped:
            _log.warning("retention: %s", reason)
        return report

    async def _maintenance_services(self) -> RunServices:
        # Reaping needs no executor: avoid building the engine in processes that never run one.
        if self._services is not None:
            return self._services
        return RunServices(
            runs=self.runs,
            bus=self.bus,
            events=self.events,
            executor=_NoExecutor(),
            webhooks=self.webhooks,
            worker_id=self.worker_id,
            lease_seconds=self.settings.run_lease_seconds,
        )

    async def _maintenance_loop(self) -> None:
        reap_every = max(self.settings.run_lease_seconds / 3.0, MAINTENANCE_SECONDS)
        sweep_every = min(self.settings.run_dispatch_retry_seconds, reap_every)
        last_reap = last_purge = last_sweep = datetime.min.replace(tzinfo=UTC)
        prune_every = timedelta(seconds=self.settings.retention_interval_seconds)
        # The first retention pass comes a while after start (at most RETENTION_FIRST_DELAY),
        # not at once: a fleet restarting together does not prune all at the same moment,
        # and a starting process has other work first.
        last_prune = datetime.now(UTC) - prune_every + min(prune_every, RETENTION_FIRST_DELAY)
        failures = Backoff("runtime upkeep", MAINTENANCE_SECONDS, MAINTENANCE_MAX_BACKOFF_SECONDS)
        while not self._stop.is_set():
            now = datetime.now(UTC)
            try:
                if (now - last_reap).total_seconds() >= reap_every:
                    services = await self._maintenance_services()
                    await reap(services)
                    await complete_followups(services, FOLLOWUP_STALE_SECONDS)
                    last_reap = now
                await self.webhooks.deliver_due()
                if (now - last_sweep).total_seconds() >= sweep_every:
                    # Approvals expire at this cadence (seconds late at most), not every tick.
                    await self.expire_approvals()
                    await self.sweep_undispatched()
                    if self.store is not None:
                        await self._resume_stranded()
                    last_sweep = now
                if now - last_purge >= PURGE_EVERY:
                    cutoff = now - timedelta(days=self.settings.run_event_retention_days)
                    purged = await self.events.purge(cutoff)
                    if purged:
                        _log.info("purged %d events of runs that ended before %s", purged, cutoff)
                    last_purge = now
                if self.settings.retention_enabled and now - last_prune >= prune_every:
                    last_prune = now  # a failing pass waits for the next interval too
                    await self.prune()
            except Exception as exc:
                pause = failures.failed(exc)
            else:
                pause = failures.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)

    async def start(self, *, scheduler: bool = False, clock: Clock | None = None) -> None:
        """Start the upkeep loop (reaper, webhooks, event purge, retention: `prune`) and, if
        asked, the scheduler loop."""
        self._stop.clear()
        self._loops.append(asyncio.create_task(self._maintenance_loop(), name="runtime-upkeep"))
        if scheduler:
            loop = self.scheduler(clock).run(self._stop, self.settings.scheduler_poll_seconds)
            self._loops.append(asyncio.create_task(loop, name="scheduler"))

    async def run_until(self, stop: asyncio.Event) -> None:
        """Wait until `stop` is set. RuntimeError if a background loop ended first: they
        outlive every error they can meet, so that is a bug, and the process should exit
        non-zero (for its supervisor to restart it) rather than go on doing nothing."""
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait(
                [stopper, *self._loops], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
        for task in done:
            if task is not stopper:
                exc = None if task.cancelled() else task.exception()
                raise RuntimeError(f"the {task.get_name()} loop stopped: {exc!r}") from exc

    async def aclose(self, drain_seconds: float = 30.0) -> None:
        """Stop the loops, let running in-process runs finish (halting them after
        `drain_seconds`), and close the bus and the executor. The database engine is the
        caller's."""
        self._stop.set()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        await self.backend.aclose(drain_seconds)
        await self.webhooks.aclose()
        if self._executor is not None:
            await self._executor.aclose()
        await self.bus.aclose()


class _NoExecutor:
    async def execute(self, task: TaskExecution, sink: EventSink, halt: HaltSignal) -> RunOutcome:
        raise RuntimeError("this process does not execute runs")

    async def aclose(self) -> None:
        return None


@asynccontextmanager
async def process_runtime(settings: Settings, role: str) -> AsyncIterator[Runtime]:
    """The runtime of a worker or scheduler process on the configured database, closed again when
    the block ends. PostgreSQL: the database prepared (embedded server started, or an external one
    checked to be at head) and the document store opened on it. MongoDB: the store opened on
    MONGO_URI (indexes created)."""
    from tbd_agents.storage.factory import prepared_store

    named = settings.model_copy(update={"application_name": f"{settings.application_name}-{role}"})
    async with prepared_store(named) as store:
        yield await Runtime.open(named, store, role=role, store=store)
