"""HTTP endpoints of the runtime: start, follow (SSE), halt, webhook log, schedule history.

The router carries its own lifespan: when the app starts it builds the process's `Runtime` (on
the app's store: PostgreSQL through a small pool of its own, or MongoDB on the same database),
starts its upkeep loop — and, with no REDIS_URL, the scheduler, so the embedded default runs
everything in one process — and closes it on shutdown. The runtime is also published as `ctx.services["runtime"]` for other routers (workflow prompts, chat).

Authorisation follows the parent workflow: a caller sees the runs, events and deliveries of the
workflows it owns (admins: all); starting, halting and rotating secrets need a writable key.

The workflow-level paths of the existing TBD Agents are in `runtime.api_workflows` (included
here, after the run routes); what the routes share is in `runtime.api_common`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.domain.models import ScheduledAgent, TaskExecution
from tbd_agents.runtime import api_workflows
from tbd_agents.runtime.api_common import (
    DISPATCH_HEADER,
    KEEPALIVE_SECONDS,
    LastEventHeader,
    LastEventQuery,
    last_event_id_of,
    runtime_of,
    sse_stream,
    start_as_caller,
    visible_task,
    visible_workflow,
)
from tbd_agents.runtime.service import Runtime
from tbd_agents.services.access import ensure_visible
from tbd_agents.services.privilege import AdminDirectory
from tbd_agents.services.workflow_runs import prepare_prompt
from tbd_agents.storage.postgres.engine import create_engine

__all__ = ["DISPATCH_HEADER", "KEEPALIVE_SECONDS", "lifespan", "router", "runtime_of"]


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
    workflow = await visible_workflow(ctx, caller, workflow_id)
    async with ctx.store.unit_of_work() as repos:
        prepared = await prepare_prompt(
            repos, workflow, prompt=body.prompt, admins=AdminDirectory.from_settings(ctx.settings)
        )
    return await start_as_caller(ctx, caller, request, response, workflow, prepared.prompt)


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
    await visible_task(ctx, caller, task_id)
    after = last_event_id_of(last_event_id_header, last_event_id)
    events = runtime_of(ctx).follow(task_id, after)
    return StreamingResponse(
        sse_stream(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/api/tasks/{task_id}/halt", summary="Halt a run, wherever it executes")
async def halt_task(task_id: str, ctx: Ctx, caller: Caller) -> dict[str, str]:
    caller.require_write()
    await visible_task(ctx, caller, task_id)
    result = await runtime_of(ctx).halt(task_id, requested_by=caller.identity)
    return {"task_id": task_id, "result": result.value}


# The workflow-level paths existing TBD Agents clients call, in their place among the routes.
router.include_router(api_workflows.router)


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
    await visible_workflow(ctx, caller, workflow_id)
    found = await runtime_of(ctx).webhooks.list_deliveries(workflow_id=workflow_id, limit=limit)
    return _deliveries(found)


@router.get("/api/tasks/{task_id}/webhook-deliveries", summary="Webhook deliveries of a run")
async def task_deliveries(task_id: str, ctx: Ctx, caller: Caller) -> list[DeliveryOut]:
    await visible_task(ctx, caller, task_id)
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
    await visible_workflow(ctx, caller, workflow_id)
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
