"""An executor for the worker metrics tests: its steps change metrics in the process that runs
the run (a prefork child), so a scrape of the worker's port shows whether they were added up.

Steps, separated by `;`: `count:N` adds N to `tool_calls_total{tool_name="probe"}`; `marker:P`
creates file P; `wait:P` waits until file P exists (at most 60 s). The runner itself raises
`agent_tasks_active` (a livesum gauge) while the run executes.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.observability import metrics
from tbd_agents.runtime.contracts import EventSink, HaltSignal, RunOutcome
from tbd_agents.runtime.executor import ExecutorContext


class ProbeExecutor:
    async def execute(self, task: TaskExecution, sink: EventSink, halt: HaltSignal) -> RunOutcome:
        for raw in task.prompt.split(";"):
            step, _, arg = raw.strip().partition(":")
            if step == "count":
                metrics.TOOL_CALLS.labels("probe").inc(int(arg))
            elif step == "marker":
                # Written whole, then renamed: a test waiting for the file never reads it empty.
                partial = Path(f"{arg}.partial")
                partial.write_text(str(os.getpid()))
                partial.replace(arg)
            elif step == "wait":
                deadline = time.monotonic() + 60
                while not Path(arg).exists() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
        return RunOutcome(TaskStatus.COMPLETED, result="probed", turns=1)

    async def aclose(self) -> None:
        return None


def build_executor(context: ExecutorContext) -> ProbeExecutor:
    return ProbeExecutor()
