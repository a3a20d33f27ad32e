"""The one agent loop every entry point uses (workflow runs, chat, schedules).

    guard input → assemble context → [halt? → compact → model call ⟂ halt → tools ⟂ halt]*
    → format the answer → guard output → outcome

Every step is reported through the `EventSink` (the run's final status event is left to the
caller, which records the outcome before announcing it); the model call and the tool calls race against
`HaltSignal.wait()`, so a halt stops work in flight. `max_turns` counts model calls: when the
model still asks for tools after the last allowed call, those calls are not executed and the run
ends `max_turns_reached`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from tbd_agents.domain.enums import OutputFormat, TaskStatus
from tbd_agents.engine.approval import ApprovalGate, PendingCall
from tbd_agents.engine.compaction import compact, summary_request
from tbd_agents.engine.context import RunInput, RunSpec, assemble_system_prompt
from tbd_agents.engine.guardrails import Verdict, guard_prompt
from tbd_agents.engine.messages import ChatRequest, Completion, Message, TextDelta, ToolCall
from tbd_agents.engine.progress import watched_progress
from tbd_agents.engine.providers.base import complete
from tbd_agents.engine.recall import compress_context, recall_memories
from tbd_agents.engine.sources import MemoryItem, Passage
from tbd_agents.engine.tools.base import ToolContext, ToolResult, origin_of
from tbd_agents.engine.tsv import render_tsv
from tbd_agents.errors import TbdError
from tbd_agents.observability import engine_signals as signals
from tbd_agents.runtime.contracts import EventSink, EventType, HaltSignal, RunOutcome, Usage

log = logging.getLogger(__name__)
T = TypeVar("T")
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


class Halted(Exception):
    """Raised inside the loop when the halt signal fires."""


@dataclass(slots=True)
class RunResult:
    outcome: RunOutcome
    #: The model the run used (the agent's, the workflow's override or the provider's default).
    model: str | None = None
    #: The messages this run added (user prompt, assistant turns, tool results) for persistence.
    messages: list[Message] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, str]] = field(default_factory=list)
    #: Set when the run paused for approval (status awaiting_approval): the calls that wait
    #: (`engine/approval.PendingCall`) and `state`, what `RunInput.resume` takes back.
    pending: list[Any] = field(default_factory=list)
    paused: dict[str, Any] | None = None


class _NoHalt:
    def is_set(self) -> bool:
        return False

    async def wait(self) -> None:
        await asyncio.Event().wait()


async def race(work: Awaitable[T], halt: HaltSignal) -> T:
    """Await `work`, cancelling it and raising Halted if `halt` fires first."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(halt.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        waiter.cancel()
        raise
    if task in done:
        waiter.cancel()
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise Halted


class AgentLoop:
    """Runs one `RunSpec` on one `RunInput`; `run()` never raises for run failures."""

    def __init__(self, spec: RunSpec, sink: EventSink, halt: HaltSignal | None = None) -> None:
        self.spec = spec
        self.sink = sink
        self.halt: HaltSignal = halt or _NoHalt()
        self.usage = Usage()
        self.turns = 0
        self.tool_calls = 0
        self.result = RunResult(RunOutcome(TaskStatus.RUNNING), model=spec.model)

    async def emit(self, kind: EventType, data: dict[str, Any]) -> None:
        await self.sink.emit(kind, data)

    async def run(self, inp: RunInput) -> RunResult:
        await self.emit(EventType.STATUS, {"status": "running"})
        for warning in self.spec.warnings:
            await self.emit(
                EventType.LOG, {"level": "warning", "event": "warning", "message": warning}
            )
        try:
            outcome = await self._run(inp)
        except Halted:
            outcome = self._outcome(TaskStatus.HALTED, error="halted by the user")
        except TbdError as exc:
            await self.emit(EventType.ERROR, {"code": exc.code, "message": exc.message})
            outcome = self._outcome(TaskStatus.FAILED, error=exc.message)
        except Exception as exc:
            log.exception("agent run failed")
            message = f"{type(exc).__name__}: {exc}"
            await self.emit(EventType.ERROR, {"code": "internal_error", "message": message})
            outcome = self._outcome(TaskStatus.FAILED, error=message)
        self.result.outcome = outcome
        # The final status event is the runtime's (it records the outcome first) or the chat's.
        return self.result

    def _outcome(
        self, status: TaskStatus, result: str | None = None, error: str | None = None
    ) -> RunOutcome:
        return RunOutcome(status, result, error, self.turns, self.tool_calls, self.usage)

    # --- steps ---------------------------------------------------------------------------
    async def _guard_input(self, inp: RunInput) -> str | None:
        """The prompt after input/request guardrails (checked here, or by the entry point before
        it stored the prompt: `inp.guarded`), or None when blocked."""
        guarded = inp.guarded or guard_prompt(self.spec.guardrails, inp.prompt, inp.request)
        prompt = guarded.text
        for verdict in guarded.verdicts:
            await self._report(verdict, "input")
            if verdict.blocked:
                await self.emit(
                    EventType.ERROR, {"code": "guardrail_blocked", "message": verdict.block_message}
                )
                self.result.outcome = self._outcome(TaskStatus.FAILED, error=verdict.block_message)
                return None
        return prompt

    async def _report(self, verdict: Verdict, stage: str) -> None:
        # `output_guardrail_violation` is the existing system's name for an output violation.
        event = "output_guardrail_violation" if stage == "output" else "guardrail_violation"
        for v in verdict.violations:
            self.result.violations.append({**v.to_dict(), "stage": stage})
            await self.emit(EventType.LOG, {"level": "warning", "event": event, "message": f"guardrail {v.guardrail} ({v.action.value}) on {stage}: {v.reason}", "guardrail": v.to_dict(), "stage": stage})  # fmt: skip

    async def _knowledge(self, prompt: str) -> list[Passage]:
        """The knowledge passages for `prompt`; an unreachable or broken source (an external
        Qdrant or pgvector that is down, a migrated address that no longer resolves) is a
        warning of the run, which goes on without knowledge, as it does without an MCP server
        that cannot be reached."""
        spec = self.spec
        assert spec.knowledge is not None
        try:
            with signals.retrieval("knowledge") as span:
                found = await race(
                    spec.knowledge.search(prompt, source_ids=spec.knowledge_source_ids, tags=spec.knowledge_tags, limit=spec.budgets.knowledge_results),
                    self.halt,
                )  # fmt: skip
                signals.retrieved(span, "knowledge", len(found))
                return found
        except Halted:
            raise
        except Exception as exc:
            reason = exc.message if isinstance(exc, TbdError) else f"{type(exc).__name__}: {exc}"
            log.warning("agent %s: knowledge search failed: %s", spec.agent_id, reason)
            await self.emit(EventType.LOG, {"level": "warning", "event": "knowledge_unavailable", "message": f"knowledge not searched, the run goes on without it: {reason}"})  # fmt: skip
            return []

    async def retrieve(self, prompt: str, inp: RunInput) -> tuple[list[Passage], list[MemoryItem]]:
        """The knowledge passages and memories a run on `prompt` puts in its system prompt
        (also what the agent builder's context view shows)."""
        spec = self.spec
        passages: list[Passage] = []
        memories: list[MemoryItem] = []
        if inp.knowledge_source_ids:  # a chat session's attachments, for this run only
            spec.knowledge_source_ids = list(
                dict.fromkeys([*spec.knowledge_source_ids, *inp.knowledge_source_ids])
            )
        if spec.knowledge is not None and (spec.knowledge_source_ids or spec.knowledge_tags):
            passages = await self._knowledge(prompt)
        if spec.memory is not None and spec.agent_id:
            with signals.retrieval("memory") as span:
                memories = await race(recall_memories(spec, prompt, inp.session_id), self.halt)
                signals.retrieved(span, "memory", len(memories))
        if spec.options.caveman:
            passages, memories = compress_context(passages, memories)
        return passages, memories

    async def _context(self, prompt: str, inp: RunInput) -> list[Message]:
        passages, memories = await self.retrieve(prompt, inp)
        system, citations = assemble_system_prompt(self.spec, passages, memories)
        self.result.citations = citations
        if citations:
            await self.emit(EventType.LOG, {"level": "info", "event": "knowledge_loaded", "message": f"{len(citations)} knowledge passages in context", "citations": citations})  # fmt: skip
        if memories:
            await self.emit(EventType.LOG, {"level": "info", "event": "memories_loaded", "message": f"{len(memories)} memories in context", "memories": [m.key for m in memories]})  # fmt: skip
        return [Message("system", system), *inp.history]

    def _apply_request_options(self, inp: RunInput) -> None:
        """A caller's per-run `temperature` and output cap (the OpenAI-compatible endpoint):
        the cap lowers the model's `max_output_tokens`, never raises it."""
        if inp.temperature is not None:
            self.spec.temperature = inp.temperature
        info = self.spec.model_info
        if inp.max_output_tokens is not None and inp.max_output_tokens < info.max_output_tokens:
            self.spec.model_info = replace(info, max_output_tokens=inp.max_output_tokens)

    async def _run(self, inp: RunInput) -> RunOutcome:
        self._apply_request_options(inp)
        if inp.resume is not None:
            messages, first = await self._resume(inp)
        else:
            prompt = await self._guard_input(inp)
            if prompt is None:
                return self.result.outcome
            messages = await self._context(prompt, inp)
            user = Message("user", prompt, images=list(inp.images))
            messages.append(user)
            self.result.messages.append(user)
            first = 1
        repaired = False
        for turn in range(first, self.spec.max_turns + 1):
            if self.halt.is_set():
                raise Halted
            if self.spec.compaction.enabled:
                messages = await self._compact(messages)
            self.turns = turn
            await self.emit(EventType.PROGRESS, {"turn": turn, "max_turns": self.spec.max_turns})
            completion = await race(self._call_model(messages, turn), self.halt)
            reply = completion.message
            messages.append(reply)
            self.result.messages.append(reply)
            if reply.tool_calls:
                await self.emit(
                    EventType.MESSAGE, {**reply.to_dict(with_reasoning=False), "turn": turn}
                )
                if turn == self.spec.max_turns:
                    names = ", ".join(c.name for c in reply.tool_calls)
                    return self._outcome(TaskStatus.MAX_TURNS_REACHED, reply.content or None,
                                         f"max_turns ({self.spec.max_turns}) reached with tool calls pending: {names}")  # fmt: skip
                waiting = self._waiting(reply.tool_calls, inp)
                if waiting:
                    return self._pause(messages, turn, waiting)
                results = await race(self._run_tools(reply.tool_calls, inp), self.halt)
                messages.extend(results)
                self.result.messages.extend(results)
                continue
            answer, problem = format_answer(reply.content, self.spec.output_format)
            if problem and not repaired and turn < self.spec.max_turns:
                repaired = True
                fix = Message(
                    "user",
                    f"Your answer is not valid JSON ({problem}). Reply with the JSON value only.",
                )
                messages.append(fix)
                continue
            if problem:
                await self.emit(EventType.ERROR, {"code": "invalid_output", "message": problem})
                return self._outcome(
                    TaskStatus.FAILED, reply.content, f"answer is not valid JSON: {problem}"
                )
            return await self._finish(answer, reply, turn)
        return self._outcome(
            TaskStatus.MAX_TURNS_REACHED, None, f"max_turns ({self.spec.max_turns}) reached"
        )

    # --- approvals (engine/approval.py) ---------------------------------------------------
    def _waiting(self, calls: list[ToolCall], inp: RunInput) -> list[PendingCall]:
        """The calls of the batch that wait for a human decision."""
        gate: ApprovalGate | None = inp.approvals
        if gate is None or not gate.active:
            return []
        waiting: list[PendingCall] = []
        for call in calls:
            tool = self.spec.tools.tools.get(call.name)
            source = tool.source if tool else "unknown"
            verdict = gate.waiting(call, source)
            if verdict is not None:
                schema = dict(tool.spec.parameters) if tool is not None else None
                waiting.append(PendingCall(call, source, verdict, schema))
        return waiting

    def _pause(self, messages: list[Message], turn: int, waiting: list[PendingCall]) -> RunOutcome:
        """End this execution awaiting approval, with what resuming needs (no call of the batch
        has run: the conversation resumes at the assistant message that asked for them)."""
        self.result.pending = waiting
        self.result.paused = {
            "messages": [m.to_dict() for m in messages],
            "added": [m.to_dict() for m in self.result.messages],
            "turn": turn,
            "tool_calls": self.tool_calls,
            "usage": _usage_dict(self.usage),
        }
        names = ", ".join(p.call.name for p in waiting)
        return self._outcome(TaskStatus.AWAITING_APPROVAL, None, f"awaiting approval of {names}")

    async def _resume(self, inp: RunInput) -> tuple[list[Message], int]:
        """Restore a paused run and answer the calls it paused on (run, denied or refused per
        the decisions); the conversation and the next turn."""
        state = inp.resume
        assert state is not None
        messages = [Message.from_dict(m) for m in state["messages"]]
        self.result.messages = [Message.from_dict(m) for m in state["added"]]
        self.turns = int(state["turn"])
        self.tool_calls = int(state["tool_calls"])
        used = state.get("usage") or {}
        self.usage = Usage(
            int(used.get("input_tokens", 0)),
            int(used.get("output_tokens", 0)),
            float(used.get("cost_usd", 0.0)),
        )
        reply = messages[-1]
        results = await race(self._run_tools(reply.tool_calls, inp), self.halt)
        messages.extend(results)
        self.result.messages.extend(results)
        if inp.approvals is not None:  # later calls (call ids repeat) are asked again
            inp.approvals.decisions = {}
        return messages, self.turns + 1

    async def _finish(self, answer: str, reply: Message, turn: int) -> RunOutcome:
        verdict = self.spec.guardrails.check_output(answer)
        await self._report(verdict, "output")
        if verdict.blocked:
            reply.content = verdict.block_message
            await self.emit(
                EventType.ERROR, {"code": "guardrail_blocked", "message": verdict.block_message}
            )
            await self.emit(EventType.MESSAGE, {"role": "assistant", "content": verdict.block_message, "turn": turn, "blocked": True})  # fmt: skip
            return self._outcome(TaskStatus.FAILED, None, verdict.block_message)
        reply.content = verdict.text
        if self.spec.guardrails.holds_output:  # nothing streamed yet: send the checked text
            await self.emit(EventType.MESSAGE_DELTA, {"delta": verdict.text, "turn": turn})
        await self.emit(EventType.MESSAGE, {"role": "assistant", "content": verdict.text, "turn": turn, "final": True})  # fmt: skip
        return self._outcome(TaskStatus.COMPLETED, verdict.text)

    async def _compact(self, messages: list[Message]) -> list[Message]:
        info = self.spec.model_info
        budget = info.context_window - min(info.max_output_tokens, info.context_window // 4)

        async def summarise(middle: list[Message]) -> str:
            request = ChatRequest(
                self.spec.model, summary_request(middle, self.spec.compaction.summary_max_chars)
            )
            await self.spec.meter.before_call(request, self.emit)
            done = await complete(self.spec.provider, request)
            await self._account(done, purpose="summary")
            return done.message.content

        with signals.compaction(self.spec.model) as span:
            out, report = await compact(messages, budget, summarise, self.spec.compaction)
            signals.compacted(span, self.spec.model, report)
        if report.changed:
            await self.emit(EventType.LOG, {"level": "info", "event": "compaction_complete", "message": "context compacted", "compaction": report.to_dict()})  # fmt: skip
        return out

    async def _call_model(self, messages: list[Message], turn: int) -> Completion:
        request = ChatRequest(
            model=self.spec.model,
            messages=messages,
            tools=self.spec.tools.specs(self.spec.config.tool_description_max_chars),
            temperature=self.spec.temperature,
            max_output_tokens=self.spec.model_info.max_output_tokens,
            reasoning_effort=self.spec.options.effort_for(self.spec.model_info),
            thinking_effort=self.spec.options.thinking_for(self.spec.model_info),
        )
        hold = self.spec.guardrails.holds_output
        await self.spec.meter.before_call(request, self.emit)
        result: Completion | None = None
        async for event in self.spec.provider.stream(request):
            if isinstance(event, TextDelta):
                if not hold:
                    await self.emit(EventType.MESSAGE_DELTA, {"delta": event.text, "turn": turn})
            else:
                result = event
        if result is None:
            raise TbdError("the model ended its answer without completing it")
        await self._account(result, purpose="turn", turn=turn)
        return result

    async def _account(self, done: Completion, *, purpose: str, turn: int | None = None) -> None:
        cost = self.spec.model_info.cost(done.usage.input_tokens, done.usage.output_tokens)
        call = Usage(done.usage.input_tokens, done.usage.output_tokens, cost)
        self.usage.add(call)
        await self.spec.meter.after_call(call, purpose, self.emit)
        await self.emit(EventType.USAGE, {"model": self.spec.model, "purpose": purpose, "turn": turn, **_usage_dict(call), "total": _usage_dict(self.usage)})  # fmt: skip

    async def _run_tools(self, calls: list[ToolCall], inp: RunInput) -> list[Message]:
        async def emit(kind: str, data: dict[str, Any]) -> None:
            await self.emit(EventType(kind), data)

        ctx = ToolContext(self.spec.agent_id, inp.session_id, self.spec.owner, inp.run_id, emit)
        self.tool_calls += len(calls)
        gate: ApprovalGate | None = inp.approvals
        results = await asyncio.gather(*(self._one_tool(call, ctx, gate) for call in calls))
        return [
            Message("tool", res.content, tool_call_id=call.id, name=call.name)
            for call, res in zip(calls, results, strict=True)
        ]

    async def _one_tool(
        self, call: ToolCall, ctx: ToolContext, gate: ApprovalGate | None = None
    ) -> ToolResult:
        tool = self.spec.tools.tools.get(call.name)
        source = tool.source if tool else "unknown"
        capture = self.spec.config.trace_capture_content
        with signals.tool_call(call, source, capture_content=capture) as measured:
            ruled: ToolResult | None = None
            if gate is not None:
                call, ruled = gate.ruling(call, source)
            if ruled is not None:
                await self.emit(EventType.TOOL_CALL, {"id": call.id, "name": call.name, "arguments": call.arguments, "source": source, "origin": origin_of(source)})  # fmt: skip
                result, seconds, blocked = ruled, 0.0, True
            else:
                result, seconds, blocked = await self._tool_result(call, ctx, source)
            measured.ended(result.content, result.is_error, seconds, blocked=blocked)
        if result.usage is not None:  # an agent called as a tool: its run's usage rolls up
            self.usage.add(result.usage)
            await self.emit(EventType.USAGE, {"model": self.spec.model, "purpose": "delegation", "tool": call.name, **_usage_dict(result.usage), "total": _usage_dict(self.usage)})  # fmt: skip
        await self.emit(
            EventType.TOOL_RESULT,
            {"id": call.id, "name": call.name, "content": result.content, "is_error": result.is_error,
             "duration_ms": round(seconds * 1000, 1), "source": source, "origin": origin_of(source),
             **({"rendered_as": result.rendered_as} if result.rendered_as else {})},
        )  # fmt: skip
        return result

    async def _tool_result(
        self, call: ToolCall, ctx: ToolContext, source: str
    ) -> tuple[ToolResult, float, bool]:
        """The call's result, its seconds and whether a guardrail blocked it."""
        await self.emit(EventType.TOOL_CALL, {"id": call.id, "name": call.name, "arguments": call.arguments, "source": source, "origin": origin_of(source)})  # fmt: skip
        verdict = self.spec.guardrails.check_tool_arguments(call.arguments)
        await self._report(verdict, f"tool {call.name}")
        if verdict.blocked:
            return ToolResult(f"Error: {verdict.block_message}", True), 0.0, True
        render = render_tsv if self.spec.options.tsv_tool_results else None
        result, seconds = await self.spec.tools.execute(
            call, ctx, self.spec.config.max_tool_result_chars, render=render
        )
        watched = watched_progress(call.name, source, call.arguments)
        if watched is not None:  # an MCP server's manage_todo_list (engine/progress.py)
            await self.emit(EventType.PROGRESS, watched)
        return result, seconds, False


def format_answer(text: str, fmt: OutputFormat) -> tuple[str, str | None]:
    """The final answer per the output format, and a problem when JSON is required but absent."""
    text = text.strip()
    if fmt is not OutputFormat.JSON:
        return text, None
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return text, f"{exc.msg} at position {exc.pos}"
    return json.dumps(value, ensure_ascii=False), None


def _usage_dict(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cost_usd": round(u.cost_usd, 6),
    }
