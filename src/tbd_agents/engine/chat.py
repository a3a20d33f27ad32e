"""Chat: one user message → one agent run, streamed as server-sent events.

The run is the same `AgentLoop` workflows use (tools, knowledge, memory, guardrails). The user
message is stored before the run; the assistant and tool messages after it, with usage. If the
client goes away, the consumer cancels the run, which cancels the model call in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from tbd_agents.domain.enums import MessageRole, TaskStatus
from tbd_agents.domain.models import Agent, ChatMessage, ChatSession
from tbd_agents.domain.types import utcnow
from tbd_agents.engine.context import RunInput
from tbd_agents.engine.default_provider import caller_github_token
from tbd_agents.engine.inprocess import EngineServices, run_agent
from tbd_agents.engine.messages import Message
from tbd_agents.errors import InvalidData, TbdError
from tbd_agents.runtime.contracts import EventType
from tbd_agents.storage.protocol import Query, Sort, eq

HISTORY_LIMIT = 200
SSE_NAMES: dict[EventType, str] = {EventType.MESSAGE_DELTA: "delta"}
_END = object()


def sse(event: str, data: Mapping[str, Any], event_id: int | None = None) -> str:
    """One frame: `id: n` (when given), `event: <name>` and `data: {"type": <name>, ...}`.

    The existing TBD Agents chat stream sent `id: n` and `data: {type, ...}` (`delta` with
    `content`); the `event:` line is ours (the dashboard dispatches on it)."""
    body = {**data, "type": event}
    if event == "delta" and "content" not in body:
        body["content"] = body.get("delta", "")
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(body, ensure_ascii=False, default=str)}\n\n"


class _Frames:
    """Numbers a stream's frames 1, 2, 3… (chat streams have no replay: ids are per stream)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: str, data: Mapping[str, Any]) -> str:
        self.count += 1
        return sse(event, data, self.count)


class QueueSink:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    async def emit(self, event_type: EventType, data: Mapping[str, Any]) -> None:
        await self.queue.put((event_type, dict(data)))


async def open_session(
    services: EngineServices, agent: Agent, session: ChatSession | None, owner: str, text: str
) -> tuple[ChatSession, list[Message]]:
    """The session (created when None) and its history; stores the user's message."""
    if not text.strip():
        raise InvalidData("message must not be empty", details={"field": "message"})
    async with services.store.unit_of_work() as repos:
        if session is None:
            # The first 80 characters of the first line, as the existing TBD Agents titled chats.
            title = text.strip().splitlines()[0][:80] or None
            session = await repos.chat_sessions.create(
                ChatSession(agent_id=agent.id, github_user=owner, title=title)
            )
        elif session.agent_id != agent.id:
            raise InvalidData(f"chat session {session.id} belongs to another agent")
        page = await repos.chat_messages.list(
            Query(
                filters=(eq("session_id", session.id),),
                sort=(Sort("created_at", True),),
                limit=HISTORY_LIMIT,
            )
        )
        history = [_to_message(m) for m in reversed(page.items)]
        await repos.chat_messages.create(
            ChatMessage(session_id=session.id, role=MessageRole.USER, content=text)
        )
    return session, history


def _to_message(m: ChatMessage) -> Message:
    return Message.from_dict(
        {"role": m.role.value, "content": m.content, "tool_calls": m.tool_calls,
         "tool_call_id": m.tool_call_id, "name": m.name}
    )  # fmt: skip


async def _persist(
    services: EngineServices, session: ChatSession, messages: list[Message], usage: dict[str, Any]
) -> str | None:
    last_id = None
    async with services.store.unit_of_work() as repos:
        for i, m in enumerate(messages):
            rec = ChatMessage(
                session_id=session.id, role=MessageRole(m.role), content=m.content,
                tool_calls=[c.to_dict() for c in m.tool_calls], tool_call_id=m.tool_call_id,
                name=m.name, usage=usage if i == len(messages) - 1 else None,
            )  # fmt: skip
            last_id = (await repos.chat_messages.create(rec)).id
        current = await repos.chat_sessions.get(session.id)
        await repos.chat_sessions.update(
            session.id,
            {
                "message_count": current.message_count + len(messages) + 1,
                "last_message_at": utcnow(),
            },
        )
    return last_id


async def chat_stream(
    services: EngineServices,
    agent: Agent,
    session: ChatSession,
    history: list[Message],
    text: str,
    *,
    github_token: str | None = None,
) -> AsyncIterator[str]:
    """SSE events of one chat turn: session, delta…, tool_call/tool_result, usage, done | error.
    `github_token`: the caller's, for an agent without provider_id (the default model; kept in
    memory for this turn only)."""
    frame = _Frames()
    yield frame("session", {"session_id": session.id, "agent_id": agent.id})
    sink = QueueSink()
    inp = RunInput(text, history, session_id=session.id, run_id=session.id)

    async def work() -> Any:
        try:
            with caller_github_token(github_token):
                return await run_agent(services, agent, inp, sink, None)
        finally:
            await sink.queue.put(_END)

    task = asyncio.create_task(work())
    try:
        while True:
            item = await sink.queue.get()
            if item is _END:
                break
            assert isinstance(item, tuple)
            kind: EventType = item[0]
            data: dict[str, Any] = item[1]
            if kind is EventType.STATUS:
                continue
            yield frame(SSE_NAMES.get(kind, kind.value), data)
        try:
            result = task.result()
        except TbdError as exc:
            yield frame("error", {"code": exc.code, "message": exc.message})
            return
        outcome = result.outcome
        usage = {"input_tokens": outcome.usage.input_tokens, "output_tokens": outcome.usage.output_tokens,
                 "cost_usd": round(outcome.usage.cost_usd, 6)}  # fmt: skip
        new = (
            result.messages[1:]
            if result.messages and result.messages[0].role == "user"
            else result.messages
        )
        message_id = await _persist(services, session, new, usage)
        if outcome.status is TaskStatus.FAILED:
            yield frame("error", {"code": "run_failed", "message": outcome.error})
        yield frame("done", {"status": outcome.status.value, "result": outcome.result, "usage": usage,
                           "message_id": message_id, "session_id": session.id, "citations": result.citations})  # fmt: skip
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
