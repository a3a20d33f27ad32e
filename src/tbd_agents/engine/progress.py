"""Task progress: the `manage_todo_list` built-in, and a run's todo list stored on its task.

The existing TBD Agents never defined `manage_todo_list`: the Copilot runtime offered it, and the
engine watched every call to a tool of that name, parsed `{todoList: [{id, title, status}]}` and
published it as the run's progress. Here:

- `manage_todo_list` is a built-in with that shape (`todo_tool`); our older `update_todos`
  (`{todos: [{title, status: pending|in_progress|done}]}`) stays as an alias with its shape;
- a tool of that name from an MCP server is watched the same way (`watched_progress`);
- every change is a `progress` event `{todos, current_step, percent_complete}` (current_step:
  the id of the first `in-progress` item, else null; percent_complete: the share completed,
  0 to 1), and `ProgressRecorder` writes it on the task (`TaskExecution.progress`, read by
  GET /api/tasks/{id}/progress), coalescing updates that arrive while one is being written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.tools.base import FunctionTool, Tool, ToolContext, ToolResult

log = logging.getLogger(__name__)

TODO_TOOL = "manage_todo_list"
STATUSES = ("not-started", "in-progress", "completed")
#: `update_todos` statuses → the existing ones.
_OURS = {"pending": "not-started", "in_progress": "in-progress", "done": "completed"}


def progress_of_todos(todos: list[dict[str, Any]]) -> dict[str, Any]:
    """`{todos, current_step, percent_complete}` of normalised todos."""
    current = next((t["id"] for t in todos if t["status"] == "in-progress"), None)
    done = sum(1 for t in todos if t["status"] == "completed")
    percent = round(done / len(todos), 4) if todos else 0.0
    return {"todos": todos, "current_step": current, "percent_complete": percent}


def parse_todo_list(arguments: Mapping[str, Any]) -> dict[str, Any] | None:
    """The progress a `manage_todo_list` call's arguments describe, or None when they hold no
    `todoList` array (lenient: an MCP server's tool may send odd items; those are skipped)."""
    raw = arguments.get("todoList")
    if not isinstance(raw, list):
        return None
    todos: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            continue
        try:
            ident = int(item.get("id", index + 1))
        except (TypeError, ValueError):
            ident = index + 1
        status = str(item.get("status") or "not-started")
        status = _OURS.get(status, status)
        todos.append(
            {
                "id": ident,
                "title": str(item.get("title") or ""),
                "status": status if status in STATUSES else "not-started",
            }
        )
    return progress_of_todos(todos)


def watched_progress(name: str, source: str, arguments: Mapping[str, Any]) -> dict[str, Any] | None:
    """The progress of a call to a non-built-in tool named `manage_todo_list` (an MCP server's,
    possibly renamed `<server>__manage_todo_list` on a clash), or None."""
    if source == "builtin" or not (name == TODO_TOOL or name.endswith("__" + TODO_TOOL)):
        return None
    return parse_todo_list(arguments)


def todo_tool(timeout: float) -> Tool:
    """The `manage_todo_list` built-in (the parameters the existing runs used)."""
    spec = ToolSpec(
        TODO_TOOL,
        "Plan multi-step work as a todo list and keep it current: send the whole list every "
        "time, mark one item in-progress while you work on it and completed when done.",
        {
            "type": "object",
            "properties": {
                "todoList": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "title": {"type": "string", "minLength": 1},
                            "status": {"type": "string", "enum": list(STATUSES)},
                        },
                        "required": ["id", "title", "status"],
                    },
                }
            },
            "required": ["todoList"],
            "additionalProperties": False,
        },
    )

    async def run(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        progress = parse_todo_list(args) or progress_of_todos([])
        if ctx.emit is not None:
            await ctx.emit("progress", progress)
        done = sum(1 for t in progress["todos"] if t["status"] == "completed")
        return ToolResult(f"Todo list updated: {done}/{len(progress['todos'])} completed.")

    return FunctionTool(spec, run, timeout=timeout)


def update_todos_progress(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The existing progress shape of an `update_todos` list (ids numbered from 1)."""
    return progress_of_todos(
        [
            {"id": i, "title": t["title"], "status": _OURS.get(t["status"], "not-started")}
            for i, t in enumerate(items, 1)
        ]
    )


Write = Callable[[dict[str, Any]], Awaitable[None]]


class ProgressRecorder:
    """Writes a run's latest progress on its task; updates that arrive while a write is in
    flight are coalesced into the next one (only the newest list is written)."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._latest: dict[str, Any] | None = None
        self._written: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_task(cls, store: Any, task_id: str) -> ProgressRecorder:
        async def write(progress: dict[str, Any]) -> None:
            async with store.unit_of_work() as repos:
                await repos.task_executions.update(task_id, {"progress": progress})

        return cls(write)

    async def record(self, data: Mapping[str, Any]) -> None:
        """Take a `progress` event; only those carrying `todos` are written."""
        if "todos" not in data:
            return
        self._latest = {k: data[k] for k in ("todos", "current_step", "percent_complete")}
        if self._lock.locked():
            return  # the writer in flight picks it up
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            while self._latest is not None and self._latest is not self._written:
                progress = self._latest
                await self._write(progress)
                self._written = progress
