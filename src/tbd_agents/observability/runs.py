"""A run's signals from start to outcome, for every entry point (API, schedule, chat).

`run_signals` wraps the execution of one workflow run (runtime/runner.py, the one place every
run passes, in a worker or in the API process): the `invoke_agent` span — a child of the trace
context stored with the run when it was created — the `agent_tasks_active` gauge (decremented on
every path out, failures included), the log context (run, task, agent and workflow ids), and at
the end the existing run series: `agent_tasks_total`, `agent_task_duration_seconds`,
`tool_calls_per_task` and `cost_per_task_dollars`. `chat_turn` does the same for one chat turn,
which is not a stored run: its span, log context and the chat series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span

from tbd_agents.observability import logctx
from tbd_agents.observability import metrics as m
from tbd_agents.observability.spans import context_of, fail, span


@dataclass(slots=True)
class RunSignals:
    """The open signals of one run; `finished(...)` records its outcome."""

    span: Span
    started: float = field(default_factory=time.monotonic)

    def finished(self, status: str, model: str | None, effort: str | None, outcome: Any) -> None:
        """Count the run's end (`status`: its final status) and describe it on the span.
        `outcome`: the `RunOutcome` (tool calls and usage)."""
        label = m.bounded("model", model)
        m.TASKS.labels(status, label, m.bounded("reasoning_effort", effort or "none")).inc()
        m.TASK_DURATION.labels(label, status).observe(time.monotonic() - self.started)
        m.TOOL_CALLS_PER_TASK.labels(label).observe(outcome.tool_calls)
        m.COST_PER_TASK.labels(label).observe(outcome.usage.cost_usd)
        self.span.set_attributes(
            {
                "tbd.task.status": status,
                "tbd.task.turns": outcome.turns,
                "tbd.task.tool_calls": outcome.tool_calls,
                "gen_ai.usage.input_tokens": outcome.usage.input_tokens,
                "gen_ai.usage.output_tokens": outcome.usage.output_tokens,
            }
        )
        if model:
            self.span.set_attribute("gen_ai.request.model", model)
        if status == "failed":
            fail(self.span, "run_failed")


@contextmanager
def run_signals(task: Any) -> Iterator[RunSignals]:
    """The signals of executing `task` (a claimed `TaskExecution`); see the module docstring."""
    attrs = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": task.agent_id,
        "tbd.task.id": task.id,
        "tbd.workflow.id": task.workflow_id,
        "tbd.trigger": str(task.trigger.value if hasattr(task.trigger, "value") else task.trigger),
        "tbd.schedule.id": task.scheduled_agent_id,
    }
    parent = context_of(getattr(task, "trace_parent", None))
    ids = {"run_id": task.id, "task_id": task.id}
    with (
        logctx.bind(**ids, agent_id=task.agent_id, workflow_id=task.workflow_id),
        span("invoke_agent", attrs, context=parent) as current,
    ):
        m.TASKS_ACTIVE.inc()
        try:
            yield RunSignals(current)
        finally:
            m.TASKS_ACTIVE.dec()


def describe_agent(agent: Any) -> None:
    """Name the current run span after its agent (`invoke_agent <agent name>`): the runtime
    opens the span before the executor has loaded the agent."""
    current = trace.get_current_span()
    if not current.is_recording():
        return
    current.update_name(f"invoke_agent {agent.name}")
    current.set_attribute("gen_ai.agent.name", agent.name)


def count_lost_runs(items: list[Any]) -> None:
    """Count runs the runtime failed without executing them to the end (their worker stopped
    renewing the lease, or no backend took them): their own worker never counted them."""
    for item in items:
        task = item.task
        status = task.status.value if hasattr(task.status, "value") else str(task.status)
        effort = m.bounded("reasoning_effort", task.reasoning_effort or "none")
        m.TASKS.labels(status, m.bounded("model", task.model), effort).inc()


@dataclass(slots=True)
class ChatTurnSignals:
    span: Span
    started: float = field(default_factory=time.monotonic)

    def finished(self, model: str | None, status: str) -> None:
        """Observe the answer's duration (`chat_response_duration_seconds{model}`)."""
        elapsed = time.monotonic() - self.started
        m.CHAT_RESPONSE_DURATION.labels(m.bounded("model", model)).observe(elapsed)
        self.span.set_attribute("tbd.task.status", status)
        if model:
            self.span.set_attribute("gen_ai.request.model", model)
        if status == "failed":
            fail(self.span, "run_failed")


@contextmanager
def chat_turn(agent: Any, session_id: str, user: str | None) -> Iterator[ChatTurnSignals]:
    """The `invoke_agent <agent>` span and log context of one chat turn."""
    attrs = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": agent.id,
        "gen_ai.agent.name": agent.name,
        "gen_ai.conversation.id": session_id,
        "tbd.trigger": "chat",
    }
    with (
        logctx.bind(agent_id=agent.id, session_id=session_id, user=user),
        span(f"invoke_agent {agent.name}", attrs) as current,
    ):
        yield ChatTurnSignals(current)


def chat_messages_stored(roles: list[str]) -> None:
    """Count stored chat messages by role (`chat_messages_total{role}`)."""
    for role in roles:
        m.CHAT_MESSAGES.labels(role).inc()
