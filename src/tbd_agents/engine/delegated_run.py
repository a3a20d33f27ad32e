"""One call of an agent tool (engine/delegation.py): the child's task execution, its run and its
record, with the runtime's guarantees of any run.

Like a run the runtime executes (runtime/runner.py), the child run:

- stores every event in its own event log and then publishes it on the process's event bus
  (`PersistingEventSink`), so a client following the child (`GET /api/tasks/{child}/events`)
  sees it live, over Redis or on the in-process bus without it;
- holds a lease it renews, and stops when it is halted on its own: at once when the halt is
  announced on the bus, at its next heartbeat otherwise;
- is traced in an `invoke_agent <agent>` span under the parent's tool call, with its log lines
  naming the child run (it is not counted in the run metrics: its cost is part of the run that
  called it already, docs/multi-agent.md);
- pauses for a person's approval when the chain's or its agent's tool policy says `ask`, in a
  chain a workflow started: the approval records are made on the child run (under the
  chain's workflow and owner, so they are listed, announced by the workflow's
  `approval_requested` webhook and decided like any), and the child waits
  *in place*, still running and holding the parent's tool call, until every approval of the
  pause is decided (or expires, or the child is halted), then resumes where it paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tbd_agents.domain.enums import TaskStatus, TaskTrigger
from tbd_agents.domain.models import Agent, TaskExecution
from tbd_agents.domain.types import utcnow
from tbd_agents.engine.context import RunInput
from tbd_agents.engine.guardrails import GuardedPrompt, Guardrails, guard_prompt
from tbd_agents.engine.runrecord import RunLog, last_messages
from tbd_agents.engine.tools.base import ToolContext, ToolResult
from tbd_agents.observability import logctx
from tbd_agents.observability.spans import span
from tbd_agents.observability.usage.records import UsageScope
from tbd_agents.runtime.bus import InProcessBus
from tbd_agents.runtime.contracts import EventType, RunOutcome, Usage
from tbd_agents.runtime.events import PersistingEventSink, final_status_data, running_status_data
from tbd_agents.runtime.halt import RunHaltSignal, listening_for_halt

if TYPE_CHECKING:
    from tbd_agents.engine.delegation import Chain
    from tbd_agents.engine.inprocess import EngineServices

log = logging.getLogger(__name__)

#: Seconds between two looks at the approvals a paused child waits for.
APPROVAL_POLL_SECONDS = 1.0


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
        self.halt = RunHaltSignal()
        # No runtime in this process (a command-line tool): nobody here can follow the run
        # live, so its events are stored only (a bus without subscribers drops them).
        self.bus: Any = services.bus if services.bus is not None else InProcessBus()

    async def run(self) -> ToolResult:
        runs = self.services.run_store()
        guarded = await self._guard()
        task = await self._create()
        chain = self.parent.below(self.agent, task.id)
        started = time.monotonic()
        sink = RunLog(PersistingEventSink(runs.events, self.bus, task.id))
        outcome: RunOutcome | None = None
        result: Any = None
        keeper = asyncio.create_task(self._keep_lease(runs, task.id))
        try:  # from here on, the child is recorded as ended whatever happens
            await self._emit(
                EventType.DELEGATION_STARTED,
                {"child_task_id": task.id, "agent_id": self.agent.id,
                 "agent_name": self.agent.name, "task": self.prompt, "depth": chain.depth,
                 "parent_task_id": self.parent.task_id},
            )  # fmt: skip
            await sink.inner.emit(EventType.STATUS, running_status_data(self.worker))
            sink.add("prompt_received", self.prompt)
            async with listening_for_halt(self.bus, task.id, self.halt):
                result = await self._execute(chain, task, sink, guarded)
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

    async def _guard(self) -> GuardedPrompt:
        """The task after the input guardrails of the child's run (its agent's and its chain's
        workflow's), checked before the task is stored, as an entry point checks a prompt: the
        child's record, its log and the parent's `delegation_started` show the redacted task
        its model receives."""
        from tbd_agents.engine.builder import load_guardrails

        async with self.services.store.unit_of_work(readonly=True) as repos:
            records, _ = await load_guardrails(
                repos, self.agent, self.services.config.host.admins, workflow=self.parent.workflow
            )
        guarded = guard_prompt(Guardrails.from_records(records), self.prompt)
        if guarded.blocking is None:
            self.prompt = guarded.text
        return guarded

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
                    chat_session_id=parent.session_id, scheduled_agent_id=parent.schedule_id,
                )
            )  # fmt: skip
        if task.root_task_id is None:  # the first task execution of a chat turn's chain
            async with self.services.store.unit_of_work() as repos:
                task = await repos.task_executions.update(task.id, {"root_task_id": task.id})
        return task

    async def _execute(
        self, chain: Chain, task: TaskExecution, sink: RunLog, guarded: GuardedPrompt
    ) -> Any:
        """The child's run, with what it inherits from its chain (delegation.py's docstring);
        resumed in place after each pause for approval."""
        from tbd_agents.engine.inprocess import run_agent
        from tbd_agents.services.approvals import gate_for

        inp = RunInput(self.prompt, session_id=task.id, run_id=task.id, guarded=guarded)
        # The chain's workflow policy first, then the child agent's own.
        inp.approvals = await gate_for(
            self.services.store, self.agent, chain.workflow, can_pause=chain.can_pause
        )
        usage = UsageScope(
            user_id=chain.user_id, workflow_id=chain.workflow_id, task_id=task.id,
            session_id=chain.session_id, schedule_id=chain.schedule_id,
        )  # fmt: skip
        options = chain.inherited_options()
        attrs = {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": self.agent.id,
            "gen_ai.agent.name": self.agent.name, "tbd.task.id": task.id,
            "tbd.workflow.id": chain.workflow_id, "tbd.trigger": TaskTrigger.DELEGATION.value,
            "tbd.delegation.depth": chain.depth,
        }  # fmt: skip
        # The child's span sits under the parent's tool call; its log lines name the child run.
        with (
            logctx.bind(run_id=task.id, task_id=task.id, agent_id=self.agent.id),
            span(f"invoke_agent {self.agent.name}", attrs),
        ):
            while True:
                result = await run_agent(
                    self.services, self.agent, inp, sink, self.halt,
                    usage=usage, chain=chain, options=options,
                )  # fmt: skip
                status = result.outcome.status
                if status is not TaskStatus.AWAITING_APPROVAL or not result.pending:
                    return result
                if not await self._await_decisions(chain, task, result, inp, sink):
                    return result

    async def _await_decisions(
        self, chain: Chain, task: TaskExecution, result: Any, inp: RunInput, sink: RunLog
    ) -> bool:
        """Open the pause, wait for every decision, and set `inp` up to resume; False, with
        `result.outcome` ended, when the child was halted meanwhile or an approval expired with
        `on_timeout: fail`."""
        from tbd_agents.services.approvals import decisions_of

        ids = await self._open_pause(chain, task, result, sink)
        if not await self._decided(task.id):
            result.outcome = _ended(
                result.outcome, TaskStatus.HALTED, "halted while it awaited approval"
            )
            return False
        store = self.services.store
        decisions, failure = await decisions_of(store, {"approval_ids": ids})
        async with store.unit_of_work() as repos:
            await repos.task_executions.update(task.id, {"paused_state": None})
        if failure is not None:
            await sink.emit(EventType.ERROR, {"code": "approval_expired", "message": failure})
            result.outcome = _ended(result.outcome, TaskStatus.FAILED, failure)
            return False
        inp.approvals.decisions = decisions
        inp.resume = result.paused
        return True

    async def _open_pause(
        self, chain: Chain, task: TaskExecution, result: Any, sink: RunLog
    ) -> list[str]:
        """Store the approvals of the waiting calls and the state to resume from, and announce
        each: `approval_requested` on the child's and the parent's streams and the workflow's
        webhook (as for a run the runtime parks); their ids."""
        from tbd_agents.services.approvals import LINK_PURPOSE, open_pause

        services = self.services
        assert chain.workflow is not None  # only a workflow's chain pauses (`can_pause`)
        for call in result.pending:
            sink.add("approval_requested", call.call.name, tool_input=call.call.arguments)
        payloads = await open_pause(
            services.store, task, chain.workflow, result.pending,
            {**result.paused, "log": sink.entries},
            key=services.cipher.derive_key(LINK_PURPOSE), base_url=services.public_base_url,
        )  # fmt: skip
        webhooks = services.run_store().webhooks
        for item in payloads:
            await sink.emit(EventType.APPROVAL_REQUESTED, item)
            await self._emit(EventType.APPROVAL_REQUESTED, {**item, "child_task_id": task.id})
            await webhooks.enqueue_event(task, "approval_requested", str(item["approval_id"]), item)
        async with services.store.unit_of_work() as repos:  # the log so far, while it waits
            await repos.task_executions.update(task.id, {"logs": sink.entries})
        return [str(p["approval_id"]) for p in payloads]

    async def _decided(self, task_id: str) -> bool:
        """Wait until no approval of the child's pause is pending (True) or the child is
        halted (False). A failed look (the database away for a moment) is logged and tried
        again: the decisions are stored, the wait goes on."""
        from tbd_agents.services.approvals import undecided

        while not self.halt.is_set():
            try:
                if not await undecided(self.services.store, task_id):
                    return True
            except Exception:
                log.warning(
                    "delegated run %s: reading its pending approvals failed; trying again",
                    task_id,
                    exc_info=True,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.halt.wait(), APPROVAL_POLL_SECONDS)
        return False

    async def _keep_lease(self, runs: Any, task_id: str) -> None:
        """Renew the child's lease (the reaper fails a run whose process died) and stop the
        child when it is halted on its own (POST /api/tasks/{child}/halt) and the bus did not
        say so."""
        interval = max(self.services.lease_seconds / 3.0, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                beat = await runs.heartbeat(task_id, self.worker)
            except Exception:
                log.warning("delegated run %s: lease renewal failed", task_id, exc_info=True)
                continue
            if beat.halt_requested or not beat.owned:
                self.halt.set("halt requested" if beat.halt_requested else "lease lost")
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
        sink.finish(outcome.status, outcome.error or outcome.result)
        changes: dict[str, Any] = {
            "status": outcome.status, "response": outcome.result, "error": outcome.error,
            "turns": outcome.turns, "tool_calls": outcome.tool_calls,
            "usage": outcome.usage.stats(), "finished_at": utcnow(), "logs": sink.entries,
            "paused_state": None,
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
             "status": outcome.status.value, "usage": usage_data(outcome.usage),
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


def _ended(outcome: RunOutcome, status: TaskStatus, error: str) -> RunOutcome:
    """`outcome` (of a run paused for approval) ended with `status` and `error`."""
    return replace(outcome, status=status, error=error)


def usage_data(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cost_usd": round(u.cost_usd, 6),
    }
