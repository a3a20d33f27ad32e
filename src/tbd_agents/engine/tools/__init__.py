"""Tools of a run: MCP servers, sandboxed custom tools and built-ins behind one `Toolset`."""

from tbd_agents.engine.tools.base import FunctionTool, Tool, ToolContext, ToolResult, Toolset

__all__ = ["FunctionTool", "Tool", "ToolContext", "ToolResult", "Toolset"]
