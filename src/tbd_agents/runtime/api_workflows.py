"""The workflow-level paths existing TBD Agents clients call: prompt, follow the latest run
(the existing stream frames), halt, stop a run, force-reset. Their routes are included in
`runtime.api.router` (its tags, error responses and lifespan apply)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.api.present import present_one
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution, Workflow
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import Conflict, NotFound
from tbd_agents.runtime.api_common import (
    LastEventHeader,
    LastEventQuery,
    last_event_id_of,
    runtime_of,
    sse_stream,
    start_as_caller,
    visible_task,
    visible_workflow,
)
from tbd_agents.runtime.legacy_stream import sse_frame
from tbd_agents.services.privilege import AdminDirectory
from tbd_agents.services.workflow_runs import (
    RunStateRefused,
    ensure_accepts_prompts,
    prepare_prompt,
    prompt_response,
    status_after_run,
)
from tbd_agents.storage.protocol import Query as ListQuery
from tbd_agents.storage.protocol import desc, eq, in_

router = APIRouter()


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
    workflow = await visible_workflow(ctx, caller, workflow_id)
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
    task = await start_as_caller(
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
    async for chunk in sse_stream(events, sse_frame, WORKFLOW_KEEPALIVE_SECONDS):
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
    await visible_workflow(ctx, caller, workflow_id)
    after = last_event_id_of(last_event_id_header, last_event_id)
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
    await visible_workflow(ctx, caller, workflow_id)
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
    task = await visible_task(ctx, caller, task_id)
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
    workflow = await visible_workflow(ctx, caller, workflow_id)
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
