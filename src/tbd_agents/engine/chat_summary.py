"""Summaries of a chat session's older messages, for retention's summarise-then-prune
(`services/retention.py`, RETENTION_CHAT_SUMMARY_AFTER_MESSAGES).

The summary is written by the session's agent's model (its provider, with the same owner checks
and secrets as a chat turn: `builder.load_plan`), from the transcript the run-time compaction
sends (`compaction.summary_request`), so a pruned chat reads like a compacted run. The call is
checked against the owner's budgets and recorded in the usage ledger like any model call
(purpose `chat_summary`, with the session and its owner).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tbd_agents.domain.models import Agent, ChatMessage, ChatSession
from tbd_agents.engine.builder import load_plan, priced_for
from tbd_agents.engine.compaction import summary_request
from tbd_agents.engine.messages import ChatRequest, Message
from tbd_agents.engine.providers import build_provider
from tbd_agents.engine.providers.base import complete
from tbd_agents.observability.usage.meter import Meter, NoMeter, meter_for
from tbd_agents.observability.usage.records import UsageScope
from tbd_agents.runtime.contracts import EventType, Usage

if TYPE_CHECKING:
    from tbd_agents.engine.inprocess import EngineServices
    from tbd_agents.services.retention import ChatSummariser


def _message(m: ChatMessage) -> Message:
    return Message.from_dict(
        {"role": m.role.value, "content": m.content, "tool_calls": m.tool_calls,
         "tool_call_id": m.tool_call_id, "name": m.name}
    )  # fmt: skip


def engine_chat_summariser(services: EngineServices) -> ChatSummariser:
    """A `ChatSummariser` calling the session's agent's model through the engine's services."""

    async def summarise(session: ChatSession, older: list[ChatMessage]) -> str:
        async with services.store.unit_of_work(readonly=True) as repos:
            agent: Agent = await repos.agents.get(session.agent_id)
            chosen = session.metadata.get("model")
            plan = await load_plan(
                repos, services.cipher, agent, services.config,
                model_override=chosen if isinstance(chosen, str) and chosen else None,
                outbound=services.outbound,
            )  # fmt: skip
        model_info = priced_for(plan.provider, services.catalog.get(plan.model))
        meter: Meter = NoMeter()
        if services.usage is not None:  # recorded and budgeted for the session's owner
            scope = UsageScope(user_id=session.github_user, session_id=session.id)
            meter = meter_for(services.usage, scope, plan, model_info)
        provider = build_provider(plan.provider, services.config)
        try:
            limit = services.config.summary_max_chars
            request = ChatRequest(plan.model, summary_request([_message(m) for m in older], limit))
            await meter.before_call(request, _no_stream)  # a budget at its limit: not summarised
            done = await complete(provider, request)
        finally:
            await provider.aclose()
        tokens = done.usage
        cost = model_info.cost(tokens.input_tokens, tokens.output_tokens)
        await meter.after_call(
            Usage(tokens.input_tokens, tokens.output_tokens, cost), PURPOSE, _no_stream
        )
        return done.message.content

    return summarise


#: The usage ledger's `purpose` of these calls (a run's own are `turn` and `summary`).
PURPOSE = "chat_summary"


async def _no_stream(kind: EventType, data: dict[str, Any]) -> None:
    """Budget events of a summary: there is no run whose stream would carry them (the budget
    refusal itself is logged by the meter and by retention)."""
