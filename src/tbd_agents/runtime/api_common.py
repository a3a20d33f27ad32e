"""What the runtime's routers share: the process's runtime, the visibility of workflows and runs
to the caller, starting a run as its caller, and the Server-Sent Events stream with
Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Header, Query, Request, Response

from tbd_agents.api.deps import ApiContext
from tbd_agents.domain.models import TaskExecution, Workflow
from tbd_agents.errors import ConfigurationError, InvalidData, NotFound
from tbd_agents.runtime.events import RunEvent
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.github import presented_github_token
from tbd_agents.services.access import Principal, ensure_visible
from tbd_agents.services.caller_credential import start_run_as_caller
from tbd_agents.storage.protocol import eq

KEEPALIVE_SECONDS = 15.0


def _unsupported(ctx: ApiContext) -> ConfigurationError:
    return ConfigurationError(
        f"runs, schedules and webhooks need the PostgreSQL or the MongoDB store "
        f"(DB_BACKEND=postgres or mongo), not {ctx.store.backend!r}"
    )


def runtime_of(ctx: ApiContext) -> Runtime:
    runtime = ctx.services.get("runtime")
    if not isinstance(runtime, Runtime):
        if ctx.store.backend not in ("postgres", "mongo"):
            raise _unsupported(ctx)
        raise ConfigurationError("the runtime is not running in this process")
    return runtime


async def visible_workflow(ctx: ApiContext, caller: Principal, workflow_id: str) -> Workflow:
    async with ctx.store.unit_of_work() as repos:
        workflow: Workflow = await repos.workflows.get(workflow_id)
    ensure_visible(workflow, caller)
    return workflow


async def visible_task(ctx: ApiContext, caller: Principal, task_id: str) -> TaskExecution:
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


DISPATCH_HEADER = "X-Run-Dispatch"


async def start_as_caller(
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


def sse_event(event: RunEvent) -> bytes:
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def sse_stream(
    events: AsyncIterator[RunEvent],
    frame: Callable[[RunEvent], bytes] = sse_event,
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


def last_event_id_of(header: str | None, query: int | None) -> int:
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
