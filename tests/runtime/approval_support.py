"""What the approval tests share with their server process: the settings, and a small client
of the API that waits for a run to reach a status (tests/runtime/test_approvals.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tbd_agents.config import Settings
from tests.api.conftest import make_settings
from tests.engine.mcp_fixtures import SERVERS

#: One fixed key for every process of a test database (the signed links derive from it).
FERNET = "1:LAxPrfUxh9QHu1Rkb4AMfBjCIhnQI6ZKBMbhJYdRNBo="


def approval_settings(data_dir: Path, postgres_uri: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "postgres_uri": postgres_uri,
        "postgres_pool_size": 4,
        "token_encryption_key": FERNET,
        "outbound_allowed_hosts": "127.0.0.1",  # the scripted model and the webhook receiver
        "run_lease_seconds": 5.0,
    }
    return make_settings(data_dir, **{**values, **overrides})


def demo_mcp() -> dict[str, Any]:
    """The connection of the demo MCP server (tests/engine/servers/demo_mcp.py) over stdio."""
    return {"command": sys.executable, "args": [str(SERVERS / "demo_mcp.py"), "stdio"]}


def wait_status(
    client: httpx.Client, task_id: str, wanted: set[str], timeout: float = 60.0
) -> dict[str, Any]:
    """The run once its status is one of `wanted` (AssertionError naming the last status if
    it has not got there within `timeout`: a hung run, not a slow one)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/api/tasks/{task_id}")
        assert resp.status_code == 200, resp.text
        task: dict[str, Any] = resp.json()
        if task["status"] in wanted:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"run {task_id} is {task['status']}, not {wanted}: {task}")
        time.sleep(0.1)
