"""The in-process backend: runs execute as asyncio tasks of this process (no Redis needed).

Same semantics as the Celery backend: the run is claimed, leased, heartbeaten, its events are
stored then published (on the in-process bus), halts arrive through the bus and the database
flag, and a process that dies leaves runs the reaper fails once their lease runs out (at the next
start of any runtime process on the same database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from tbd_agents.errors import Conflict, NotFound

if TYPE_CHECKING:
    from tbd_agents.runtime.service import Runtime

_log = logging.getLogger(__name__)


class InProcessBackend:
    name = "inprocess"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._running: dict[str, asyncio.Task[object]] = {}

    async def submit(self, task_id: str) -> str | None:
        if task_id in self._running:
            return None  # handed over again (the sweep) while this process still starts it
        task = asyncio.create_task(self._execute(task_id), name=f"run-{task_id}")
        self._running[task_id] = task
        task.add_done_callback(lambda _t: self._running.pop(task_id, None))
        return None

    async def _execute(self, task_id: str) -> object:
        try:
            return await self.runtime.execute(task_id)
        except Exception:
            _log.exception("in-process run %s crashed", task_id)
            raise

    @property
    def active(self) -> list[str]:
        return list(self._running)

    async def aclose(self, drain_seconds: float) -> None:
        """Let running runs finish for `drain_seconds`, then halt them, then cancel leftovers."""
        pending = list(self._running.values())
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=drain_seconds)
        if still:
            for task_id in list(self._running):
                with contextlib.suppress(NotFound, Conflict):
                    await self.runtime.halt(task_id, requested_by="shutdown")
            _, still = await asyncio.wait(still, timeout=max(drain_seconds, 5.0))
        for task in still:
            task.cancel()
        for task in still:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
