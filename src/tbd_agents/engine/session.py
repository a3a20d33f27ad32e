"""A run bounded by its session time (a workflow's `infinite_session`).

`bounded_run` runs the agent loop with a `Deadline` in place of the halt signal: the user's halt
still stops the run (`halted`), and when the session time is up the model call or tool calls in
flight are cancelled the same way and the run ends `failed` with a "session timeout" error that
names the setting (SESSION_TIMEOUT for infinite_session=false, ENGINE_INFINITE_SESSION_TIMEOUT
for true).
"""

from __future__ import annotations

from typing import Any

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.engine.context import RunInput, RunSpec
from tbd_agents.engine.loop import AgentLoop, RunResult
from tbd_agents.engine.options import Deadline, timeout_message
from tbd_agents.runtime.contracts import EventSink, EventType


def session_seconds(spec: RunSpec) -> float:
    """How long a run of `spec` may last."""
    config = spec.config
    return (
        config.infinite_session_timeout if spec.options.infinite_session else config.session_timeout
    )


async def bounded_run(spec: RunSpec, sink: EventSink, halt: Any, inp: RunInput) -> RunResult:
    """`AgentLoop(spec, sink, halt).run(inp)` within the session time (module docstring)."""
    seconds = session_seconds(spec)
    deadline = Deadline(halt, seconds)
    result = await AgentLoop(spec, sink, deadline).run(inp)
    if result.outcome.status is TaskStatus.HALTED and deadline.expired:
        message = timeout_message(seconds, spec.options.infinite_session)
        await sink.emit(EventType.ERROR, {"code": "session_timeout", "message": message})
        result.outcome.status = TaskStatus.FAILED
        result.outcome.error = message
    return result
