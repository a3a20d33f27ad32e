"""Real MCP servers for the tests: stdio configs, and HTTP servers started as processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tbd_agents.domain.enums import McpTransport
from tbd_agents.engine.tools.mcp import McpServerConfig
from tbd_agents.security.outbound import OutboundPolicy

SERVERS = Path(__file__).parent / "servers"


def stdio_config(
    script: str = "demo_mcp.py", *, allowed: list[str] | None = None, **kw: float
) -> McpServerConfig:
    return McpServerConfig(
        name=script.removesuffix(".py"),
        transport=McpTransport.STDIO,
        command=sys.executable,
        args=[str(SERVERS / script), "stdio"],
        allowed_tools=allowed or [],
        **kw,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def http_server(mode: str) -> Iterator[str]:
    """Start demo_mcp.py over `streamable-http` or `sse`; yield its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVERS / "demo_mcp.py"), mode, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"MCP {mode} server did not start") from None
                time.sleep(0.05)
        path = "/mcp" if mode == "streamable-http" else "/sse"
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        proc.kill()
        proc.wait()


def http_config(
    url: str, transport: McpTransport, *, allowed: list[str] | None = None, **kw: float
) -> McpServerConfig:
    return McpServerConfig(
        name=f"demo-{transport.value}",
        transport=transport,
        url=url,
        allowed_tools=allowed or [],
        outbound=OutboundPolicy(trusted=True),  # a local server, as an admin's record
        **kw,
    )
