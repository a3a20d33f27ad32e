"""An MCP server offering a `manage_todo_list` tool, as the Copilot runtime's built-in was
(the engine watches calls to a tool of that name and stores their todo list as progress).

Usage: python todo_mcp.py stdio
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

server = MCPServer("todo")


@server.tool()
def manage_todo_list(todoList: list[dict[str, Any]]) -> str:
    """Keep the todo list of the task."""
    return f"{len(todoList)} todos noted"


if __name__ == "__main__":
    server.run("stdio")
