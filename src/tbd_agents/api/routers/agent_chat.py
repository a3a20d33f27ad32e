"""Chat with an agent, and the chat routes of the existing TBD Agents API.

`POST /api/agents/{agent_id}/chat`: one chat turn, streamed as SSE. Every frame has `id: n`
(counted per stream), `event: <type>` and `data: {"type": <type>, ...}`. Types: `session`
(`session_id`, the session created on the first message), `delta` (`content`: answer text as it
streams; also as `delta`), `tool_call` / `tool_result` (with `origin` {kind, name}; the result
with `duration_ms`), `sources` (`items`: the knowledge passages in the context, each with its
`snippet`), `usage`, `log`, `progress`, then `done`
(`usage`, `message_id`, status, citations), preceded by exactly one `error` (`code`, `message`)
when the turn failed. Closing the connection stops the run and its model call. A session of
another agent is a 400. The message is checked by the agent's input guardrails before anything
is stored: a `redact` one's redaction is what is stored (message and session title) and what the
model receives; one that blocks answers 422 and stores nothing.

Ours, additive: `model` (this turn's model among the agent's provider's; kept on the session),
`attachments` (images to vision models, other files into the session's own knowledge source),
`edit_of` (the id of an earlier user message of the session: this message is a
new version of it, answered on the branch before it), `POST …/sessions/{session_id}/regenerate`
(the same stream, answering the active branch's last user message again), and the stored
answer of a stream the client closed early (`metadata.stopped`): see `engine/chat.py` and
`services/chat_branches.py`.

`GET /api/agents/{agent_id}/chat/sessions` (`skip`, `limit`; ours: `q`, `pinned_first`), `GET`
(ours: `active`) / `PATCH` (ours: title, pinned) / `DELETE …/sessions/{session_id}`, `PUT
…/sessions/{session_id}/branch` (ours: switch versions), and `POST /api/chat/start` (the
caller's chat workflow of an agent): see `services/chat_sessions.py`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.api.preconditions import IfMatch, expected_versions
from tbd_agents.domain.models import Agent, ChatSession, KnowledgeSource
from tbd_agents.engine.chat import OpenedTurn, chat_stream, open_regeneration, open_session
from tbd_agents.engine.inprocess import EngineServices, engine_services
from tbd_agents.errors import InvalidData
from tbd_agents.security.github import presented_github_token
from tbd_agents.services.access import Principal
from tbd_agents.services.catalog import records_for
from tbd_agents.services.chat_attachments import (
    MAX_ATTACHMENTS,
    AttachmentIn,
    check_attachments,
    ingest_files,
    session_knowledge,
    session_source,
)
from tbd_agents.services.chat_sessions import (
    delete_session,
    ensure_session_of,
    list_sessions,
    session_detail,
    start_chat_workflow,
    switch_branch,
    update_session,
)
from tbd_agents.services.knowledge import KnowledgeServices
from tbd_agents.services.records import Records
from tbd_agents.storage.protocol import Repositories, eq

router = APIRouter(prefix="/api/agents/{agent_id}/chat", tags=["chat"], responses=ERRORS)


class ChatRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=200_000)
    session_id: str | None = Field(
        default=None, description="Continue this session; omit to start one."
    )
    edit_of: str | None = Field(
        default=None,
        max_length=128,
        description="The id of an earlier user message of the session: this message is a new "
        "version of it (a branch), answered with the conversation before that message.",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="This turn's model, one of the agent's provider's models (its `models`, "
        "`default_model` or the agent's own); kept on the session as `metadata.model`. "
        "Omit for the agent's model.",
    )
    attachments: list[AttachmentIn] = Field(
        default_factory=list,
        max_length=MAX_ATTACHMENTS,
        description="Files sent with the message: images go to the model as image parts (a "
        "vision model only: 422 otherwise), other files become knowledge of this session only "
        "(services/chat_attachments.py).",
    )


async def offered_models(repos: Repositories, agent: Agent) -> list[str]:
    """The models a chat with `agent` may choose: its provider's configured `models` and
    `default_model`, and the agent's own model (empty without a provider)."""
    if not agent.provider_id:
        return []
    provider = await repos.providers.get(agent.provider_id)  # as the run resolves it
    listed = [*provider.models, provider.default_model, agent.model]
    return list(dict.fromkeys(m for m in listed if m))


def check_model(model: str, offered: list[str]) -> None:
    """InvalidData (422) unless `model` is one of `offered`."""
    if model in offered:
        return
    if not offered:
        raise InvalidData(
            "this agent has no provider whose models a chat could choose from; "
            "omit `model` to use the agent's",
            details={"field": "model"},
        )
    raise InvalidData(
        f"model {model!r} is not offered by the agent's provider; choose one of: "
        + ", ".join(offered),
        details={"field": "model", "allowed": offered},
    )


async def engine_for(ctx: ApiContext) -> EngineServices:
    """The engine services of this app, built on first use (sharing the vector store and the
    embedder of the app's knowledge services when they are up, and the event bus of the app's
    runtime, on which the runs its agents delegate to publish their events)."""
    services = ctx.services.get("engine")
    if services is None:
        knowledge = ctx.services.get("knowledge")
        services = await engine_services(
            ctx.settings,
            ctx.store,
            vectors=getattr(knowledge, "vectors", None),
            embedder=getattr(knowledge, "embedder", None),
        )
        ctx.services["engine"] = services
    assert isinstance(services, EngineServices)
    if services.bus is None:  # the runtime starts with the app, but may come up later
        services.bus = getattr(ctx.services.get("runtime"), "bus", None)
    return services


@router.post(
    "", summary="Chat with an agent (server-sent events)", response_class=StreamingResponse
)
async def chat(
    agent_id: Annotated[str, Path(description="Agent id.")],
    body: ChatRequestBody,
    ctx: Ctx,
    caller: Caller,
    request: Request,
) -> StreamingResponse:
    caller.require_write()
    async with ctx.store.unit_of_work() as repos:
        agent = await Records(repos, caller, Agent).get(agent_id)
        session = (
            await Records(repos, caller, ChatSession).get(body.session_id)
            if body.session_id
            else None
        )
        if body.model is not None:
            check_model(body.model, await offered_models(repos, agent))
        model = body.model or agent.model
        if body.attachments and not model and agent.provider_id:
            model = (await repos.providers.get(agent.provider_id)).default_model
    if session is not None:
        ensure_session_of(session, agent.id)
    services = await engine_for(ctx)
    attached = check_attachments(
        body.attachments, model or services.config.default_model, services.catalog
    )
    knowledge = ctx.services.get("knowledge")
    if attached.files and not isinstance(knowledge, KnowledgeServices):
        raise InvalidData(
            "files cannot be attached: the knowledge services are unavailable on this server",
            details={"field": "attachments"},
        )
    turn = await open_session(
        services,
        agent,
        session,
        caller.identity,
        body.message,
        edit_of=body.edit_of,
        model=body.model,
        attachments=attached.names,
    )
    if attached.files:
        assert isinstance(knowledge, KnowledgeServices)
        async with ctx.store.unit_of_work() as repos:
            source_id = await session_source(repos, turn.session)
        await ingest_files(knowledge, source_id, turn.session, attached.files)
    return _streamed(
        services, agent, turn, caller, request, model=body.model, images=attached.images
    )


def _streamed(
    services: EngineServices, agent: Agent, turn: OpenedTurn, caller: Principal, request: Request,
    *, model: str | None = None, images: list[dict[str, str]] | None = None,
) -> StreamingResponse:  # fmt: skip
    # A caller signed in with GitHub lends its token to an agent on the default model.
    token = presented_github_token(request.headers.get("authorization"), caller.via)
    stream = chat_stream(
        services, agent, turn.session, turn.history, turn.guarded.text,
        github_token=token, guarded=turn.guarded, parent_id=turn.parent_id, model=model,
        images=images, knowledge_source_ids=session_knowledge(turn.session),
    )  # fmt: skip
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


AgentId = Annotated[str, Path(description="Agent id.")]
SessionId = Annotated[str, Path(description="Chat session id.")]


class SessionOut(BaseModel):
    id: str
    agent_id: str
    title: str | None
    message_count: int
    created_at: str
    updated_at: str
    last_message_at: str | None = None
    #: Ours: pinned by its owner (`metadata.pinned`). Listings have it (and `last_message_at`)
    #: with `q` or `pinned_first` only.
    pinned: bool = False


class MessageOut(BaseModel):
    id: str
    #: The message's place in the session (1, 2, 3…): the order of the conversation.
    seq: int
    role: str
    content: str
    usage: dict[str, Any] | None
    created_at: str
    # Ours, additive: what the dashboard needs to draw a turn and its versions.
    tool_calls: list[dict[str, Any]] = []
    tool_call_id: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = {}
    #: The message this one follows (branches: `services/chat_branches.py`).
    parent_id: str | None = None
    #: This message's place among its versions: `{index, count, ids}` (1-based index).
    versions: dict[str, Any] | None = None


class SessionDetailOut(SessionOut):
    messages: list[MessageOut]


@router.get(
    "/sessions",
    response_model=list[SessionOut],
    # A plain listing answers the existing row's exact keys (ours come with `q`/`pinned_first`).
    response_model_exclude_unset=True,
    summary="The caller's sessions with the agent",
)
async def sessions(
    agent_id: AgentId,
    ctx: Ctx,
    caller: Caller,
    skip: Annotated[int, Query(ge=0, le=100_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Only sessions whose title or a message contains it."),
    ] = None,
    pinned_first: Annotated[bool, Query(description="Pinned sessions first.")] = False,
) -> list[dict[str, Any]]:
    """The caller's own sessions with the agent, most recently updated first."""
    async with ctx.store.unit_of_work(readonly=True) as repos:
        return await list_sessions(
            repos, caller, agent_id, skip=skip, limit=limit, q=q, pinned_first=pinned_first
        )


@router.get(
    "/sessions/{session_id}",
    response_model=SessionDetailOut,
    summary="A session with its messages (in the conversation's order)",
)
async def session(
    agent_id: AgentId,
    session_id: SessionId,
    ctx: Ctx,
    caller: Caller,
    active: Annotated[
        bool, Query(description="Only the active branch's messages (edits and regenerations).")
    ] = False,
) -> dict[str, Any]:
    async with ctx.store.unit_of_work(readonly=True) as repos:
        return await session_detail(repos, caller, agent_id, session_id, active=active)


class SessionUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(default=None, min_length=1, max_length=200)
    pinned: bool | None = None


@router.patch(
    "/sessions/{session_id}", response_model=SessionOut, summary="Rename or pin a session"
)
async def change_session(
    agent_id: AgentId, session_id: SessionId, body: SessionUpdateIn, ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    """Its place in the recency order is kept."""
    caller.require_write()
    async with ctx.store.unit_of_work() as repos:
        return await update_session(
            repos, caller, agent_id, session_id, title=body.title, pinned=body.pinned
        )


class BranchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_id: str = Field(min_length=1, max_length=128)


@router.put(
    "/sessions/{session_id}/branch",
    response_model=SessionDetailOut,
    summary="Show another version of a message (switch the active branch)",
)
async def change_branch(
    agent_id: AgentId, session_id: SessionId, body: BranchIn, ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    """The branch through `message_id` (down to its newest message) becomes the active one: the
    one shown and sent to the model next turn. Answers the session with the active branch."""
    caller.require_write()
    async with ctx.store.unit_of_work() as repos:
        return await switch_branch(repos, caller, agent_id, session_id, body.message_id)


@router.post(
    "/sessions/{session_id}/regenerate",
    summary="Answer the last user message again (server-sent events)",
    response_class=StreamingResponse,
)
async def regenerate(
    agent_id: AgentId, session_id: SessionId, ctx: Ctx, caller: Caller, request: Request
) -> StreamingResponse:
    """The same stream as a chat turn; the new answer is a new version of the one it replaces
    (which is kept: `PUT …/branch` switches back)."""
    caller.require_write()
    async with ctx.store.unit_of_work() as repos:
        agent = await Records(repos, caller, Agent).get(agent_id)
        found = await Records(repos, caller, ChatSession).get(session_id)
    ensure_session_of(found, agent.id)
    services = await engine_for(ctx)
    turn = await open_regeneration(services, agent, found)
    chosen = turn.session.metadata.get("model")  # the chat's model choice, checked when made
    return _streamed(
        services, agent, turn, caller, request, model=chosen if isinstance(chosen, str) else None
    )


@router.delete(
    "/sessions/{session_id}", status_code=204, summary="Delete a session and its messages"
)
async def remove_session(
    agent_id: AgentId, session_id: SessionId, ctx: Ctx, caller: Caller, if_match: IfMatch = None
) -> Response:
    expected = expected_versions(if_match)
    async with ctx.store.unit_of_work() as repos:
        deleted = await delete_session(
            repos, caller, agent_id, session_id, expected_versions=expected
        )
        # the files attached in the chat (its own knowledge source) go with it
        attached = [
            source_id
            for source_id in session_knowledge(deleted)
            if await repos.knowledge_sources.find_one(eq("id", source_id)) is not None
        ]
        for source_id in attached:
            await records_for(KnowledgeSource, repos, caller, ctx.cipher).delete(source_id)
    knowledge = ctx.services.get("knowledge")
    if isinstance(knowledge, KnowledgeServices):
        for source_id in attached:
            await knowledge.forget_source_vectors(source_id)
    return Response(status_code=204)


start_router = APIRouter(tags=["chat"], responses=ERRORS)


class ChatStartIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    agent_id: str = Field(min_length=1, max_length=128)


class ChatStartOut(BaseModel):
    workflow_id: str
    agent_name: str
    agent_id: str


@start_router.post(
    "/api/chat/start", response_model=ChatStartOut, summary="Get or create a chat workflow"
)
async def start_chat(body: ChatStartIn, ctx: Ctx, caller: Caller) -> dict[str, str]:
    """The caller's active `infinite_session` workflow of the agent; a new one titled
    `Chat: {agent name}` (max_turns 50) when there is none."""
    async with ctx.store.unit_of_work() as repos:
        return await start_chat_workflow(repos, caller, body.agent_id)
