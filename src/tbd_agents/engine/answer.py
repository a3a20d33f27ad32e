"""One agent run answering a conversation a client sends whole: the OpenAI-compatible endpoint
(`/v1/chat/completions`) and the agents' MCP server (`/mcp`) use it.

The run is the one every entry point uses (`run_agent`: the agent's tools, knowledge, memory and
guardrails); only the use of its events differs from the chat stream's. The answer's text
deltas go to the caller; tool calls, tool results and logs stay on the server (the client of
these protocols asked the agent for an answer, not for its working). Nothing is stored as a
chat session here: the conversation is the client's.

The client's text is checked by the agent's input guardrails before the run starts
(`guard_conversation`), every user and system message of it, not only the last: a conversation
can carry what a guardrail refuses in any of its messages. A `redact` guardrail's redaction is
what the model receives; a `block` one raises GuardrailBlocked before anything runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import Agent
from tbd_agents.engine.builder import load_guardrails
from tbd_agents.engine.chat import QueueSink
from tbd_agents.engine.context import RunInput
from tbd_agents.engine.default_provider import caller_github_token
from tbd_agents.engine.guardrails import GuardedPrompt, Guardrails, guard_prompt
from tbd_agents.engine.inprocess import EngineServices, run_agent
from tbd_agents.engine.loop import RunResult
from tbd_agents.engine.messages import Message
from tbd_agents.errors import GuardrailBlocked, TbdError
from tbd_agents.observability.usage.records import UsageScope
from tbd_agents.runtime.contracts import EventType

_END = object()


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a client sends: the messages before the last (`history`) and the last user
    message (`prompt`)."""

    history: list[Message]
    prompt: str


@dataclass(frozen=True, slots=True)
class RunFailure:
    """Why a run gave no answer: the first error the run reported (its code and message)."""

    code: str
    message: str


async def guard_conversation(
    services: EngineServices, agent: Agent, conversation: Conversation
) -> tuple[Conversation, GuardedPrompt]:
    """The conversation as the agent's input guardrails leave it (redacted where a `redact`
    guardrail matched), and the verdict on its prompt (for the run to report). GuardrailBlocked
    when a `block` guardrail matches any user or system message."""
    async with services.store.unit_of_work(readonly=True) as repos:
        records, _ = await load_guardrails(repos, agent, services.config.host.admins)
    rails = Guardrails.from_records(records)
    history: list[Message] = []
    for message in conversation.history:
        if message.role in ("user", "system") and message.content:
            checked = guard_prompt(rails, message.content)
            if checked.blocking is not None:
                raise GuardrailBlocked(checked.blocking.block_message)
            message = Message(message.role, checked.text)
        history.append(message)
    guarded = guard_prompt(rails, conversation.prompt)
    if guarded.blocking is not None:
        raise GuardrailBlocked(guarded.blocking.block_message)
    return Conversation(history, guarded.text), guarded


class AgentAnswer:
    """One run of `agent` on a client's conversation, its answer streamed as text deltas.

    Iterate `deltas()` once; when it ends, `result` holds the run's result, and `failure` the
    run's first error when it gave no answer (a provider error, an output guardrail that
    blocked, a tool loop that ran out of turns is not a failure: its `result` says so)."""

    def __init__(
        self,
        services: EngineServices,
        agent: Agent,
        inp: RunInput,
        *,
        owner: str,
        github_token: str | None = None,
    ) -> None:
        self.services = services
        self.agent = agent
        self.inp = inp
        self.owner = owner
        self.github_token = github_token
        self.result: RunResult | None = None
        self.failure: RunFailure | None = None

    async def deltas(self) -> AsyncGenerator[str, None]:
        """The answer's text as it streams. Closing the iterator early (the client went away)
        cancels the run and its model call in flight."""
        sink = QueueSink()

        async def work() -> Any:
            try:
                with caller_github_token(self.github_token):
                    return await run_agent(
                        self.services, self.agent, self.inp, sink, None,
                        usage=UsageScope(user_id=self.owner),
                    )  # fmt: skip
            finally:
                await sink.queue.put(_END)

        task = asyncio.create_task(work())
        try:
            while (item := await sink.queue.get()) is not _END:
                assert isinstance(item, tuple)
                kind, data = item
                if kind is EventType.MESSAGE_DELTA:
                    text = str(data.get("delta") or "")
                    if text:
                        yield text
                elif kind is EventType.ERROR and self.failure is None:
                    self.failure = RunFailure(
                        str(data.get("code") or "run_failed"), str(data.get("message") or "")
                    )
            await asyncio.wait({task})  # it put _END on its way out: let it end
            self._finish(task)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _finish(self, task: asyncio.Task[Any]) -> None:
        try:
            result = task.result()
        except TbdError as exc:  # raised before the loop ran (a provider that cannot be built)
            self.failure = self.failure or RunFailure(exc.code, exc.message)
            return
        assert isinstance(result, RunResult)
        self.result = result
        outcome = result.outcome
        if outcome.status is TaskStatus.FAILED and self.failure is None:
            self.failure = RunFailure("run_failed", outcome.error or "the run failed")

    async def text(self) -> str:
        """The whole answer (the run's formatted result), once the run ended."""
        streamed = [d async for d in self.deltas()]
        if self.result is not None and self.result.outcome.result is not None:
            return self.result.outcome.result
        return "".join(streamed)
