"""Counting the SQL statements of one piece of work while the runtime's upkeep loop (reaper,
webhook deliveries, approval expiry, retention) shares the engine: its statements are not the
work's, and one landing in the window made a count flaky."""

from __future__ import annotations

import asyncio

#: Names of the runtime's background tasks (runtime/service.py `Runtime.start`).
BACKGROUND_TASKS = frozenset({"runtime-upkeep", "scheduler"})


def from_background() -> bool:
    """True when the statement being executed comes from one of the runtime's background loops
    (SQLAlchemy's async engine runs the cursor call inside the calling asyncio task)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a sync caller
        return False
    return task is not None and task.get_name() in BACKGROUND_TASKS
