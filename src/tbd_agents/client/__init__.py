"""A typed Python client of the TBD Agents API, interface-compatible with the official SDK:

    from tbd_agents import TbdAgentsClient, ApiError
    with TbdAgentsClient(base_url="http://127.0.0.1:8000", token=KEY) as client:
        agents = client.agents.list()

See docs/client.md."""

from __future__ import annotations

from tbd_agents.client.errors import ApiError, TbdAgentsError, TransportError
from tbd_agents.client.http import TbdAgentsClient
from tbd_agents.client.sse import SSEMessage, iter_sse_messages
from tbd_agents.client.types import *  # noqa: F403

__all__ = [
    "ApiError",
    "SSEMessage",
    "TbdAgentsClient",
    "TbdAgentsError",
    "TransportError",
    "iter_sse_messages",
]
