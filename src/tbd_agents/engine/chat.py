"""Chat: one user message → one agent run, streamed as server-sent events.

The run is the same `AgentLoop` workflows use (tools, knowledge, memory, guardrails). The user
message is checked by the agent's input guardrails first, and stored (with the session's title)
as the model will see it: redacted where a `redact` guardrail matched; a guardrail that blocks
refuses the turn (422) before anything is stored. The assistant and tool messages are stored
after the run, with usage, in the order the run produced them: the storage layer numbers a
session's messages (`ChatMessage.seq`), and the history of the next turn is read in that order,
with every tool result put right after its call (`history.replayable`, which also heals sessions
stored in the wrong order before messages were numbered). If the client goes away, the consumer
cancels the run, which cancels the model call in flight, and the answer streamed so far is
stored all the same, marked `metadata.stopped = true` (in a task of its own: the response's
task is being cancelled).

Branches (`services/chat_branches.py`): every message a turn stores names the message it follows
(`metadata.parent_id`), and the session's `metadata.active_leaf` is moved to the turn's last
message. `open_session(edit_of=...)` stores an edited user message as a new version of an earlier
one; `open_regeneration` answers the active branch's last user message again. The history a turn
sends the model is the active branch only.

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
from tbd_agents.engine.delegation import Chain
from tbd_agents.engine.guardrails import GuardedPrompt, Guardrails, guard_prompt
from tbd_agents.engine.history import replayable
from tbd_agents.engine.inprocess import EngineServices, run_agent
from tbd_agents.engine.messages import Message
from tbd_agents.errors import GuardrailBlocked, InvalidData, TbdError
from tbd_agents.observability.runs import chat_messages_stored, chat_turn
from tbd_agents.observability.usage.records import UsageScope
from tbd_agents.runtime.contracts import EventType
from tbd_agents.services.approvals import gate_for
from tbd_agents.services.chat_branches import (
    ACTIVE_LEAF,
    BRANCHED,
    PARENT,
    STOPPED,
    Tree,
    last_user_message,
)
from tbd_agents.services.workflow_runs import RunStateRefused
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
    #: The user message the turn answers (what its stored messages follow).
    parent_id: str | None = None

    def __iter__(self) -> Iterator[Any]:  # `session, history = await open_session(...)`
        return iter((self.session, self.history))


async def open_session(
    services: EngineServices,
    agent: Agent,
    session: ChatSession | None,
    owner: str,
    text: str,
    *,
    edit_of: str | None = None,
    model: str | None = None,
    attachments: list[str] | None = None,
) -> OpenedTurn:
    """The session (created when None) and its history; stores the user's message, checked by
    the agent's input guardrails first (GuardrailBlocked, 422, when one blocks: then nothing is
    stored and no session is created). `edit_of`: the id of an earlier user message of the
    session this message is a new version of (its history is the branch before that message).
    `model`: the chat's model choice, kept on the session (`metadata.model`) for the dashboard to
    show; `attachments`: the names of the files sent with the message, kept on it
    (`metadata.attachments`)."""
    if not text.strip():
        raise InvalidData("message must not be empty", details={"field": "message"})
    if edit_of is not None and session is None:
        raise InvalidData(
            "edit_of needs the session_id of the message", details={"field": "edit_of"}
        )
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
        if edit_of is None:
            branch = await _branch(repos, session)
        else:
            branch = await _edited_branch(repos, session, edit_of)
        parent = branch[-1].id if branch else None
        user = await repos.chat_messages.create(
            ChatMessage(
                session_id=session.id, role=MessageRole.USER, content=text,
                metadata={PARENT: parent, **({"attachments": attachments} if attachments else {})},
            )
        )  # fmt: skip
        meta = {**session.metadata, ACTIVE_LEAF: user.id}
        if edit_of is not None:
            meta[BRANCHED] = True
        session = await repos.chat_sessions.update(session.id, {"metadata": meta})
    chat_messages_stored(["user"])
    return OpenedTurn(session, _replayable(session.id, branch), guarded, user.id)


async def open_regeneration(
    services: EngineServices, agent: Agent, session: ChatSession
) -> OpenedTurn:
    """A turn answering the active branch's last user message again (nothing new is stored
    now; the answer becomes a new version of the answer it replaces). 400 when the branch has
    no user message."""
    async with services.store.unit_of_work() as repos:
        records, _ = await load_guardrails(repos, agent, services.config.host.admins)
        tree = Tree.of(await _all_messages(repos, session.id))
        path = tree.active_path(session)
        user = last_user_message(path)
        if user is None:
            raise RunStateRefused(
                f"chat session {session.id!r} has no message to answer again",
                details={"session_id": session.id},
            )
        guarded = guard_prompt(Guardrails.from_records(records), user.content)
        if guarded.blocking is not None:
            raise GuardrailBlocked(guarded.blocking.block_message)
        before = path[: path.index(user)]
        session = await repos.chat_sessions.update(
            session.id, {"metadata": {**session.metadata, BRANCHED: True}}
        )
    return OpenedTurn(session, _replayable(session.id, before), guarded, user.id)


async def _all_messages(repos: Repositories, session_id: str) -> list[ChatMessage]:
    page = await repos.chat_messages.list(
        Query(filters=(eq("session_id", session_id),), sort=(Sort("seq"),))
    )
    return page.items


async def _branch(repos: Repositories, session: ChatSession) -> list[ChatMessage]:
    """The active branch's last HISTORY_LIMIT messages in their order (a session that never
    branched: simply its newest messages)."""
    if not session.metadata.get(BRANCHED):
        page = await repos.chat_messages.list(
            Query(
                filters=(eq("session_id", session.id),),
                sort=(Sort("seq", True),),
                limit=HISTORY_LIMIT,
            )
        )
        return list(reversed(page.items))
    tree = Tree.of(await _all_messages(repos, session.id))
    return tree.active_path(session)[-HISTORY_LIMIT:]


async def _edited_branch(
    repos: Repositories, session: ChatSession, edit_of: str
) -> list[ChatMessage]:
    """The branch before the user message `edit_of` (422 when it is not a user message of the
    session)."""
    tree = Tree.of(await _all_messages(repos, session.id))
    edited = tree.by_id.get(edit_of)
    if edited is None or edited.role is not MessageRole.USER:
        raise InvalidData(
            f"edit_of {edit_of!r} is not a user message of chat session {session.id!r}",
            details={"field": "edit_of"},
        )
    return tree.path_to(tree.parent.get(edit_of))[-HISTORY_LIMIT:]


def _replayable(session_id: str, records: list[ChatMessage]) -> list[Message]:
    """The records as model messages, every tool result right after its call (a repaired history
    is logged)."""
    history, repair = replayable([_to_message(m) for m in records])
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
    *,
    parent_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
    tools: dict[str, dict[str, Any]] | None = None,
    citations: list[dict[str, Any]] | None = None,
) -> str | None:
    """Store the run's messages in their order (numbered together, `ChatMessage.seq`, which
    also counts them in the session's `message_count`), each following the one before it (the
    first follows `parent_id`), and make the last the session's active leaf; its id. `extra`:
    metadata of every stored message; `tools`: duration and origin by tool call id;
    `citations`: the turn's knowledge (on the last message)."""
    records: list[ChatMessage] = []
    parent = parent_id
    last = len(messages) - 1
    for i, m in enumerate(messages):
        meta: dict[str, Any] = {
            **(extra or {}),
            **_metadata(m, i == last, tools or {}, citations or []),
        }
        if parent:
            meta[PARENT] = parent
        record = ChatMessage(
            session_id=session.id, role=MessageRole(m.role), content=m.content,
            tool_calls=[c.to_dict() for c in m.tool_calls], tool_call_id=m.tool_call_id,
            name=m.name, usage=usage if i == last else None, metadata=meta,
        )  # fmt: skip
        records.append(record)
        parent = record.id
    async with services.store.unit_of_work() as repos:
        changes: dict[str, Any] = {"last_message_at": utcnow()}
        if records:
            await repos.chat_messages.insert_many(records)
            current = await repos.chat_sessions.get(session.id)  # a pin may have changed it
            changes["metadata"] = {**current.metadata, ACTIVE_LEAF: records[-1].id}
        await repos.chat_sessions.update(session.id, changes)
    chat_messages_stored([r.role.value for r in records])
    return records[-1].id if records else None


#: Stores of answers in flight (a reference keeps each task alive until it ends).
_STORES: set[asyncio.Future[Any]] = set()


def _store_stopped(
    services: EngineServices, session: ChatSession, text: str, parent_id: str | None
) -> None:
    """Store the answer streamed before the client went away, marked stopped, in a task of its
    own (the stream's task is cancelled: anything it awaited now would be cancelled too)."""

    async def store() -> None:
        try:
            await _persist(
                services, session, [Message.from_dict({"role": "assistant", "content": text})],
                {}, parent_id=parent_id, extra={STOPPED: True},
            )  # fmt: skip
        except Exception:
            log.exception("chat session %s: the stopped answer could not be stored", session.id)

    task = asyncio.get_running_loop().create_task(store())
    _STORES.add(task)
    task.add_done_callback(_STORES.discard)


async def chat_stream(
    services: EngineServices,
    agent: Agent,
    session: ChatSession,
    history: list[Message],
    text: str,
    *,
    github_token: str | None = None,
    guarded: GuardedPrompt | None = None,
    parent_id: str | None = None,
    model: str | None = None,
    images: list[dict[str, str]] | None = None,
    knowledge_source_ids: list[str] | None = None,
) -> AsyncIterator[str]:
    """SSE events of one chat turn: session, delta…, tool_call/tool_result, usage, then done,
    with exactly one error before it when the turn failed. `github_token`: the caller's, for an
    agent without provider_id (the default model; kept in memory for this turn only).
    `guarded`: the message as `open_session` checked it (then `text` is its redacted text).
    `parent_id`: the stored user message the turn answers (`OpenedTurn.parent_id`). When the
    stream ends before `done` (the client went away), the text streamed so far is stored.
    `model`: this turn's model instead of the agent's (the caller checked it is offered).
    `images`: image parts sent with the message; `knowledge_source_ids`: sources searched besides
    the agent's (the session's attachments; services/chat_attachments.py).
    Knowledge passages in the context are sent as a `sources` frame (`items`: the citations,
    each with `snippet`, the passage's text) before the answer streams."""
    frame = _Frames()
    opened: dict[str, Any] = {"session_id": session.id, "agent_id": agent.id}
    if parent_id:
        opened["user_message_id"] = parent_id  # ours: the message the turn answers
    yield frame("session", opened)
    sink = QueueSink()
    if guarded is not None:
        text = guarded.text
    inp = RunInput(
        text, history, session_id=session.id, run_id=session.id, guarded=guarded,
        images=list(images or []), knowledge_source_ids=list(knowledge_source_ids or []),
        approvals=await gate_for(services.store, agent, None, can_pause=False),
    )  # fmt: skip
    errors = 0
    streamed: list[str] = []  # the answer's text so far, stored if the client goes away
    ended = False
    tools: dict[str, dict[str, Any]] = {}

    async def work() -> Any:
        try:
            with (
                caller_github_token(github_token),
                chat_turn(agent, session.id, session.github_user) as turn,
            ):
                scope = UsageScope(user_id=session.github_user, session_id=session.id)
                result = await run_agent(
                    services, agent, inp, sink, None, usage=scope, model_override=model,
                    chain=Chain.root(agent, session_id=session.id, user_id=session.github_user),
                )  # fmt: skip
                turn.finished(result.model, result.outcome.status.value)
                return result
        finally:
            await sink.queue.put(_END)

    task = asyncio.create_task(work())
    try:
        async for name, data in _relay(sink):
            errors += name == "error"
            if name == _DELTA:
                streamed.append(str(data.get("delta") or data.get("content") or ""))
            elif name == EventType.TOOL_RESULT.value and data.get("id"):
                tools[str(data["id"])] = {
                    "duration_ms": data.get("duration_ms"), "source": data.get("source"),
                    "origin": data.get("origin"),
                }  # fmt: skip
            yield frame(name, data)
            if name == EventType.LOG.value and data.get("event") == "knowledge_loaded":
                yield frame("sources", {"items": data.get("citations") or []})
        try:
            result = task.result()
        except TbdError as exc:
            ended = True
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
        ended = True
        # In a task of its own: a client going away now must not cancel the store half-way.
        store = asyncio.ensure_future(_persist(
            services, session, new, usage, parent_id=parent_id, tools=tools,
            citations=result.citations,
        ))  # fmt: skip
        _STORES.add(store)
        store.add_done_callback(_STORES.discard)
        message_id = await asyncio.shield(store)
        if outcome.status is TaskStatus.FAILED and not errors:
            yield frame("error", {"code": "run_failed", "message": outcome.error})
        yield frame("done", {"status": outcome.status.value, "result": outcome.result, "usage": usage,
                           "message_id": message_id, "session_id": session.id, "citations": result.citations})  # fmt: skip
    finally:
        text_so_far = "".join(streamed)
        if not ended and text_so_far.strip():
            _store_stopped(services, session, text_so_far, parent_id)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


#: The SSE name of the answer's text deltas (kept to store a stopped answer).
_DELTA = SSE_NAMES.get(EventType.MESSAGE_DELTA, EventType.MESSAGE_DELTA.value)


async def _relay(sink: QueueSink) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The run's events as (SSE name, data) until the run puts `_END` (status events left out:
    the final status is the stream's `done`)."""
    while True:
        item = await sink.queue.get()
        if item is _END:
            return
        assert isinstance(item, tuple)
        kind: EventType = item[0]
        data: dict[str, Any] = item[1]
        if kind is not EventType.STATUS:
            yield SSE_NAMES.get(kind, kind.value), data


async def preview_stream(
    services: EngineServices,
    agent: Agent,
    history: list[Message],
    text: str,
    *,
    owner: str,
    github_token: str | None = None,
) -> AsyncIterator[str]:
    """SSE events of one test turn with `agent` as given (the agent builder's unsaved draft):
    the same run as `chat_stream` (guardrails, tools, knowledge, memory), with the history the
    client sends, and nothing stored as a chat session. Frames: `preview` first, then as a chat
    turn's, `done` without a message id."""
    frame = _Frames()
    yield frame("preview", {"agent_id": agent.id})
    sink = QueueSink()
    inp = RunInput(
        text, history, approvals=await gate_for(services.store, agent, None, can_pause=False)
    )
    errors = 0

    async def work() -> Any:
        try:
            with caller_github_token(github_token):
                scope = UsageScope(user_id=owner)
                return await run_agent(services, agent, inp, sink, None, usage=scope)
        finally:
            await sink.queue.put(_END)

    task = asyncio.create_task(work())
    try:
        async for name, data in _relay(sink):
            errors += name == "error"
            yield frame(name, data)
        try:
            result = task.result()
        except TbdError as exc:
            if not errors:
                yield frame("error", {"code": exc.code, "message": exc.message})
            return
        outcome = result.outcome
        usage = {"input_tokens": outcome.usage.input_tokens, "output_tokens": outcome.usage.output_tokens,
                 "cost_usd": round(outcome.usage.cost_usd, 6)}  # fmt: skip
        if outcome.status is TaskStatus.FAILED and not errors:
            yield frame("error", {"code": "run_failed", "message": outcome.error})
        yield frame("done", {"status": outcome.status.value, "result": outcome.result, "usage": usage,
                           "citations": result.citations})  # fmt: skip
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
