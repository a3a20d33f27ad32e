"""Built-in tools: `store_memory`, `search_memory`, `search_knowledge`, `update_todos`, and the
workspace tools `bash, read, write, edit, glob, grep, web_fetch, web_search` (tools/workspace_tools.py).

An agent enables them by name in `builtin_tools` (`todo` is accepted for `update_todos`). Memory
and knowledge tools need the run's memory store / knowledge search; without one they are not
offered (and the run logs why).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.sources import KnowledgeSearch, MemoryStore
from tbd_agents.engine.tools.base import FunctionTool, Tool, ToolContext, ToolResult
from tbd_agents.engine.tools.workspace_tools import WORKSPACE_TOOL_NAMES, WorkspaceTools

BUILTIN_NAMES = (
    "store_memory", "search_memory", "search_knowledge", "update_todos", *WORKSPACE_TOOL_NAMES
)  # fmt: skip
ALIASES = {"todo": "update_todos", "todos": "update_todos", "memory": "store_memory"}


def _store_memory(memory: MemoryStore, timeout: float) -> Tool:
    spec = ToolSpec(
        "store_memory",
        "Remember a fact for later runs. Use a short stable key; storing the same key again replaces it.",
        {
            "type": "object",
            "properties": {
                "key": {"type": "string", "minLength": 1, "maxLength": 200},
                "value": {"type": "string", "minLength": 1},
                "scope": {
                    "type": "string",
                    "enum": ["session", "agent", "global"],
                    "default": "agent",
                },
            },
            "required": ["key", "value"],
            "additionalProperties": False,
        },
    )

    async def run(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if not ctx.agent_id:
            return ToolResult("Error: memory needs an agent", True)
        scope = args.get("scope", "agent")
        await memory.store(
            agent_id=ctx.agent_id, key=args["key"], value=args["value"], scope=scope,
            session_id=ctx.session_id, owner=ctx.owner,
        )  # fmt: skip
        return ToolResult(f"Stored memory {args['key']!r} ({scope}).")

    return FunctionTool(spec, run, timeout=timeout)


def _search_memory(memory: MemoryStore, timeout: float) -> Tool:
    spec = ToolSpec(
        "search_memory",
        "Search what you remembered in earlier runs.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    )

    async def run(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if not ctx.agent_id:
            return ToolResult("Error: memory needs an agent", True)
        found = await memory.search(
            agent_id=ctx.agent_id, query=args["query"], limit=int(args.get("limit", 5)),
            session_id=ctx.session_id, owner=ctx.owner,
        )  # fmt: skip
        if not found:
            return ToolResult("No memories match.")
        items = [{"key": m.key, "value": m.value, "scope": m.scope} for m in found]
        return ToolResult(json.dumps(items, ensure_ascii=False), data=items)

    return FunctionTool(spec, run, timeout=timeout)


def _search_knowledge(
    knowledge: KnowledgeSearch, source_ids: Sequence[str], tags: Sequence[str], timeout: float
) -> Tool:
    spec = ToolSpec(
        "search_knowledge",
        "Search the agent's knowledge base. Cite results by their [n] marker.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    )

    async def run(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        hits = await knowledge.search(
            args["query"], source_ids=source_ids, tags=tags, limit=int(args.get("limit", 5))
        )
        if not hits:
            return ToolResult("No knowledge matches.")
        lines = [
            f"[{i}] {h.title or h.item_id} (item {h.item_id}, chunk {h.chunk_index}): {h.text}"
            for i, h in enumerate(hits, 1)
        ]
        return ToolResult("\n".join(lines), data=[h.citation() for h in hits])

    return FunctionTool(spec, run, timeout=timeout)


@dataclass(slots=True)
class TodoList:
    """The run's todo list; every change is reported as a `progress` event."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def tool(self, timeout: float) -> Tool:
        spec = ToolSpec(
            "update_todos",
            "Keep a todo list of the steps of your task and mark them done as you go. "
            "Send the whole list each time.",
            {
                "type": "object",
                "properties": {
                    "todos": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "title": {"type": "string", "minLength": 1},
                                "status": {
                                    "type": "string",
                                    "enum": ["pending", "in_progress", "done"],
                                },
                            },
                            "required": ["title", "status"],
                        },
                    }
                },
                "required": ["todos"],
                "additionalProperties": False,
            },
        )

        async def run(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
            self.items = [{"title": t["title"], "status": t["status"]} for t in args["todos"]]
            done = sum(1 for t in self.items if t["status"] == "done")
            if ctx.emit is not None:
                await ctx.emit(
                    "progress", {"todos": self.items, "done": done, "total": len(self.items)}
                )
            return ToolResult(f"Todo list updated: {done}/{len(self.items)} done.")

        return FunctionTool(spec, run, timeout=timeout)


def builtin_tools(
    names: Sequence[str],
    *,
    memory: MemoryStore | None,
    knowledge: KnowledgeSearch | None,
    knowledge_source_ids: Sequence[str] = (),
    knowledge_tags: Sequence[str] = (),
    timeout: float = 30.0,
    workspace: WorkspaceTools | None = None,
) -> tuple[list[Tool], list[tuple[str, str]]]:
    """The built-ins named in `names` and, for each that cannot be offered, (name, reason).
    `workspace`: what the workspace tools act on (without it they are not offered)."""
    tools: list[Tool] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in names:
        name = ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if name in seen:
            continue
        seen.add(name)
        if name in ("store_memory", "search_memory"):
            if memory is None:
                problems.append((name, "no memory store is configured for this run"))
            else:
                tools.append(
                    (_store_memory if name == "store_memory" else _search_memory)(memory, timeout)
                )
        elif name == "search_knowledge":
            if knowledge is None:
                problems.append((name, "no knowledge search is configured for this run"))
            else:
                tools.append(
                    _search_knowledge(knowledge, knowledge_source_ids, knowledge_tags, timeout)
                )
        elif name == "update_todos":
            tools.append(TodoList().tool(timeout))
        elif name in WORKSPACE_TOOL_NAMES:  # H1: workspace tools
            built = workspace.tool(name, timeout) if workspace else "no workspace for this run"
            if isinstance(built, str):
                problems.append((name, built))
            else:
                tools.append(built)
        else:
            problems.append((raw, f"unknown built-in tool (known: {', '.join(BUILTIN_NAMES)})"))
    return tools, problems
