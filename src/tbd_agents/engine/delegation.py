"""Agents as tools of other agents (`Agent.agent_tool_ids`).

Every agent an agent lists is offered to its model as a tool (`AgentTool`) named after the
agent, with one required parameter `task` and an optional `context`. Calling it runs the called
agent (the child) through the same engine path as any run (`run_agent`: its own provider,
model, tools, knowledge, memory and guardrails) and returns the child's final answer as the
tool result.

The child run is a task execution of its own, linked to the run that called it
(`parent_task_id`, `root_task_id`, `delegation_depth`; `chat_session_id` when a chat turn
started the chain), with its own event log, lease and halt flag, so it is listed, followed and
halted like any run. It is executed here, inside the parent's tool call, not queued: a parent
waiting for a queued child could wait for ever for the worker slot it holds itself.

What the parent's stream shows: `delegation_started {child_task_id, agent_id, agent_name, task,
depth}` before the child starts and `delegation_finished {child_task_id, agent_id, status,
usage, elapsed}` after it ended; the child's usage is added to the parent's (the `usage` of the
tool result, `loop.py`), while each of the child's model calls is recorded once in the usage
ledger, under the child's agent and task and the chain's user, workflow and session.

Limits, checked when the tool is called (an error result to the calling model; the run goes
on): the chain's depth (DELEGATION_MAX_DEPTH) and cycles (an agent already running in the
chain is never called again; saving a cycle is refused already, services/delegation.py, but
imported or concurrently edited data can still hold one). Halting the parent cancels its tool
calls, which ends the child as halted; a child that fails is an error result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tbd_agents.domain.enums import TaskStatus, TaskTrigger
from tbd_agents.domain.models import Agent, TaskExecution
from tbd_agents.domain.types import utcnow
from tbd_agents.engine.context import RunInput, RunSpec
from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.runrecord import RunLog, last_messages
from tbd_agents.engine.tools.base import ToolContext, ToolResult, safe_name
from tbd_agents.observability import logctx
from tbd_agents.observability.spans import span
from tbd_agents.observability.usage.records import UsageScope
from tbd_agents.runtime.contracts import EventType, RunOutcome, Usage

if TYPE_CHECKING:
    from tbd_agents.engine.inprocess import EngineServices

log = logging.getLogger(__name__)

#: The parameters of every agent tool.
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task": {
            "type": "string",
            "minLength": 1,
            "description": "What the agent should do, stated so it can work without this "
            "conversation: it does not see it.",
        },
        "context": {
            "type": "string",
            "description": "Facts, data or constraints the agent needs for the task.",
        },
    },
    "required": ["task"],
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class Chain:
    """Where a run sits in a delegation chain, and what its children inherit."""

    #: Ids of the agents running in the chain, the run's own agent last.
    agent_ids: tuple[str, ...] = ()
    #: Their names, for messages ("a → b → a").
    agent_names: tuple[str, ...] = ()
    #: 0: the run a user, a schedule or a webhook started; its children 1, theirs 2…
    depth: int = 0
    #: The run's own task execution (None: a chat turn or a preview).
    task_id: str | None = None
    #: The first task execution of the chain (None while the chain has none: a chat turn).
    root_task_id: str | None = None
    #: The workflow of the chain's first run (its children are listed with it).
    workflow_id: str | None = None
    #: The chat session of a chain a chat turn started.
    session_id: str | None = None
    #: Whom the chain's model calls are recorded and budgeted for.
    user_id: str | None = None

    @classmethod
    def root(
        cls,
        agent: Agent,
        *,
        task: TaskExecution | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> Chain:
        """The chain of a run an entry point started: a workflow run (`task`: the run's task
        execution) or a chat turn (`session_id`). (A delegated run is never started by an
        entry point: it is created running, by the call, and never queued.)"""
        return cls(
            agent_ids=(agent.id,),
            agent_names=(agent.name,),
            task_id=task.id if task is not None else None,
            root_task_id=task.id if task is not None else None,
            workflow_id=task.workflow_id if task is not None else None,
            session_id=session_id,
            user_id=user_id,
        )

    def below(self, agent: Agent, task_id: str) -> Chain:
        """The chain of the child run `task_id` of `agent`."""
        return replace(
            self,
            agent_ids=(*self.agent_ids, agent.id),
            agent_names=(*self.agent_names, agent.name),
            depth=self.depth + 1,
            task_id=task_id,
            root_task_id=self.root_task_id or task_id,
        )


def tool_names(agents: list[Agent], taken: set[str]) -> list[str]:
    """A tool name per agent: the agent's name as providers accept tool names (letters,
    digits, `_`, `-`; at most 64; `agent_<id>` for a name without a Latin letter or digit),
    unique among `taken` and each other (numbered on a clash)."""
    names: list[str] = []
    used = set(taken)
    for agent in agents:
        base = safe_name(agent.name.strip().replace(" ", "_").lower())[:60]
        if not any(c.isascii() and c.isalnum() for c in base):  # a name in another script
            base = f"agent_{safe_name(agent.id)[:12]}"
        name, n = base, 2
        while name in used:
            name = f"{base}_{n}"
            n += 1
        used.add(name)
        names.append(name)
    return names


def add_agent_tools(
    spec: RunSpec, agents: list[Agent], services: EngineServices, chain: Chain
) -> None:
    """Offer each of `agents` to the run of `spec` as a tool (see the module docstring)."""
    for agent, name in zip(agents, tool_names(agents, set(spec.tools.tools)), strict=True):
        description = agent.description.strip() or f"Ask the agent {agent.name!r} to do a task."
        spec.tools.add(
            AgentTool(
                ToolSpec(
                    name,
                    f"{description}\n(Agent {agent.name!r}: give it a self-contained task; it "
                    "answers with its final result.)",
                    PARAMETERS,
                ),
                agent,
                services,
                chain,
                timeout=_timeout(services),
            )
        )


def _timeout(services: EngineServices) -> float:
    """The child bounds itself by its session time; the tool call waits a little longer, so
    the child's own timeout is the one reported."""
    config = services.config
    return max(config.session_timeout, config.infinite_session_timeout) + 60.0


@dataclass(slots=True)
class AgentTool:
    """One agent offered as a tool; calling it runs the agent as a child run."""

    spec: ToolSpec
    agent: Agent
    services: EngineServices
    chain: Chain
    timeout: float = 600.0
    source: str = field(init=False)

    def __post_init__(self) -> None:
        self.source = f"agent:{self.agent.name}"

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        task = str(arguments.get("task") or "").strip()
        if not task:
            return ToolResult("Error: `task` must say what the agent should do", True)
        refusal = self._refusal()
        if refusal is not None:
            return ToolResult(refusal, True)
        context = str(arguments.get("context") or "").strip()
        prompt = f"{task}\n\nContext:\n{context}" if context else task
        return await ChildRun(self.services, self.chain, self.agent, prompt, ctx).run()

    def _refusal(self) -> str | None:
        """Why this call may not run: a cycle or the depth limit (None: it may)."""
        chain = self.chain
        if self.agent.id in chain.agent_ids:
            names = " → ".join((*chain.agent_names, self.agent.name))
            return (
                f"Error: cycle: the agent {self.agent.name!r} is already running in this "
                f"delegation chain ({names}) and is not called again; do the task yourself "
                "or ask another agent"
            )
        limit = self.services.config.delegation_max_depth
        if chain.depth + 1 > limit:
            return (
                f"Error: delegation depth limit reached: this run is at depth {chain.depth} and "
                f"agents may call agents {limit} levels deep (DELEGATION_MAX_DEPTH); do the task "
                "yourself"
            )
        return None


class _Halt:
    """The child's halt signal: set when the child itself is halted (its halt flag, read with
    its lease)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


class _EventLogSink:
    """The child's `EventSink`: its events stored in its own run event log (followers of the
    child read them from there)."""

    def __init__(self, events: Any, task_id: str) -> None:
        self.events = events
        self.task_id = task_id

    async def emit(self, event_type: EventType | str, data: Mapping[str, Any]) -> None:
        kind = event_type.value if isinstance(event_type, EventType) else str(event_type)
        await self.events.append(self.task_id, kind, data)


class ChildRun:
    """One call of an agent tool: the child's task execution, its run and its record."""

    def __init__(
        self, services: EngineServices, chain: Chain, agent: Agent, prompt: str, ctx: ToolContext
    ) -> None:
        self.services = services
        self.parent = chain
        self.agent = agent
        self.prompt = prompt
        self.ctx = ctx
        self.worker = f"delegation:{uuid.uuid4().hex[:12]}"
        self.halt = _Halt()

    async def run(self) -> ToolResult:
        from tbd_agents.runtime.events import running_status_data

        runs = self.services.run_store()
        task = await self._create()
        chain = self.parent.below(self.agent, task.id)
        started = time.monotonic()
        sink = RunLog(_EventLogSink(runs.events, task.id))
        keeper = asyncio.create_task(self._keep_lease(runs, task.id))
        outcome: RunOutcome | None = None
        result: Any = None
        try:  # from here on, the child is recorded as ended whatever happens
            await self._emit(
                EventType.DELEGATION_STARTED,
                {"child_task_id": task.id, "agent_id": self.agent.id,
                 "agent_name": self.agent.name, "task": self.prompt, "depth": chain.depth,
                 "parent_task_id": self.parent.task_id},
            )  # fmt: skip
            await sink.inner.emit(EventType.STATUS, running_status_data(self.worker))
            sink.add("prompt_received", self.prompt)
            result = await self._execute(chain, task, sink)
            outcome = result.outcome
        except asyncio.CancelledError:
            outcome = RunOutcome(TaskStatus.HALTED, error="halted: the calling run was halted")
            raise
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.warning("delegated run %s of agent %s failed: %s", task.id, self.agent.id, message)
            outcome = RunOutcome(TaskStatus.FAILED, error=message)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if outcome is None:  # interrupted by something else than a halt
                outcome = RunOutcome(TaskStatus.FAILED, error="the delegated run was interrupted")
            # Recorded even while the parent is being cancelled (halted): shielded.
            await asyncio.shield(self._finish(runs, task, sink, outcome, result, started))
        return self._tool_result(task.id, outcome)

    async def _create(self) -> TaskExecution:
        """The child's task execution, running under this call's lease from the start."""
        now = utcnow()
        parent = self.parent
        async with self.services.store.unit_of_work() as repos:
            task: TaskExecution = await repos.task_executions.create(
                TaskExecution(
                    workflow_id=parent.workflow_id or "", prompt=self.prompt,
                    status=TaskStatus.RUNNING, worker=self.worker, started_at=now,
                    heartbeat_at=now, agent_id=self.agent.id, model=self.agent.model,
                    trigger=TaskTrigger.DELEGATION, parent_task_id=parent.task_id,
                    root_task_id=parent.root_task_id, delegation_depth=parent.depth + 1,
                    chat_session_id=parent.session_id,
                )
            )  # fmt: skip
        if task.root_task_id is None:  # the first task execution of a chat turn's chain
            async with self.services.store.unit_of_work() as repos:
                task = await repos.task_executions.update(task.id, {"root_task_id": task.id})
        return task

    async def _execute(self, chain: Chain, task: TaskExecution, sink: RunLog) -> Any:
        from tbd_agents.engine.inprocess import run_agent

        inp = RunInput(self.prompt, session_id=task.id, run_id=task.id)
        usage = UsageScope(
            user_id=chain.user_id, workflow_id=chain.workflow_id, task_id=task.id,
            session_id=chain.session_id,
        )  # fmt: skip
        attrs = {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": self.agent.id,
            "gen_ai.agent.name": self.agent.name, "tbd.task.id": task.id,
            "tbd.trigger": TaskTrigger.DELEGATION.value, "tbd.delegation.depth": chain.depth,
        }  # fmt: skip
        # The child's span sits under the parent's tool call; its log lines name the child run.
        with (
            logctx.bind(run_id=task.id, task_id=task.id, agent_id=self.agent.id),
            span(f"invoke_agent {self.agent.name}", attrs),
        ):
            return await run_agent(
                self.services, self.agent, inp, sink, self.halt, usage=usage, chain=chain
            )

    async def _keep_lease(self, runs: Any, task_id: str) -> None:
        """Renew the child's lease (the reaper fails a run whose process died) and stop the
        child when it is halted on its own (POST /api/tasks/{child}/halt)."""
        interval = max(self.services.lease_seconds / 3.0, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                beat = await runs.heartbeat(task_id, self.worker)
            except Exception:
                log.warning("delegated run %s: lease renewal failed", task_id, exc_info=True)
                continue
            if beat.halt_requested or not beat.owned:
                self.halt.set()
                return

    async def _finish(
        self,
        runs: Any,
        task: TaskExecution,
        sink: RunLog,
        outcome: RunOutcome,
        result: Any,
        started: float,
    ) -> None:
        """Record how the child ended (as the runtime records a run: status, answer, usage,
        its log and messages, the final status event) and tell the parent's stream."""
        from tbd_agents.runtime.events import final_status_data

        sink.finish(outcome.status, outcome.error or outcome.result)
        changes: dict[str, Any] = {
            "status": outcome.status, "response": outcome.result, "error": outcome.error,
            "turns": outcome.turns, "tool_calls": outcome.tool_calls,
            "usage": outcome.usage.stats(), "finished_at": utcnow(), "logs": sink.entries,
        }  # fmt: skip
        if result is not None:
            changes["model"] = result.model
            changes["messages"] = last_messages([m.to_dict() for m in result.messages])
        try:
            async with self.services.store.unit_of_work() as repos:
                current: TaskExecution = await repos.task_executions.get(task.id)
                if current.status is TaskStatus.RUNNING:  # not reaped meanwhile
                    current = await repos.task_executions.update(task.id, changes)
            await sink.inner.emit(EventType.STATUS, final_status_data(current))
        except Exception:
            log.exception("delegated run %s: recording its outcome failed", task.id)
        await self._emit(
            EventType.DELEGATION_FINISHED,
            {"child_task_id": task.id, "agent_id": self.agent.id, "agent_name": self.agent.name,
             "status": outcome.status.value, "usage": _usage(outcome.usage),
             "elapsed": round(time.monotonic() - started, 3)},
        )  # fmt: skip

    async def _emit(self, kind: EventType, data: dict[str, Any]) -> None:
        if self.ctx.emit is not None:
            await self.ctx.emit(kind.value, data)

    def _tool_result(self, task_id: str, outcome: RunOutcome) -> ToolResult:
        """The child's answer for the calling model; an error result unless it completed."""
        usage = Usage(
            outcome.usage.input_tokens, outcome.usage.output_tokens, outcome.usage.cost_usd
        )
        data = {"child_task_id": task_id, "status": outcome.status.value}
        if outcome.status is TaskStatus.COMPLETED:
            return ToolResult(outcome.result or "", False, data, usage=usage)
        why = outcome.error or outcome.status.value
        partial = f"\nIts last answer: {outcome.result}" if outcome.result else ""
        return ToolResult(
            f"Error: the agent {self.agent.name!r} did not complete the task "
            f"({outcome.status.value}: {why}; run {task_id}).{partial}",
            True,
            data,
            usage=usage,
        )


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cost_usd": round(u.cost_usd, 6),
    }
