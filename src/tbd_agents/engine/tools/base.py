"""Tools as the loop sees them: a spec for the model, an async call, a timeout.

Every tool source (MCP servers, sandboxed custom tools, built-ins) produces `Tool`s; a `Toolset`
holds the tools of one run, keeps names unique and valid for every provider, validates arguments
against each tool's JSON Schema and turns every failure into an error result the model can read.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema

from tbd_agents.engine.messages import ToolCall, ToolSpec
from tbd_agents.runtime.contracts import Usage

_NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(slots=True)
class ToolResult:
    content: str
    is_error: bool = False
    data: Any = None
    #: How `content` was rewritten for the model ("tsv"), None when it is the tool's own.
    rendered_as: str | None = None
    #: Model usage the tool spent on the run's behalf (an agent called as a tool: its child
    #: run's), added to the run's usage.
    usage: Usage | None = None


@dataclass(slots=True)
class ToolContext:
    """What a tool may know about the run that calls it."""

    agent_id: str | None = None
    session_id: str | None = None
    owner: str | None = None
    run_id: str | None = None
    #: Emit an engine event from inside a tool (the todo tool feeds `progress` this way).
    emit: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None


class Tool(Protocol):
    spec: ToolSpec
    source: str  # "builtin", "custom:<name>", "mcp:<server name>"
    timeout: float

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult: ...


@dataclass(slots=True)
class FunctionTool:
    """A tool backed by an async function (built-ins, tests)."""

    spec: ToolSpec
    func: Callable[[dict[str, Any], ToolContext], Awaitable[ToolResult]]
    source: str = "builtin"
    timeout: float = 30.0

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.func(arguments, ctx)


#: The kinds of `Tool.source`, as people name them.
_ORIGIN_KINDS = {
    "builtin": "builtin",
    "custom": "custom",
    "mcp": "mcp",
    "plugin": "plugin",
    "agent": "agent",  # another agent called as a tool (engine/delegation.py)
}


def origin_of(source: str) -> dict[str, str]:
    """Where a tool comes from, from its `source`: `{"kind": "builtin" | "custom" | "mcp" |
    "plugin" | "agent" | "unknown", "name": <MCP server, custom tool, plugin or agent name; ""
    for built-ins>}`."""
    kind, _, name = source.partition(":")
    return {"kind": _ORIGIN_KINDS.get(kind, "unknown"), "name": name}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def _clip_descriptions(schema: Any, limit: int) -> Any:
    """`schema` with every string `description` clipped to `limit` characters (a property
    *named* description, under `properties`, is kept)."""
    if isinstance(schema, list):
        return [_clip_descriptions(item, limit) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description" and isinstance(value, str):
            out[key] = _clip(value, limit)
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _clip_descriptions(sub, limit) for name, sub in value.items()}
        else:
            out[key] = _clip_descriptions(value, limit)
    return out


def safe_name(name: str) -> str:
    """A tool name every provider accepts (letters, digits, `_`, `-`; at most 64)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
    return cleaned or "tool"


@dataclass(slots=True)
class Toolset:
    tools: dict[str, Tool] = field(default_factory=dict)
    #: Sources that failed to load (e.g. an MCP server that did not answer) with the reason.
    problems: list[tuple[str, str]] = field(default_factory=list)

    def add(self, tool: Tool, prefix: str | None = None) -> str:
        """Add `tool`; on a name clash it is renamed `<prefix>__<name>` (then numbered)."""
        name = tool.spec.name if _NAME_OK.match(tool.spec.name) else safe_name(tool.spec.name)
        if name in self.tools and prefix:
            name = safe_name(f"{prefix}__{name}")
        base, n = name, 2
        while name in self.tools:
            name = safe_name(f"{base[:60]}_{n}")
            n += 1
        if name != tool.spec.name:
            tool = _Renamed(tool, name)
        self.tools[name] = tool
        return name

    def extend(self, tools: Iterable[Tool], prefix: str | None = None) -> None:
        for t in tools:
            self.add(t, prefix)

    def specs(self, max_description_chars: int | None = None) -> list[ToolSpec]:
        """The tools' specs; with `max_description_chars`, the tool descriptions and every
        `description` inside the parameter schemas are clipped to it."""
        specs = [t.spec for t in self.tools.values()]
        if max_description_chars is None:
            return specs
        return [
            ToolSpec(
                s.name,
                _clip(s.description, max_description_chars),
                _clip_descriptions(s.parameters, max_description_chars),
            )
            for s in specs
        ]

    def __len__(self) -> int:
        return len(self.tools)

    async def execute(
        self,
        call: ToolCall,
        ctx: ToolContext,
        max_chars: int,
        *,
        render: Callable[[str], str] | None = None,
    ) -> tuple[ToolResult, float]:
        """Run one call with its timeout; every failure becomes an error result. Returns the
        result and the seconds it took. Cancellation (halt) propagates.

        `render` (a workflow's `tsv_tool_results`: engine/tsv.py) rewrites a successful result
        before it is cut to `max_chars`, so a long table is rendered whole and then cut; a
        rendered result says so in `rendered_as`."""
        started = time.monotonic()
        result = await self._execute(call, ctx)
        if render is not None and not result.is_error:
            rendered = render(result.content)
            if rendered != result.content:
                result = ToolResult(
                    rendered, False, result.data, rendered_as="tsv", usage=result.usage
                )
        if len(result.content) > max_chars:
            cut = len(result.content) - max_chars
            result.content = result.content[:max_chars] + f"\n…[{cut} characters cut]"
        return result, time.monotonic() - started

    async def _execute(self, call: ToolCall, ctx: ToolContext) -> ToolResult:
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return ToolResult(
                f"Error: there is no tool named {call.name!r} (available: {known})", True
            )
        if call.arguments_error:
            return ToolResult(
                f"Error: {call.arguments_error}; call {call.name} again with a JSON object", True
            )
        try:
            jsonschema.validate(call.arguments, tool.spec.parameters)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
            return ToolResult(
                f"Error: invalid arguments for {call.name} at {where}: {exc.message}", True
            )
        except jsonschema.SchemaError:
            pass  # a server's odd schema is its business; let it validate
        try:
            return await asyncio.wait_for(tool.call(call.arguments, ctx), timeout=tool.timeout)
        except TimeoutError:
            return ToolResult(
                f"Error: tool {call.name} did not answer within {tool.timeout:g} s", True
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return ToolResult(f"Error: tool {call.name} failed: {type(exc).__name__}: {exc}", True)


@dataclass(slots=True)
class _Renamed:
    inner: Tool
    name: str
    spec: ToolSpec = field(init=False)
    source: str = field(init=False)
    timeout: float = field(init=False)

    def __post_init__(self) -> None:
        s = self.inner.spec
        self.spec = ToolSpec(self.name, s.description, s.parameters)
        self.source = self.inner.source
        self.timeout = self.inner.timeout

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.inner.call(arguments, ctx)
