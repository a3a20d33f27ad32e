"""TBD Agents: a self-hosted AI agent hub."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`from tbd_agents import TbdAgentsClient, ApiError, WorkflowCreate` (the official SDK's
    import path): the client is loaded on first use only, so `import tbd_agents` stays light."""
    # Only the client's public names (classes, plus one function): `from tbd_agents import cli`
    # and other submodule imports, which ask for the attribute first, must not load the client.
    if not (name[:1].isupper() or name == "iter_sse_messages"):
        raise AttributeError(f"module 'tbd_agents' has no attribute {name!r}")
    client = importlib.import_module("tbd_agents.client")
    try:
        return getattr(client, name)
    except AttributeError:
        raise AttributeError(f"module 'tbd_agents' has no attribute {name!r}") from None
