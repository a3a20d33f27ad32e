"""The agents' MCP server at `/mcp` (streamable HTTP, the `mcp` SDK's low-level server).

Every request is authenticated with an API key as `Authorization: Bearer <key>` (as the rest of
the API) before the MCP layer sees it: anything else is a 401. The tools are the caller's own
agents that have `mcp_exposed` on (`services/agent_endpoints.py`): a tool's name comes from the
agent's name, its description from the agent's description, its input is `{"message",
"session_id"?}`. A call is one chat turn of the agent (`engine/chat.py`, the dashboard's chat:
tools, knowledge, memory, guardrails, the conversation stored as a chat session); the result
is the agent's answer as text, with `{"answer", "session_id"}` as structured content, the
session to pass back to continue the conversation. A run that fails, a message a guardrail
blocks, an unknown session: a tool error (`isError`) whose text says why.

The server is stateless (every HTTP request stands alone, no MCP session is kept between
them), so it works unchanged behind several API processes. The session manager runs for the
app's lifetime (`McpEndpoint.running`, entered in the app's lifespan).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

import tbd_agents
from tbd_agents.api.deps import ApiContext
from tbd_agents.api.errors import error_body
from tbd_agents.domain.models import Agent, ChatSession
from tbd_agents.engine.chat import OpenedTurn, chat_stream, open_session
from tbd_agents.engine.inprocess import EngineServices
from tbd_agents.errors import TbdError
from tbd_agents.security.github import presented_github_token
from tbd_agents.services.access import Principal
from tbd_agents.services.agent_endpoints import exposed_agents
from tbd_agents.services.chat_sessions import ensure_session_of
from tbd_agents.services.records import Records

log = logging.getLogger("tbd_agents.api.mcp")

#: Where the authenticated caller travels from the HTTP request to the tool handlers.
PRINCIPAL_KEY = "tbd_agents.principal"
MESSAGE_MAX = 200_000

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "description": "What to ask the agent."},
        "session_id": {
            "type": "string",
            "description": "Continue this conversation (the session_id of an earlier answer); "
            "omit to start a new one.",
        },
    },
    "required": ["message"],
    "additionalProperties": False,
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "session_id": {"type": "string", "description": "Pass it back to continue."},
    },
    "required": ["answer", "session_id"],
}


class ToolFailed(Exception):
    """A tool call that gives no answer: sent to the client as a tool error with this text."""


def _header(ctx: ServerRequestContext[Any, Any], name: str) -> str | None:
    headers = getattr(ctx.request, "headers", None)
    value = headers.get(name) if headers is not None else None
    return value if isinstance(value, str) else None


def _principal(ctx: ServerRequestContext[Any, Any]) -> Principal:
    request = ctx.request
    principal = getattr(request, "scope", {}).get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # pragma: no cover - the endpoint always sets it
        raise RuntimeError("MCP request without an authenticated caller")
    return principal


def build_server(api: ApiContext) -> Server[Any]:
    """The MCP server of `api`: list_tools and call_tool over the caller's exposed agents."""

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        async with api.store.unit_of_work(readonly=True) as repos:
            tools = await exposed_agents(repos, _principal(ctx))
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=name,
                    title=agent.name,
                    description=agent.description or f"Ask the agent {agent.name!r}.",
                    input_schema=INPUT_SCHEMA,
                    output_schema=OUTPUT_SCHEMA,
                )
                for name, agent in tools.items()
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = _principal(ctx)
        # A caller signed in with GitHub lends its token to an agent on the default model.
        token = presented_github_token(_header(ctx, "authorization"), caller.via)
        try:
            answer, session_id = await _ask(api, caller, params.name, params.arguments or {}, token)
        except ToolFailed as exc:
            return _tool_error(str(exc))
        except TbdError as exc:
            return _tool_error(exc.message)
        return types.CallToolResult(
            content=[types.TextContent(text=answer)],
            structured_content={"answer": answer, "session_id": session_id},
        )

    return Server(
        "tbd-agents",
        version=tbd_agents.__version__,
        instructions="Each tool is one of your TBD Agents agents: send it a message, get its "
        "answer; pass the answer's session_id back to continue the conversation.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def _arguments(arguments: dict[str, Any]) -> tuple[str, str | None]:
    message = arguments.get("message")
    session_id = arguments.get("session_id")
    if not isinstance(message, str) or not message.strip():
        raise ToolFailed("`message` is required: the text to send the agent")
    if len(message) > MESSAGE_MAX:
        raise ToolFailed(f"`message` is too long: at most {MESSAGE_MAX} characters")
    if session_id is not None and (not isinstance(session_id, str) or not session_id):
        raise ToolFailed("`session_id` must be the session_id of an earlier answer, or omitted")
    return message, session_id


async def _ask(
    api: ApiContext, caller: Principal, tool: str, arguments: dict[str, Any],
    github_token: str | None = None,
) -> tuple[str, str]:  # fmt: skip
    """One chat turn of the agent behind `tool`: (its answer, the chat session's id)."""
    from tbd_agents.api.routers.agent_chat import engine_for

    caller.require_write()
    message, session_id = _arguments(arguments)
    async with api.store.unit_of_work(readonly=True) as repos:
        agent = (await exposed_agents(repos, caller)).get(tool)
        if agent is None:
            raise ToolFailed(
                f"no tool {tool!r}: list the tools again (the agent may have been renamed, "
                "deleted or no longer offered over MCP)"
            )
        session = await Records(repos, caller, ChatSession).get(session_id) if session_id else None
    if session is not None:
        ensure_session_of(session, agent.id)
    services = await engine_for(api)
    turn = await open_session(services, agent, session, caller.identity, message)
    return await _answer_of(services, agent, turn, github_token), turn.session.id


async def _answer_of(
    services: EngineServices, agent: Agent, turn: OpenedTurn, github_token: str | None
) -> str:
    """Run the turn as the chat does (`chat_stream`, which also stores it) and read its
    answer from the frames: the `done` frame's result, or the `error` frame's message."""
    error: str | None = None
    done: dict[str, Any] | None = None
    frames = chat_stream(
        services, agent, turn.session, turn.history, turn.guarded.text,
        github_token=github_token, guarded=turn.guarded, parent_id=turn.parent_id,
    )  # fmt: skip
    async for frame in frames:
        kind, data = _parse(frame)
        if kind == "error" and error is None:
            error = str(data.get("message") or data.get("code") or "the run failed")
        elif kind == "done":
            done = data
    if error is not None:
        raise ToolFailed(f"the agent {agent.name!r} failed: {error}")
    if done is None:  # pragma: no cover - chat_stream always ends with `done`
        raise ToolFailed(f"the agent {agent.name!r} gave no answer")
    return str(done.get("result") or "")


def _parse(frame: str) -> tuple[str, dict[str, Any]]:
    """(event, data) of one SSE frame of `chat_stream`."""
    kind, data = "", "{}"
    for line in frame.splitlines():
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
    parsed = json.loads(data)
    return kind, parsed if isinstance(parsed, dict) else {}


class McpEndpoint:
    """The ASGI app at `/mcp`: authenticates, then hands the request to the session manager
    (503 until the app's lifespan started it)."""

    def __init__(self) -> None:
        self.api: ApiContext | None = None
        self.manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self, api: ApiContext) -> AsyncIterator[None]:
        """Serve MCP for the app's lifetime (a new manager each time: one runs only once)."""
        security = None
        if api.settings.allow_unauthenticated:  # a browser page must not reach it by DNS tricks
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
            )
        manager = StreamableHTTPSessionManager(
            build_server(api), stateless=True, security_settings=security
        )
        # The manager's task group is entered and left in a task of its own: the lifespan's
        # start and end may run in different tasks (an async test fixture does), and anyio
        # refuses to leave a task group from another task than the one that entered it.
        started, stop = asyncio.Event(), asyncio.Event()

        async def serve() -> None:
            async with manager.run():
                self.api, self.manager = api, manager
                started.set()
                try:
                    await stop.wait()
                finally:
                    self.api = self.manager = None

        task = asyncio.create_task(serve(), name="mcp-server")
        ready = asyncio.ensure_future(started.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            ready.cancel()
            task.result()  # the reason it could not start
        try:
            yield
        finally:
            stop.set()
            await task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - a route is HTTP only
            return
        api, manager = self.api, self.manager
        if api is None or manager is None:
            body = error_body("unavailable", "the MCP server is starting or stopping; retry")
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        try:
            principal = await api.auth.authenticate(
                headers.get("authorization"), client[0] if client else ""
            )
        except TbdError as exc:
            extra = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
            response = JSONResponse(
                error_body(exc.code, exc.message, exc.details), exc.http_status, headers=extra
            )
            await response(scope, receive, send)
            return
        scope[PRINCIPAL_KEY] = principal
        # The SDK binds a session to the credential's principal: ours is the key's owner.
        scope["user"] = AuthenticatedUser(
            AccessToken(token="", client_id=principal.identity, scopes=[])
        )
        await manager.handle_request(scope, receive, send)
