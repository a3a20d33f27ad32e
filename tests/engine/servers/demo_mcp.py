"""An MCP server for the tests (the `mcp` SDK's MCPServer).

Usage: python demo_mcp.py stdio | streamable-http PORT | sse PORT
"""

from __future__ import annotations

import os
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("demo")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def lookup_order(order_id: str) -> str:
    """Status of an order."""
    return f"order {order_id}: shipped"


@server.tool()
def environment() -> str:
    """Names of the environment variables this server sees."""
    return ",".join(sorted(os.environ))


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "finally"


@server.tool()
def crash() -> str:
    """Kill the server process."""
    os._exit(17)


@server.tool()
def secret_admin_tool() -> str:
    """Must be hidden by allowed_tools."""
    return "should never be called"


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "stdio":
        server.run("stdio")
    elif mode == "streamable-http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("sse", host="127.0.0.1", port=int(sys.argv[2]))
