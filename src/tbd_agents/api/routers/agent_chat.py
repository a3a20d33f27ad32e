"""POST /api/agents/{agent_id}/chat: one chat turn with the agent, streamed as SSE.

Events: `session` (the session id, created on the first message), `delta` (answer text as it
streams), `tool_call` / `tool_result`, `usage`, `log`, `progress`, then `done` (status, usage,
citations) or `error`. Closing the connection stops the run and its model call.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.domain.models import Agent, ChatSession
from tbd_agents.engine.chat import chat_stream, open_session
from tbd_agents.engine.inprocess import EngineServices, engine_services
from tbd_agents.services.records import Records

router = APIRouter(prefix="/api/agents/{agent_id}/chat", tags=["chat"], responses=ERRORS)


class ChatRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=200_000)
    session_id: str | None = Field(
        default=None, description="Continue this session; omit to start one."
    )


async def engine_for(ctx: ApiContext) -> EngineServices:
    """The engine services of this app, built on first use (sharing the vector store and the
    embedder of the app's knowledge services when they are up)."""
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
    return services


@router.post(
    "", summary="Chat with an agent (server-sent events)", response_class=StreamingResponse
)
async def chat(
    agent_id: Annotated[str, Path(description="Agent id.")],
    body: ChatRequestBody,
    ctx: Ctx,
    caller: Caller,
) -> StreamingResponse:
    caller.require_write()
    async with ctx.store.unit_of_work() as repos:
        agent = await Records(repos, caller, Agent).get(agent_id)
        session = (
            await Records(repos, caller, ChatSession).get(body.session_id)
            if body.session_id
            else None
        )
    services = await engine_for(ctx)
    session, history = await open_session(services, agent, session, caller.identity, body.message)
    return StreamingResponse(
        chat_stream(services, agent, session, history, body.message),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
