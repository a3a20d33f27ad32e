"""HTTP endpoints of the runtime: start, follow (SSE), halt, webhook log, schedule history.

The router carries its own lifespan: when the app starts it builds the process's `Runtime` (on
the app's store: PostgreSQL through a small pool of its own, or MongoDB on the same database),
starts its upkeep loop — and, with no REDIS_URL, the scheduler, so the embedded default runs
everything in one process — and closes it on shutdown. The runtime is also published as `ctx.services["runtime"]` for other routers (workflow prompts, chat).

Authorisation follows the parent workflow: a caller sees the runs, events and deliveries of the
workflows it owns (admins: all); starting, halting and rotating secrets need a writable key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import ScheduledAgent, TaskExecution, Workflow
from tbd_agents.errors import ConfigurationError, Conflict, InvalidData, NotFound
from tbd_agents.runtime.events import RunEvent
from tbd_agents.runtime.service import Runtime
from tbd_agents.services.access import Principal, ensure_visible
from tbd_agents.services.privilege import AdminDirectory
from tbd_agents.services.workflow_runs import prepare_prompt, status_after_run
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.protocol import Query as ListQuery
from tbd_agents.storage.protocol import desc, eq, in_

KEEPALIVE_SECONDS = 15.0


def _unsupported(ctx: ApiContext) -> ConfigurationError:
    return ConfigurationError(
        f"runs, schedules and webhooks need the PostgreSQL or the MongoDB store "
        f"(DB_BACKEND=postgres or mongo), not {ctx.store.backend!r}"
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    ctx: ApiContext = app.state.ctx
    settings = ctx.settings
    backend = ctx.store.backend
    url = getattr(ctx.store, "url", None)
    if backend == "postgres" and url is not None:
        # Its own small pool: background upkeep never competes with requests for connections.
        engine = create_engine(
            url,
            application_name=f"{settings.application_name}-runtime",
            pool_size=4,
            max_overflow=4,
            connect_timeout=settings.postgres_connect_timeout,
        )
        try:
            async with _running(ctx, engine):
                yield
        finally:
            await engine.dispose()
    elif backend == "mongo":
        async with _running(ctx, ctx.store):  # same client and database as the documents
            yield
    else:
        yield  # no runtime here; its endpoints answer with the reason


@asynccontextmanager
async def _running(ctx: ApiContext, db: Any) -> AsyncIterator[None]:
    settings = ctx.settings
    runtime = await Runtime.open(
        settings,
        db,
        role="api",
        cipher=ctx.cipher(),
        store=ctx.store,
        vectors=ctx.services.get("vector_store"),
    )
    await runtime.start(scheduler=not runtime.distributed)
    ctx.services["runtime"] = runtime
    try:
        yield
    finally:
        ctx.services.pop("runtime", None)
        await runtime.aclose(drain_seconds=settings.run_lease_seconds)


router = APIRouter(tags=["runs"], lifespan=lifespan, responses=ERRORS)


def runtime_of(ctx: ApiContext) -> Runtime:
    runtime = ctx.services.get("runtime")
    if not isinstance(runtime, Runtime):
        if ctx.store.backend not in ("postgres", "mongo"):
            raise _unsupported(ctx)
        raise ConfigurationError("the runtime is not running in this process")
    return runtime


async def _workflow(ctx: ApiContext, caller: Principal, workflow_id: str) -> Workflow:
    async with ctx.store.unit_of_work() as repos:
        workflow: Workflow = await repos.workflows.get(workflow_id)
    ensure_visible(workflow, caller)
    return workflow


async def _task(ctx: ApiContext, caller: Principal, task_id: str) -> TaskExecution:
    async with ctx.store.unit_of_work() as repos:
        task: TaskExecution = await repos.task_executions.get(task_id)
        workflow = await repos.workflows.find_one(eq("id", task.workflow_id))
    if workflow is None:
        # A run of a deleted workflow (kept from an existing deployment, which never deleted
        # them): it has no owner left, so only admins see it, as with every ownerless record.
        if not caller.is_admin:
            raise NotFound(TaskExecution.collection, task_id)
        return task
    ensure_visible(workflow, caller)
    return task


class RunIn(BaseModel):
    prompt: str = Field(min_length=1, max_length=200_000)

    @field_validator("prompt")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("text may not contain the NUL character (U+0000)")
        return value


@router.post("/api/workflows/{workflow_id}/runs", status_code=202, summary="Start a run")
async def start_run(workflow_id: str, body: RunIn, ctx: Ctx, caller: Caller) -> TaskExecution:
    """Queue a run of the workflow with `prompt`; follow it at `/api/tasks/{id}/events`.
    409 while the workflow is inactive; 422 when a guardrail blocks the prompt."""
    caller.require_write()
    workflow = await _workflow(ctx, caller, workflow_id)
    async with ctx.store.unit_of_work() as repos:
        prepared = await prepare_prompt(
            repos, workflow, prompt=body.prompt, admins=AdminDirectory.from_settings(ctx.settings)
        )
    return await runtime_of(ctx).start_run(workflow_id, prepared.prompt)


def _sse(event: RunEvent) -> bytes:
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def _stream(events: AsyncIterator[RunEvent]) -> AsyncIterator[bytes]:
    pending: asyncio.Future[RunEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_SECONDS)
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield _sse(event)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


#: Event numbers are PostgreSQL `integer`s (the same bound applies on MongoDB).
MAX_EVENT_ID = 2**31 - 1
LastEventQuery = Annotated[
    int | None,
    Query(ge=0, le=MAX_EVENT_ID, description="Resume after this event (as Last-Event-ID)."),
]
LastEventHeader = Annotated[str | None, Header(alias="Last-Event-ID")]


def _last_event_id(header: str | None, query: int | None) -> int:
    if query is not None:
        return query
    if header is None or not header.strip():
        return 0
    text = header.strip()
    if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_EVENT_ID)):
        raise InvalidData(
            f"Last-Event-ID must be an event number (0 to {MAX_EVENT_ID}), got {text[:40]!r}",
            details={"field": "Last-Event-ID"},
        )
    value = int(text)
    if value > MAX_EVENT_ID:
        raise InvalidData(
            f"Last-Event-ID must be at most {MAX_EVENT_ID}", details={"field": "Last-Event-ID"}
        )
    return value


@router.get(
    "/api/tasks/{task_id}/events",
    summary="Follow a run's events (Server-Sent Events)",
    response_class=StreamingResponse,
)
async def task_events(
    task_id: str,
    request: Request,
    ctx: Ctx,
    caller: Caller,
    last_event_id: LastEventQuery = None,
    last_event_id_header: LastEventHeader = None,
) -> StreamingResponse:
    """Every event of the run after `Last-Event-ID` (stored ones first, then live ones), each
    with `id:` = its number; the stream ends after the run's final `status` event."""
    await _task(ctx, caller, task_id)
    after = _last_event_id(last_event_id_header, last_event_id)
    events = runtime_of(ctx).follow(task_id, after)
    return StreamingResponse(
        _stream(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/api/tasks/{task_id}/halt", summary="Halt a run, wherever it executes")
async def halt_task(task_id: str, ctx: Ctx, caller: Caller) -> dict[str, str]:
    caller.require_write()
    await _task(ctx, caller, task_id)
    result = await runtime_of(ctx).halt(task_id, requested_by=caller.identity)
    return {"task_id": task_id, "result": result.value}


# --- the workflow-level paths existing TBD Agents clients call ----------------------------------

_ACTIVE = (TaskStatus.PENDING, TaskStatus.RUNNING)


async def _latest_run(
    ctx: ApiContext, workflow_id: str, *, active_only: bool = False
) -> TaskExecution | None:
    filters = [eq("workflow_id", workflow_id)]
    if active_only:
        filters.append(in_("status", _ACTIVE))
    query = ListQuery(filters=tuple(filters), sort=(desc("created_at"),), limit=1)
    async with ctx.store.unit_of_work() as repos:
        page = await repos.task_executions.list(query)
    return page.items[0] if page.items else None


@router.post(
    "/api/workflows/{workflow_id}/prompt", status_code=202, summary="Send a prompt (start a run)"
)
async def prompt_workflow(workflow_id: str, body: RunIn, ctx: Ctx, caller: Caller) -> TaskExecution:
    """Same as `POST /api/workflows/{id}/runs`: the run continues the workflow's conversation."""
    return await start_run(workflow_id, body, ctx, caller)


@router.get(
    "/api/workflows/{workflow_id}/stream",
    summary="Follow the workflow's latest run (Server-Sent Events)",
    response_class=StreamingResponse,
)
async def workflow_stream(
    workflow_id: str,
    request: Request,
    ctx: Ctx,
    caller: Caller,
    last_event_id: LastEventQuery = None,
    last_event_id_header: LastEventHeader = None,
) -> StreamingResponse:
    """The events of the workflow's most recent run, as `GET /api/tasks/{id}/events` gives them
    (event ids are that run's event numbers)."""
    await _workflow(ctx, caller, workflow_id)
    run = await _latest_run(ctx, workflow_id)
    if run is None:
        raise NotFound("run of workflow", workflow_id)
    return await task_events(run.id, request, ctx, caller, last_event_id, last_event_id_header)


@router.post("/api/workflows/{workflow_id}/halt", summary="Halt the workflow's active run")
async def halt_workflow(workflow_id: str, ctx: Ctx, caller: Caller) -> dict[str, str]:
    caller.require_write()
    await _workflow(ctx, caller, workflow_id)
    run = await _latest_run(ctx, workflow_id, active_only=True)
    if run is None:
        raise Conflict(f"workflow {workflow_id!r} has no pending or running run to halt")
    return await halt_task(run.id, ctx, caller)


@router.post("/api/workflows/{workflow_id}/reset", summary="Clear the workflow's conversation")
async def reset_workflow(workflow_id: str, ctx: Ctx, caller: Caller) -> Workflow:
    """Forget the conversation and logs (runs and their events stay in the history); refused
    with 409 while a run is pending or running."""
    caller.require_write()
    workflow = await _workflow(ctx, caller, workflow_id)
    if await _latest_run(ctx, workflow_id, active_only=True) is not None:
        raise Conflict(f"workflow {workflow_id!r} has an active run: halt it before a reset")
    changes = {"messages": [], "logs": [], "current_turn": 0}
    async with ctx.store.unit_of_work() as repos:
        reset: Workflow = await repos.workflows.update(
            workflow_id, {**changes, "status": status_after_run(workflow.status)}
        )
    return reset


class AttemptOut(BaseModel):
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: float


class DeliveryOut(BaseModel):
    id: str
    task_id: str
    workflow_id: str
    event: str
    url: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    log: list[AttemptOut]


def _deliveries(items: list[Any]) -> list[DeliveryOut]:
    return [DeliveryOut.model_validate(asdict(d)) for d in items]


@router.get("/api/workflows/{workflow_id}/webhook-deliveries", summary="Webhook delivery log")
async def workflow_deliveries(
    workflow_id: str,
    ctx: Ctx,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[DeliveryOut]:
    await _workflow(ctx, caller, workflow_id)
    found = await runtime_of(ctx).webhooks.list_deliveries(workflow_id=workflow_id, limit=limit)
    return _deliveries(found)


@router.get("/api/tasks/{task_id}/webhook-deliveries", summary="Webhook deliveries of a run")
async def task_deliveries(task_id: str, ctx: Ctx, caller: Caller) -> list[DeliveryOut]:
    await _task(ctx, caller, task_id)
    return _deliveries(await runtime_of(ctx).webhooks.list_deliveries(task_id=task_id))


@router.post(
    "/api/workflows/{workflow_id}/webhook-secret",
    summary="Show (or rotate) the workflow's webhook signing secret",
)
async def webhook_secret(
    workflow_id: str,
    ctx: Ctx,
    caller: Caller,
    rotate: Annotated[bool, Query(description="Replace the secret with a new one.")] = False,
) -> dict[str, str]:
    """The HMAC-SHA256 secret receivers use to check `X-TBD-Signature` (created on first use)."""
    caller.require_write()
    await _workflow(ctx, caller, workflow_id)
    secret = await runtime_of(ctx).webhooks.secret(workflow_id, rotate=rotate)
    return {"workflow_id": workflow_id, "secret": secret, "header": "X-TBD-Signature"}


class OccurrenceOut(BaseModel):
    occurrence_at: Any
    outcome: str
    missed: int
    task_id: str | None
    task_status: str | None
    claimed_by: str


@router.get("/api/scheduled-agents/{schedule_id}/history", summary="Run history of a schedule")
async def history(
    schedule_id: str,
    ctx: Ctx,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[OccurrenceOut]:
    """Claimed occurrences, newest first: fired (with the run's status) or skipped, and why."""
    async with ctx.store.unit_of_work() as repos:
        schedule: ScheduledAgent = await repos.scheduled_agents.get(schedule_id)
    ensure_visible(schedule, caller)
    found = await runtime_of(ctx).runs.schedule_history(schedule_id, limit=limit)
    return [OccurrenceOut.model_validate(asdict(o)) for o in found]
