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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.api.present import present_one
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import ScheduledAgent, TaskExecution, Workflow
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import ConfigurationError, Conflict, InvalidData, NotFound
from tbd_agents.runtime.events import RunEvent
from tbd_agents.runtime.legacy_stream import sse_frame
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.github import presented_github_token
from tbd_agents.services.access import Principal, ensure_visible
from tbd_agents.services.caller_credential import start_run_as_caller
from tbd_agents.services.privilege import AdminDirectory
from tbd_agents.services.workflow_runs import (
    RunStateRefused,
    ensure_accepts_prompts,
    prepare_prompt,
    prompt_response,
    status_after_run,
)
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
            pool_label="runtime",
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
        if workflow is None and task.chat_session_id:
            # A run an agent delegated to from a chat turn: its session's owner sees it.
            session = await repos.chat_sessions.find_one(eq("id", task.chat_session_id))
            if session is not None:
                ensure_visible(session, caller)
                return task
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
async def start_run(
    workflow_id: str,
    body: RunIn,
    ctx: Ctx,
    caller: Caller,
    request: Request,
    response: Response,
) -> TaskExecution:
    """Queue a run of the workflow with `prompt`; follow it at `/api/tasks/{id}/events`.
    409 while the workflow is inactive; 422 when a guardrail blocks the prompt. A run accepted
    while the run queue (Redis) is down is answered as usual, with `X-Run-Dispatch: deferred`:
    it is queued as soon as Redis is back, or fails with the reason after
    RUN_DISPATCH_DEADLINE_SECONDS."""
    caller.require_write()
    workflow = await _workflow(ctx, caller, workflow_id)
    async with ctx.store.unit_of_work() as repos:
        prepared = await prepare_prompt(
            repos, workflow, prompt=body.prompt, admins=AdminDirectory.from_settings(ctx.settings)
        )
    return await _start(ctx, caller, request, response, workflow, prepared.prompt)


#: Answer header of a run that is accepted but not queued yet (the run queue is down).
DISPATCH_HEADER = "X-Run-Dispatch"


async def _start(
    ctx: ApiContext,
    caller: Principal,
    request: Request,
    response: Response,
    workflow: Workflow,
    prompt: str,
    reasoning_effort: str | None = None,
) -> TaskExecution:
    """Start the run; a caller signed in with a GitHub token lends it (sealed) to a run on the
    default model (services/caller_credential.py). A run the backend could not take yet is
    marked `X-Run-Dispatch: deferred` in the answer."""
    token = presented_github_token(request.headers.get("authorization"), caller.via)
    runtime = runtime_of(ctx)
    task = await start_run_as_caller(
        runtime, ctx.store, ctx.cipher(), workflow, prompt,
        github_token=token, reasoning_effort=reasoning_effort,
    )  # fmt: skip
    if runtime.dispatch_deferred(task.id):
        response.headers[DISPATCH_HEADER] = "deferred"
    return task


def _sse(event: RunEvent) -> bytes:
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def _stream(
    events: AsyncIterator[RunEvent],
    frame: Callable[[RunEvent], bytes] = _sse,
    keepalive: float = KEEPALIVE_SECONDS,
) -> AsyncIterator[bytes]:
    pending: asyncio.Future[RunEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=keepalive)
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield frame(event)
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

#: A run awaiting approval is still in progress: it resumes where it paused.
_ACTIVE = (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.AWAITING_APPROVAL)
#: The existing workflow stream sent a keepalive comment after this long without events.
WORKFLOW_KEEPALIVE_SECONDS = 30.0
#: How often a workflow stream opened before the workflow's first run looks for one.
RUN_POLL_SECONDS = 1.0


async def _runs(
    ctx: ApiContext, workflow_id: str, *, active_only: bool = False, limit: int | None = 1
) -> list[TaskExecution]:
    filters = [eq("workflow_id", workflow_id)]
    if active_only:
        filters.append(in_("status", _ACTIVE))
    query = ListQuery(filters=tuple(filters), sort=(desc("created_at"),), limit=limit)
    async with ctx.store.unit_of_work() as repos:
        page = await repos.task_executions.list(query)
    return list(page.items)


async def _latest_run(
    ctx: ApiContext, workflow_id: str, *, active_only: bool = False
) -> TaskExecution | None:
    found = await _runs(ctx, workflow_id, active_only=active_only)
    return found[0] if found else None


class PromptIn(BaseModel):
    """The existing `PromptRequest`: a prompt, a structured request (checked by the workflow's
    `request` guardrails; the run receives its JSON), or both."""

    model_config = ConfigDict(extra="ignore")
    prompt: str | None = Field(default=None, min_length=1, max_length=200_000)
    request: dict[str, Any] | None = None
    reasoning_effort: str | None = Field(default=None, max_length=100)

    @field_validator("prompt")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("text may not contain the NUL character (U+0000)")
        return value


@router.post(
    "/api/workflows/{workflow_id}/prompt",
    status_code=201,
    summary="Send a prompt (start a run), as the existing API did",
)
async def prompt_workflow(
    workflow_id: str,
    body: PromptIn,
    ctx: Ctx,
    caller: Caller,
    request: Request,
    response: Response,
) -> dict[str, Any]:
    """Start a run with `prompt` and/or `request` and answer the existing `PromptResponse`
    (plus `task_id` and the stored `task`). 400 while the workflow is inactive or a run of it
    is pending or running; 422 when a guardrail blocks the prompt or the request."""
    caller.require_write()
    workflow = await _workflow(ctx, caller, workflow_id)
    try:
        ensure_accepts_prompts(workflow)
    except Conflict as exc:
        raise RunStateRefused(exc.message, details=exc.details) from None
    live = await _latest_run(ctx, workflow_id, active_only=True)
    if live is not None:
        raise RunStateRefused(
            f"workflow {workflow_id!r} is already running (task {live.id}): wait for it to "
            f"end, or halt it with POST /api/workflows/{workflow_id}/halt",
            details={"task_id": live.id},
        )
    async with ctx.store.unit_of_work() as repos:
        prepared = await prepare_prompt(
            repos,
            workflow,
            prompt=body.prompt,
            request=body.request,
            admins=AdminDirectory.from_settings(ctx.settings),
        )
    task = await _start(
        ctx, caller, request, response, workflow, prepared.prompt,
        body.reasoning_effort or workflow.reasoning_effort,
    )  # fmt: skip
    return prompt_response(workflow, task)


async def _wait_for_run(ctx: ApiContext, workflow_id: str) -> AsyncIterator[bytes | TaskExecution]:
    """Keepalives until the workflow has a run, then that run."""
    waited = 0.0
    while True:
        run = await _latest_run(ctx, workflow_id)
        if run is not None:
            yield run
            return
        await asyncio.sleep(RUN_POLL_SECONDS)
        waited += RUN_POLL_SECONDS
        if waited >= WORKFLOW_KEEPALIVE_SECONDS:
            waited = 0.0
            yield b": keepalive\n\n"


async def _workflow_frames(
    ctx: ApiContext, workflow_id: str, run: TaskExecution | None, after: int
) -> AsyncIterator[bytes]:
    if run is None:
        async for item in _wait_for_run(ctx, workflow_id):
            if isinstance(item, bytes):
                yield item
            else:
                run = item
    assert run is not None
    events = runtime_of(ctx).follow(run.id, after)
    async for chunk in _stream(events, sse_frame, WORKFLOW_KEEPALIVE_SECONDS):
        yield chunk


@router.get(
    "/api/workflows/{workflow_id}/stream",
    summary="Follow the workflow's latest run (Server-Sent Events, existing frame format)",
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
    """The events of the workflow's most recent run after `Last-Event-ID`, framed as the
    existing stream framed them: `id: <n>` and `data: {id, type, data, timestamp}`, with a
    `: keepalive` comment after 30 s without events. Opened before the workflow's first run,
    it waits for that run. The stream ends after the run's final `status` event."""
    await _workflow(ctx, caller, workflow_id)
    after = _last_event_id(last_event_id_header, last_event_id)
    runtime_of(ctx)  # the reason now, not in the middle of a stream
    run = await _latest_run(ctx, workflow_id)
    return StreamingResponse(
        _workflow_frames(ctx, workflow_id, run, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/api/workflows/{workflow_id}/halt",
    status_code=202,
    summary="Halt the workflow's active run",
)
async def halt_workflow(workflow_id: str, ctx: Ctx, caller: Caller) -> dict[str, str]:
    """202 `{"detail": "Halt signal sent", task_id, result}`; 400 when no run is pending or
    running."""
    caller.require_write()
    await _workflow(ctx, caller, workflow_id)
    run = await _latest_run(ctx, workflow_id, active_only=True)
    if run is None:
        raise RunStateRefused(f"workflow {workflow_id!r} has no pending or running run to halt")
    result = await runtime_of(ctx).halt(run.id, requested_by=caller.identity)
    return {"detail": "Halt signal sent", "task_id": run.id, "result": result.value}


@router.post(
    "/api/tasks/{task_id}/stop", status_code=202, summary="Halt a run (the existing stop route)"
)
async def stop_task(task_id: str, ctx: Ctx, caller: Caller) -> dict[str, str]:
    """202 `{status: "halt_requested", workflow_id}`; 400 unless the run is pending or
    running."""
    caller.require_write()
    task = await _task(ctx, caller, task_id)
    if task.status not in _ACTIVE:
        raise RunStateRefused(
            f"task {task_id!r} is {task.status.value}: only a pending or running task can be "
            "stopped",
            details={"status": task.status.value},
        )
    try:
        result = await runtime_of(ctx).halt(task_id, requested_by=caller.identity)
    except Conflict as exc:  # it ended meanwhile
        raise RunStateRefused(exc.message, details=exc.details) from None
    return {
        "status": "halt_requested",
        "workflow_id": task.workflow_id,
        "task_id": task_id,
        "result": result.value,
    }


@router.post("/api/workflows/{workflow_id}/reset", summary="Force-reset the workflow")
async def reset_workflow(workflow_id: str, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    """Halt every pending or running run of the workflow, forget its conversation and logs,
    and make it `active` again (unless it is `inactive`): `{detail, tasks_aborted, workflow}`.
    Runs and their events stay in the history."""
    caller.require_write()
    workflow = await _workflow(ctx, caller, workflow_id)
    runtime = runtime_of(ctx)
    aborted = 0
    for run in await _runs(ctx, workflow_id, active_only=True, limit=None):
        try:
            await runtime.halt(run.id, requested_by=caller.identity)
        except (Conflict, NotFound):
            continue  # it ended meanwhile
        aborted += 1
    changes = {
        "messages": [],
        "logs": [],
        "current_turn": 0,
        "conversation_reset_at": utcnow(),  # the next run starts a new conversation
    }
    async with ctx.store.unit_of_work() as repos:
        reset: Workflow = await repos.workflows.update(
            workflow_id, {**changes, "status": status_after_run(workflow.status)}
        )
        shown = json.loads(await present_one(reset, repos, ctx))
    return {
        "detail": f"Workflow reset; {aborted} task(s) aborted",
        "tasks_aborted": aborted,
        "workflow": shown,
    }


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
