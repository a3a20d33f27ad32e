"""MCP servers as tool sources, over stdio, SSE and streamable HTTP (the official `mcp` SDK).

Transport names: `stdio`, `sse`, and `http` — the existing TBD Agents name of the streamable HTTP
transport — or our `streamable_http`, the same transport (`HTTP_TRANSPORTS`).

Each connection lives in its own task, which enters and leaves the SDK client's context (anyio
requires both in one task); tool calls are made from the run's tasks with a timeout. A server
that does not connect or list its tools within the connect timeout is reported and skipped; a
call that times out returns an error result; a connection that died is re-opened once on the
next call (a call in flight when the server died is not repeated: it may have had effects).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx2
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tbd_agents.domain.enums import McpTransport
from tbd_agents.engine.confine import Confiner
from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.tools.base import ToolContext, ToolResult
from tbd_agents.errors import InvalidData, UpstreamUnreachable
from tbd_agents.observability.metrics import MCP_CONNECTIONS, bounded
from tbd_agents.security.outbound import OutboundPolicy, OutboundRefused, mcp_http_client
from tbd_agents.services.validation import timeout_seconds

log = logging.getLogger(__name__)

#: The names of the streamable HTTP transport (the existing `http`, and ours).
HTTP_TRANSPORTS = frozenset({McpTransport.HTTP, McpTransport.STREAMABLE_HTTP})

#: Seconds a clean shutdown may take before the connection task is cancelled.
STOP_WAIT = 1.0
#: Seconds the SDK's cleanup (terminating a stdio server) may take after cancellation.
CLOSE_GRACE = 5.0


@dataclass(slots=True)
class McpServerConfig:
    """A server record with `{{token:NAME}}` references already resolved."""

    name: str
    transport: McpTransport
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    allowed_tools: list[str] = field(default_factory=list)
    connect_timeout: float = 15.0
    call_timeout: float = 60.0
    #: stdio of a non-admin owner (USER_STDIO_MCP_COMMANDS): start it through the sandbox
    #: launcher (engine/confine.py: no network, an allow-list view of the filesystem).
    confined: bool = False
    #: The launcher that confines it, attached by `open_plan` from the run's sandbox.
    confiner: Confiner | None = field(default=None, repr=False)
    #: What sse / streamable_http may reach (`trusted` when the owner is an admin).
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)

    @classmethod
    def from_connection_config(
        cls,
        name: str,
        transport: McpTransport,
        config: dict[str, Any],
        allowed_tools: list[str],
        *,
        connect_timeout: float = 15.0,
        call_timeout: float = 60.0,
        outbound: OutboundPolicy | None = None,
    ) -> McpServerConfig:
        """Read the record's `connection_config` (stdio: command/args/env/cwd; sse, http and
        streamable_http: url/headers; optional connect_timeout/call_timeout)."""
        try:
            connect = timeout_seconds(
                config, "connect_timeout", connect_timeout, "connection_config"
            )
            call = timeout_seconds(config, "call_timeout", call_timeout, "connection_config")
        except ValueError as exc:
            raise InvalidData(f"MCP server {name!r}: {exc}") from None
        out = cls(
            name,
            transport,
            allowed_tools=list(allowed_tools),
            connect_timeout=connect,
            call_timeout=call,
            outbound=outbound or OutboundPolicy(),
        )
        if transport is McpTransport.STDIO:
            if not config.get("command"):
                raise InvalidData(f"MCP server {name!r}: stdio needs connection_config.command")
            out.command = str(config["command"])
            out.args = [str(a) for a in config.get("args", [])]
            out.env = {str(k): str(v) for k, v in (config.get("env") or {}).items()}
            out.cwd = config.get("cwd")
            return out
        if not config.get("url"):
            raise InvalidData(f"MCP server {name!r}: {transport.value} needs connection_config.url")
        out.url = str(config["url"])
        out.headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
        return out


def _transport(cfg: McpServerConfig) -> Any:
    if cfg.transport is McpTransport.STDIO:
        assert cfg.command is not None
        # The SDK adds only HOME/PATH/SHELL/TERM/USER/LOGNAME to what we declare: never the
        # engine's own secrets (TOKEN_ENCRYPTION_KEY, POSTGRES_URI…).
        if cfg.confined:
            if cfg.confiner is None:  # fail closed: never start a user's command unconfined
                raise InvalidData(
                    f"MCP server {cfg.name!r} must run confined, and no sandbox was given"
                )
            command, args = cfg.confiner.stdio_command(cfg.command, cfg.args, cfg.env)
            return StdioServerParameters(command=command, args=args, env={})
        return StdioServerParameters(command=cfg.command, args=cfg.args, env=cfg.env, cwd=cfg.cwd)
    assert cfg.url is not None
    what = f"MCP server {cfg.name!r}"

    def pinned_client(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        # Every request (each redirect hop the SDK follows too) is checked and pinned.
        return mcp_http_client(cfg.outbound, what, headers=headers, timeout=timeout, auth=auth)

    if cfg.transport is McpTransport.SSE:
        return sse_client(
            cfg.url,
            headers=cfg.headers,
            timeout=cfg.connect_timeout,
            sse_read_timeout=cfg.call_timeout * 5,
            httpx_client_factory=pinned_client,
        )
    # `http` (the existing name) and `streamable_http`: the same transport.
    assert cfg.transport in HTTP_TRANSPORTS
    client = pinned_client(
        cfg.headers, httpx2.Timeout(cfg.connect_timeout, read=cfg.call_timeout * 5)
    )
    return streamable_http_client(cfg.url, http_client=client)


def _result_text(result: mcp_types.CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        text = getattr(block, "text", None)
        if text is not None:
            parts.append(str(text))
        else:
            parts.append(f"[{getattr(block, 'type', 'content')} omitted]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


class McpConnection:
    """One live connection to an MCP server (see the module docstring)."""

    def __init__(self, cfg: McpServerConfig) -> None:
        self.cfg = cfg
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._broken = False
        self.tools: list[mcp_types.Tool] = []

    @property
    def alive(self) -> bool:
        return (
            not self._broken
            and self._task is not None
            and not self._task.done()
            and self._client is not None
        )

    async def connect(self) -> list[mcp_types.Tool]:
        """Connect and list tools within the connect timeout; raise UpstreamUnreachable."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[list[mcp_types.Tool]] = loop.create_future()
        self._stop = asyncio.Event()
        self._broken = False
        self._task = asyncio.create_task(self._serve(ready), name=f"mcp:{self.cfg.name}")
        try:
            self.tools = await asyncio.wait_for(asyncio.shield(ready), self.cfg.connect_timeout)
        except TimeoutError:
            self._close_in_background()
            raise UpstreamUnreachable(
                f"MCP server {self.cfg.name!r} did not connect and list its tools within "
                f"{self.cfg.connect_timeout:g} s (connection_config.connect_timeout)"
            ) from None
        except Exception as exc:
            self._close_in_background()
            refused = _refusal(exc)
            if refused is not None:
                raise refused from None
            raise UpstreamUnreachable(
                f"MCP server {self.cfg.name!r} failed to connect: {_describe(exc)}"
            ) from None
        MCP_CONNECTIONS.labels(bounded("server_name", self.cfg.name)).inc()
        return self.tools

    async def _serve(self, ready: asyncio.Future[list[mcp_types.Tool]]) -> None:
        try:
            async with Client(
                _transport(self.cfg), read_timeout_seconds=self.cfg.call_timeout
            ) as client:
                tools: list[mcp_types.Tool] = []
                cursor: str | None = None
                for _ in range(100):
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self._client = client
                if not ready.done():
                    ready.set_result(tools)
                await self._stop.wait()
        except BaseException as exc:
            if not isinstance(exc, Exception):
                if not ready.done():
                    ready.cancel()
                raise
            if not ready.done():
                ready.set_exception(exc)
            log.info("MCP server %s connection ended: %s", self.cfg.name, _describe(exc))
        finally:
            self._client = None

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        async with self._lock:
            if not self.alive:
                log.info("MCP server %s: reconnecting", self.cfg.name)
                await self.aclose()
                await self.connect()
            client = self._client
        assert client is not None
        try:
            result = await asyncio.wait_for(
                client.call_tool(name, arguments, read_timeout_seconds=self.cfg.call_timeout),
                self.cfg.call_timeout,
            )
        except TimeoutError:
            return ToolResult(
                f"Error: MCP server {self.cfg.name!r} did not answer {name} within {self.cfg.call_timeout:g} s",
                True,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._broken = True  # the next call opens a fresh connection
            return ToolResult(
                f"Error: MCP server {self.cfg.name!r} failed on {name}: {_describe(exc)}", True
            )
        return ToolResult(
            _result_text(result), is_error=bool(result.is_error), data=result.structured_content
        )

    def _close_in_background(self) -> None:
        """Stop a connection that failed to come up without making the run wait for it."""
        task = asyncio.ensure_future(self.aclose())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def aclose(self) -> None:
        """Close the session and stop the server (stdio: the SDK terminates the process)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT if self._client else 0)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=CLOSE_GRACE)
        if task.done() and not task.cancelled():
            task.exception()  # consumed: already logged in _serve


_BACKGROUND: set[asyncio.Future[None]] = set()


def _refusal(exc: BaseException | None) -> OutboundRefused | None:
    """The outbound-policy refusal behind `exc` (inside groups or as a cause), if any."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, OutboundRefused):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                found = _refusal(inner)
                if found is not None:
                    return found
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(slots=True)
class McpTool:
    spec: ToolSpec
    remote_name: str
    connection: McpConnection
    source: str = ""
    timeout: float = 60.0

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.connection.call(self.remote_name, arguments)


async def open_servers(
    configs: list[McpServerConfig],
) -> tuple[list[McpConnection], list[tuple[McpServerConfig, list[McpTool]]], list[tuple[str, str]]]:
    """Connect to every server in parallel. Returns the live connections, the tools of each
    server (filtered by `allowed_tools`) and (server name, reason) for each server skipped."""

    async def one(cfg: McpServerConfig) -> tuple[McpConnection, list[mcp_types.Tool]]:
        conn = McpConnection(cfg)
        return conn, await conn.connect()

    results = await asyncio.gather(*(one(c) for c in configs), return_exceptions=True)
    conns: list[McpConnection] = []
    per_server: list[tuple[McpServerConfig, list[McpTool]]] = []
    problems: list[tuple[str, str]] = []
    for cfg, res in zip(configs, results, strict=True):
        if isinstance(res, BaseException):
            if isinstance(res, asyncio.CancelledError):
                raise res
            problems.append(
                (
                    cfg.name,
                    _describe(res) if not isinstance(res, UpstreamUnreachable) else res.message,
                )
            )
            continue
        conn, tools = res
        conns.append(conn)
        allowed = set(cfg.allowed_tools)
        chosen = [t for t in tools if not allowed or t.name in allowed]
        missing = allowed - {t.name for t in tools}
        if missing:
            problems.append(
                (cfg.name, f"allowed_tools not offered by the server: {', '.join(sorted(missing))}")
            )
        per_server.append((cfg, [_tool(t, conn, cfg) for t in chosen]))
    return conns, per_server, problems


def _tool(tool: mcp_types.Tool, conn: McpConnection, cfg: McpServerConfig) -> McpTool:
    schema = dict(tool.input_schema or {"type": "object"})
    spec = ToolSpec(tool.name, tool.description or "", schema)
    return McpTool(spec, tool.name, conn, source=f"mcp:{cfg.name}", timeout=cfg.call_timeout + 5)


def stdio_environment_preview(cfg: McpServerConfig) -> set[str]:
    """Names of the variables a stdio server receives (for tests and docs)."""
    from mcp.client.stdio import get_default_environment

    return set(get_default_environment()) | set(cfg.env)


__all__ = ["McpConnection", "McpServerConfig", "McpTool", "open_servers"]
