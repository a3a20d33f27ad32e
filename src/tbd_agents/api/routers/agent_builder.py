"""What the dashboard's agent builder needs beyond the agent's CRUD routes (additions only):

- `GET /api/agents/{agent_id}/versions`: the agent's versions, newest first (number, who, when,
  changed fields, summary; without snapshots). A version is recorded at every create and update
  of the agent through the API (`services/agent_versions.py`).
- `GET /api/agents/{agent_id}/versions/{number}`: one version with its snapshot.
- `POST /api/agents/{agent_id}/versions/{number}/restore`: write that snapshot over the agent (a
  new version, `restored from N`); with `If-Match`, only if the agent is still at that version
  (412 otherwise). Answers the agent, with its ETag.
- `POST /api/agents/{agent_id}/context`: the context a chat turn would give the model — the
  system prompt's sections (prompt, skills, knowledge and memories retrieved for `query`, the
  output-format policy) and the tool definitions, each with its token count, and the model's
  context window; for the stored agent or for `draft` (fields of a PUT body over it, unsaved).
- `POST /api/agents/{agent_id}/preview-chat`: one test turn with `draft` over the agent,
  streamed as SSE like the chat route; `history` is the test conversation so far, nothing is
  stored as a chat session.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tbd_agents.api.crud import ERRORS, record_response
from tbd_agents.api.deps import Caller, Ctx
from tbd_agents.api.preconditions import IfMatch, expected_versions
from tbd_agents.api.present import present_one
from tbd_agents.api.routers.agent_chat import engine_for
from tbd_agents.domain.models import Agent
from tbd_agents.domain.versions import AgentVersion
from tbd_agents.engine.chat import preview_stream
from tbd_agents.engine.inprocess import preview_context
from tbd_agents.engine.messages import Message
from tbd_agents.security.github import presented_github_token
from tbd_agents.services.access import Principal
from tbd_agents.services.agent_versions import NOT_SNAPSHOT, AgentRecords
from tbd_agents.storage.protocol import Repositories

router = APIRouter(prefix="/api/agents/{agent_id}", tags=["agent builder"], responses=ERRORS)

AgentId = Annotated[str, Path(description="Agent id.")]
Number = Annotated[int, Path(ge=1, le=2_147_483_647, description="Version number.")]


class VersionOut(BaseModel):
    agent_id: str
    number: int
    github_user: str | None
    created_at: str
    changed_fields: list[str]
    summary: str


class VersionDetailOut(VersionOut):
    snapshot: dict[str, Any]


def _version(v: AgentVersion, with_snapshot: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "agent_id": v.agent_id, "number": v.number, "github_user": v.github_user,
        "created_at": v.created_at.isoformat(), "changed_fields": list(v.changed_fields),
        "summary": v.summary,
    }  # fmt: skip
    if with_snapshot:
        out["snapshot"] = v.snapshot
    return out


@router.get("/versions", response_model=list[VersionOut], summary="The agent's versions")
async def versions(agent_id: AgentId, ctx: Ctx, caller: Caller) -> list[dict[str, Any]]:
    async with ctx.store.unit_of_work(readonly=True) as repos:
        found = await AgentRecords(repos, caller).list_versions(agent_id)
    return [_version(v) for v in found]


@router.get(
    "/versions/{number}", response_model=VersionDetailOut, summary="One version of the agent"
)
async def version(agent_id: AgentId, number: Number, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    async with ctx.store.unit_of_work(readonly=True) as repos:
        found = await AgentRecords(repos, caller).get_version(agent_id, number)
    return _version(found, with_snapshot=True)


@router.post(
    "/versions/{number}/restore",
    summary="Restore a version (saved as a new version)",
    responses={200: {"description": "The agent as restored"}},
)
async def restore(
    agent_id: AgentId, number: Number, ctx: Ctx, caller: Caller, if_match: IfMatch = None
) -> Response:
    expected = expected_versions(if_match)
    async with ctx.store.unit_of_work() as repos:
        agent = await AgentRecords(repos, caller).restore(
            agent_id, number, expected_versions=expected
        )
        body = await present_one(agent, repos, ctx)
    return record_response(body, agent)


class HistoryItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str = Field(max_length=200_000)


class ContextIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    draft: dict[str, Any] | None = Field(
        default=None, description="Agent fields (as in a PUT body) over the stored agent, unsaved."
    )
    query: str = Field(default="", max_length=20_000, description="A sample user message.")


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    draft: dict[str, Any] | None = None
    message: str = Field(min_length=1, max_length=200_000)
    history: list[HistoryItem] = Field(default_factory=list, max_length=200)


async def _agent_as_drafted(
    repos: Repositories, caller: Principal, agent_id: str, draft: dict[str, Any] | None
) -> Agent:
    """The stored agent, or `draft`'s fields over it checked as a save would check them
    (422 naming the field; nothing is stored)."""
    service = AgentRecords(repos, caller)
    agent = await service.get(agent_id)
    if not draft:
        return agent
    editable = set(Agent.model_fields) - NOT_SNAPSHOT
    changes = {k: v for k, v in draft.items() if k in editable}
    await service.check_references(changes)
    return service._validated({**agent.model_dump(), **changes})


@router.post("/context", summary="The context a turn would give the model, with token counts")
async def context(agent_id: AgentId, body: ContextIn, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    async with ctx.store.unit_of_work(readonly=True) as repos:
        agent = await _agent_as_drafted(repos, caller, agent_id, body.draft)
    return await preview_context(await engine_for(ctx), agent, body.query)


@router.post(
    "/preview-chat",
    summary="A test turn with an unsaved draft (server-sent events, not stored)",
    response_class=StreamingResponse,
)
async def preview_chat(
    agent_id: AgentId, body: PreviewIn, ctx: Ctx, caller: Caller, request: Request
) -> StreamingResponse:
    caller.require_write()
    async with ctx.store.unit_of_work(readonly=True) as repos:
        agent = await _agent_as_drafted(repos, caller, agent_id, body.draft)
    services: Any = await engine_for(ctx)
    history = [Message(h.role, h.content) for h in body.history]
    token = presented_github_token(request.headers.get("authorization"), caller.via)
    stream = preview_stream(
        services, agent, history, body.message, owner=caller.identity, github_token=token
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
