"""A deterministic executor that pauses for approval, for the runtime-level approval tests
(`RUN_EXECUTOR=tests.runtime.approval_executor:build_executor`).

First execution of a run: it opens an approval for one `delete_file` call (through
`services/approvals.open_pause`, as the engine does) and returns awaiting_approval. The prompt
`ask:<timeout seconds>:<on_timeout>` sets the expiry. Resumed: it reads the decision and
completes with `<status> <arguments> <by> <reason>`, or fails when the approval expired with
`on_timeout: fail` — what the engine's executor does, without a model."""

from __future__ import annotations

import json

from tbd_agents.domain.approvals import ToolAction, Verdict
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution, Workflow
from tbd_agents.engine.approval import PendingCall
from tbd_agents.engine.messages import ToolCall
from tbd_agents.runtime.contracts import EventSink, EventType, HaltSignal, RunOutcome
from tbd_agents.runtime.executor import ExecutorContext
from tbd_agents.services.approvals import decisions_of, open_pause
from tbd_agents.storage.protocol import DocumentStore

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}


class ApprovalExecutor:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    async def execute(self, task: TaskExecution, sink: EventSink, halt: HaltSignal) -> RunOutcome:
        if task.paused_state is None:
            return await self._pause(task, sink)
        decisions, failure = await decisions_of(self.store, task.paused_state)
        async with self.store.unit_of_work() as repos:
            await repos.task_executions.update(task.id, {"paused_state": None})
        if failure is not None:
            return RunOutcome(TaskStatus.FAILED, error=failure, turns=1)
        d = decisions["c1"]
        text = f"{d.status} {json.dumps(d.arguments)} {d.by} {d.reason}"
        await sink.emit(EventType.MESSAGE, {"role": "assistant", "content": text})
        return RunOutcome(TaskStatus.COMPLETED, result=text, turns=2, tool_calls=1)

    async def _pause(self, task: TaskExecution, sink: EventSink) -> RunOutcome:
        _, timeout, on_timeout = [*task.prompt.split(":"), "3600", "deny"][:3]
        async with self.store.unit_of_work(readonly=True) as repos:
            workflow: Workflow = await repos.workflows.get(task.workflow_id)
        call = ToolCall("c1", "delete_file", {"path": "/etc/passwd"})
        verdict = Verdict(ToolAction.ASK, "test rule", int(timeout), on_timeout)
        pending = [PendingCall(call, "mcp:files", verdict, SCHEMA)]
        payloads = await open_pause(
            self.store, task, workflow, pending, {"turn": 1}, key=b"test", base_url=None
        )
        for item in payloads:
            await sink.emit(EventType.APPROVAL_REQUESTED, item)
        return RunOutcome(
            TaskStatus.AWAITING_APPROVAL, error="awaiting approval", turns=1, approvals=payloads
        )

    async def aclose(self) -> None:
        return None


async def build_executor(context: ExecutorContext) -> ApprovalExecutor:
    store = context.store
    if store is None:
        from tbd_agents.storage.factory import open_store

        store = await open_store(context.settings)
    return ApprovalExecutor(store)
