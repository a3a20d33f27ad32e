"""A tiny deterministic executor for runtime tests: the run's prompt is its script.

Steps are separated by `;`:
- `emit:N`    emit N `message_delta` events ("d1", "d2", …);
- `sleep:S`   wait S seconds (returns early, halted, if a halt arrives);
- `block`     wait until halted;
- `fail`      raise RuntimeError("scripted failure");
- `marker:P`  create the file P (tells a test the run reached this point);
- anything else is ignored. The result is "done: <prompt>".
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.runtime.contracts import EventSink, EventType, HaltSignal, RunOutcome, Usage
from tbd_agents.runtime.executor import ExecutorContext


class ScriptedExecutor:
    def __init__(self) -> None:
        self.closed = False

    async def execute(self, task: TaskExecution, sink: EventSink, halt: HaltSignal) -> RunOutcome:
        deltas = 0
        for raw in task.prompt.split(";"):
            step, _, arg = raw.strip().partition(":")
            if step == "emit":
                for _ in range(int(arg)):
                    deltas += 1
                    await sink.emit(EventType.MESSAGE_DELTA, {"text": f"d{deltas}"})
            elif step in ("sleep", "block"):
                waiter = asyncio.ensure_future(halt.wait())
                try:
                    timeout = float(arg) if step == "sleep" else None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(waiter), timeout)
                finally:
                    waiter.cancel()
                if halt.is_set():
                    await sink.emit(EventType.LOG, {"message": "halted by request"})
                    return RunOutcome(TaskStatus.HALTED, error="halted", turns=1)
            elif step == "fail":
                raise RuntimeError("scripted failure")
            elif step == "marker":
                Path(arg).touch()
        await sink.emit(EventType.MESSAGE, {"role": "assistant", "content": "done"})
        return RunOutcome(
            TaskStatus.COMPLETED,
            result=f"done: {task.prompt}",
            turns=1,
            usage=Usage(input_tokens=3, output_tokens=deltas),
        )

    async def aclose(self) -> None:
        self.closed = True


def build_executor(context: ExecutorContext) -> ScriptedExecutor:
    return ScriptedExecutor()
