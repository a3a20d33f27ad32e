"""Messages of a chat session: /api/chat/sessions/{session_id}/messages, in the conversation's
order (`seq`, given when a message is stored; a new message is numbered after the last)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import MAX_LIMIT, Caller, Ctx
from tbd_agents.api.schemas import (
    json_response,
    output_schema,
    page_json,
    page_response,
    page_schema,
    record_json,
)
from tbd_agents.domain.enums import MessageRole
from tbd_agents.domain.models import ChatMessage, ChatSession
from tbd_agents.domain.types import LenientEnum
from tbd_agents.services.catalog import ChatMessages
from tbd_agents.services.records import Records
from tbd_agents.services.validation import Input
from tbd_agents.storage.protocol import Sort, eq

router = APIRouter(
    prefix="/api/chat/sessions/{session_id}/messages", tags=["chat"], responses=ERRORS
)
SessionId = Annotated[str, Path(description="Chat session id.")]


class MessageCreate(Input):
    role: Annotated[MessageRole, LenientEnum]
    content: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    usage: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


@router.get("", response_model=page_schema(ChatMessage), summary="List a session's messages")
async def list_messages(
    request: Request,
    session_id: SessionId,
    ctx: Ctx,
    caller: Caller,
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT)] = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    async with ctx.store.unit_of_work() as repos:
        service = ChatMessages(repos, caller)
        await Records(repos, caller, ChatSession).get(session_id)
        page = await service.list(
            [eq("session_id", session_id)], limit=limit, cursor=cursor, sort=(Sort("seq"),)
        )
    return page_response(page_json(ChatMessage, page.items), page.next_cursor, request.url)


@router.post(
    "",
    status_code=201,
    response_model=output_schema(ChatMessage),
    summary="Add a message to a session",
)
async def add_message(
    session_id: SessionId, body: MessageCreate, ctx: Ctx, caller: Caller
) -> Response:
    data = body.model_dump()
    data["session_id"] = session_id
    async with ctx.store.unit_of_work() as repos:
        await Records(repos, caller, ChatSession).get(session_id)
        message = await ChatMessages(repos, caller).create(data)
    return json_response(record_json(message), 201)
