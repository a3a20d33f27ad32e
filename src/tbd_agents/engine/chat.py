"""Chat: one user message → one agent run, streamed as server-sent events.

The run is the same `AgentLoop` workflows use (tools, knowledge, memory, guardrails). The user
message is checked by the agent's input guardrails first, and stored (with the session's title)
as the model will see it: redacted where a `redact` guardrail matched; a guardrail that blocks
refuses the turn (422) before anything is stored. The assistant and tool messages are stored
after the run, with usage, in the order the run produced them: the storage layer numbers a
session's messages (`ChatMessage.seq`), and the history of the next turn is read in that order,
with every tool result put right after its call (`history.replayable`, which also heals sessions
stored in the wrong order before messages were numbered). If the client goes away, the consumer
cancels the run, which cancels the model call in flight.

A failed turn sends exactly one `error` frame: the run's own (a provider error, a guardrail, a
timeout), or else one saying the run failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tbd_agents.domain.enums import MessageRole, TaskStatus
from tbd_agents.domain.models import Agent, ChatMessage, ChatSession
from tbd_agents.domain.types import utcnow
from tbd_agents.engine.builder import load_guardrails
from tbd_agents.engine.context import RunInput
from tbd_agents.engine.default_provider import caller_github_token
from tbd_agents.engine.guardrails import GuardedPrompt, Guardrails, guard_prompt
from tbd_agents.engine.history import replayable
from tbd_agents.engine.inprocess import EngineServices, run_agent
from tbd_agents.engine.messages import Message
from tbd_agents.errors import GuardrailBlocked, InvalidData, TbdError
from tbd_agents.observability.runs import chat_messages_stored, chat_turn
from tbd_agents.observability.usage.records import UsageScope
from tbd_agents.runtime.contracts import EventType
from tbd_agents.storage.protocol import Query, Repositories, Sort, eq

log = logging.getLogger(__name__)

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


@dataclass(slots=True)
class OpenedTurn:
    """A turn ready to run: its session, the history before it, and the user's message as the
    guardrails left it (what was stored and what the model receives)."""

    session: ChatSession
    history: list[Message]
    guarded: GuardedPrompt

    def __iter__(self) -> Iterator[Any]:  # `session, history = await open_session(...)`
        return iter((self.session, self.history))


async def open_session(
    services: EngineServices,
    agent: Agent,
    session: ChatSession | None,
    owner: str,
    text: str,
    *,
    model: str | None = None,
    attachments: list[str] | None = None,
) -> OpenedTurn:
    """The session (created when None) and its history; stores the user's message, checked by
    the agent's input guardrails first (GuardrailBlocked, 422, when one blocks: then nothing is
    stored and no session is created). `model`: the chat's model choice, kept on the session
    (`metadata.model`) for the dashboard to show; `attachments`: the names of the files sent
    with the message, kept on it (`metadata.attachments`)."""
    if not text.strip():
        raise InvalidData("message must not be empty", details={"field": "message"})
    async with services.store.unit_of_work() as repos:
        records, _ = await load_guardrails(repos, agent, services.config.host.admins)
        guarded = guard_prompt(Guardrails.from_records(records), text)
        blocking = guarded.blocking
        if blocking is not None:
            raise GuardrailBlocked(blocking.block_message)
        text = guarded.text
        if session is None:
            # The first 80 characters of the first line, as the existing TBD Agents titled chats.
            title = text.strip().splitlines()[0][:80] if text.strip() else None
            session = await repos.chat_sessions.create(
                ChatSession(
                    agent_id=agent.id, github_user=owner, title=title or None,
                    metadata={"model": model} if model else {},
                )
            )  # fmt: skip
        elif session.agent_id != agent.id:
            raise InvalidData(f"chat session {session.id} belongs to another agent")
        elif model and session.metadata.get("model") != model:
            metadata = {**session.metadata, "model": model}
            await repos.chat_sessions.update(session.id, {"metadata": metadata})
            session.metadata = metadata
        history = await _history(repos, session.id)
        await repos.chat_messages.create(
            ChatMessage(
                session_id=session.id, role=MessageRole.USER, content=text,
                metadata={"attachments": attachments} if attachments else {},
            )
        )  # fmt: skip
    chat_messages_stored(["user"])
    return OpenedTurn(session, history, guarded)


async def _history(repos: Repositories, session_id: str) -> list[Message]:
    """The session's last HISTORY_LIMIT messages in their order, every tool result right after
    its call (a repaired history is logged)."""
    page = await repos.chat_messages.list(
        Query(
            filters=(eq("session_id", session_id),),
            sort=(Sort("seq", True),),
            limit=HISTORY_LIMIT,
        )
    )
    history, repair = replayable([_to_message(m) for m in reversed(page.items)])
    if repair.changed:
        log.warning("chat session %s: history put in order to replay it: %s", session_id,
                    repair.describe())  # fmt: skip
    return history


def _to_message(m: ChatMessage) -> Message:
    return Message.from_dict(
        {"role": m.role.value, "content": m.content, "tool_calls": m.tool_calls,
         "tool_call_id": m.tool_call_id, "name": m.name}
    )  # fmt: skip


def _metadata(
    m: Message, last: bool, tools: dict[str, dict[str, Any]], citations: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the dashboard shows besides the text: a tool result's `duration_ms` and `source`
    (its origin), the citations of the turn's knowledge on its last message."""
    meta: dict[str, Any] = {}
    if m.role == "tool" and m.tool_call_id in tools:
        meta.update(tools[m.tool_call_id])
    if last and citations:
        meta["citations"] = citations
    return meta


async def _persist(
    services: EngineServices,
    session: ChatSession,
    messages: list[Message],
    usage: dict[str, Any],
    tools: dict[str, dict[str, Any]] | None = None,
    citations: list[dict[str, Any]] | None = None,
) -> str | None:
    """Store the run's messages in their order (numbered together, `ChatMessage.seq`, which
    also counts them in the session's `message_count`) and the time of the last; its id.
    `tools`: duration and origin by tool call id; `citations`: the turn's knowledge."""
    last = len(messages) - 1
    records = [
        ChatMessage(
            session_id=session.id, role=MessageRole(m.role), content=m.content,
            tool_calls=[c.to_dict() for c in m.tool_calls], tool_call_id=m.tool_call_id,
            name=m.name, usage=usage if i == last else None,
            metadata=_metadata(m, i == last, tools or {}, citations or []),
        )
        for i, m in enumerate(messages)
    ]  # fmt: skip
    async with services.store.unit_of_work() as repos:
        if records:
            await repos.chat_messages.insert_many(records)
        await repos.chat_sessions.update(session.id, {"last_message_at": utcnow()})
    chat_messages_stored([r.role.value for r in records])
    return records[-1].id if records else None


async def chat_stream(
    services: EngineServices,
    agent: Agent,
    session: ChatSession,
    history: list[Message],
    text: str,
    *,
    github_token: str | None = None,
    guarded: GuardedPrompt | None = None,
    model: str | None = None,
    images: list[dict[str, str]] | None = None,
    knowledge_source_ids: list[str] | None = None,
) -> AsyncIterator[str]:
    """SSE events of one chat turn: session, delta…, tool_call/tool_result, usage, then done,
    with exactly one error before it when the turn failed. `github_token`: the caller's, for an
    agent without provider_id (the default model; kept in memory for this turn only).
    `guarded`: the message as `open_session` checked it (then `text` is its redacted text).
    `model`: this turn's model instead of the agent's (the caller checked it is offered).
    `images`: image parts sent with the message; `knowledge_source_ids`: sources searched besides
    the agent's (the session's attachments; services/chat_attachments.py).
    Knowledge passages in the context are sent as a `sources` frame (`items`: the citations,
    each with `snippet`, the passage's text) before the answer streams."""
    frame = _Frames()
    yield frame("session", {"session_id": session.id, "agent_id": agent.id})
    sink = QueueSink()
    if guarded is not None:
        text = guarded.text
    inp = RunInput(
        text, history, session_id=session.id, run_id=session.id, guarded=guarded,
        images=list(images or []), knowledge_source_ids=list(knowledge_source_ids or []),
    )  # fmt: skip
    errors = 0
    tools: dict[str, dict[str, Any]] = {}

    async def work() -> Any:
        try:
            with (
                caller_github_token(github_token),
                chat_turn(agent, session.id, session.github_user) as turn,
            ):
                scope = UsageScope(user_id=session.github_user, session_id=session.id)
                result = await run_agent(
                    services, agent, inp, sink, None, usage=scope, model_override=model
                )
                turn.finished(result.model, result.outcome.status.value)
                return result
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
            errors += kind is EventType.ERROR
            if kind is EventType.TOOL_RESULT and data.get("id"):
                tools[str(data["id"])] = {
                    "duration_ms": data.get("duration_ms"), "source": data.get("source"),
                    "origin": data.get("origin"),
                }  # fmt: skip
            yield frame(SSE_NAMES.get(kind, kind.value), data)
            if kind is EventType.LOG and data.get("event") == "knowledge_loaded":
                yield frame("sources", {"items": data.get("citations") or []})
        try:
            result = task.result()
        except TbdError as exc:
            if not errors:
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
        message_id = await _persist(services, session, new, usage, tools, result.citations)
        if outcome.status is TaskStatus.FAILED and not errors:
            yield frame("error", {"code": "run_failed", "message": outcome.error})
        yield frame("done", {"status": outcome.status.value, "result": outcome.result, "usage": usage,
                           "message_id": message_id, "session_id": session.id, "citations": result.citations})  # fmt: skip
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
