"""The per-run usage meter: the engine calls it before each model call (budgets) and after it
(the ledger). `engine/loop.py` holds one on `RunSpec.meter`; `NoMeter` when usage is not kept.

Recording: each call gets the key `<run key>:<n>` (n counts the run's calls), so a retried write
of the same call is ignored by the store. A write that fails is retried (`RETRY_DELAYS`); if it
still fails the call is logged at ERROR with its numbers and counted in
`tbd_usage_records_total{outcome="failed"}`, and the run goes on (a stopped ledger must not stop
agents); the meter keeps counting the unrecorded usage towards this run's budgets.

Budgets: before a call, every enabled budget of the run's user, agent, workflow and schedule is
read with its period's usage (usage_daily, plus what this run could not record); the call is
refused (`BudgetExceeded`, after a `budget_exceeded` event) when the usage is at the limit or the
usage plus this request's prompt (input tokens counted, priced at the model's input price)
passes it. At `warn_ratio` a `budget_warning` event is sent once per budget and period (the mark
is stored on the budget, so once across runs and processes too).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from typing import Any, Protocol

from tbd_agents.domain.types import utcnow
from tbd_agents.engine.catalog import ModelInfo
from tbd_agents.engine.messages import ChatRequest
from tbd_agents.engine.tokens import count_messages
from tbd_agents.observability import metrics
from tbd_agents.observability.usage.budgets import (
    SCOPE_COLUMN,
    BudgetExceeded,
    event_data,
    period_bounds,
)
from tbd_agents.observability.usage.records import Budget, UsageCall, UsageScope, as_cost
from tbd_agents.observability.usage.store import UsageStore
from tbd_agents.runtime.contracts import EventType, Usage

log = logging.getLogger(__name__)
Emit = Callable[[EventType, dict[str, Any]], Awaitable[None]]
#: Seconds to wait before each retry of a failed usage write.
RETRY_DELAYS = (0.05, 0.25, 1.0)


class Meter(Protocol):
    async def before_call(self, request: ChatRequest, emit: Emit) -> None:
        """Raise `BudgetExceeded` if a budget refuses this call (after emitting its event)."""
        ...

    async def after_call(self, usage: Usage, purpose: str, emit: Emit) -> None:
        """Record the call's usage (never raises for a storage failure)."""
        ...


class NoMeter:
    """No ledger, no budgets (engine unit tests, runs outside the hub)."""

    async def before_call(self, request: ChatRequest, emit: Emit) -> None:
        return None

    async def after_call(self, usage: Usage, purpose: str, emit: Emit) -> None:
        return None


@dataclass(slots=True)
class UsageMeter:
    """The meter of one run (one workflow run or one chat turn)."""

    store: UsageStore
    scope: UsageScope
    agent_id: str | None
    provider_id: str | None
    provider_type: str | None
    model: str
    model_info: ModelInfo
    #: Unique per run: the task id of a workflow run, a fresh id per chat turn.
    run_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    calls: int = 0
    unrecorded: Usage = field(default_factory=Usage)
    #: Budgets seen at the last check with their usage then (for the warning after a call).
    _seen: list[tuple[Budget, Decimal, str]] = field(default_factory=list)

    def targets(self) -> dict[str, str]:
        ids = {
            "user": self.scope.user_id, "agent": self.agent_id,
            "workflow": self.scope.workflow_id, "schedule": self.scope.schedule_id,
        }  # fmt: skip
        return {scope: i for scope, i in ids.items() if i}

    def _amount(self, usage: Usage, metric: str) -> Decimal:
        if metric == "tokens":
            return Decimal(usage.input_tokens + usage.output_tokens)
        return as_cost(usage.cost_usd)

    async def before_call(self, request: ChatRequest, emit: Emit) -> None:
        targets = self.targets()
        found = await self.store.applicable_budgets(targets)
        self._seen = []
        if not found:
            return
        prompt_tokens = count_messages(request.messages)
        projected = Usage(prompt_tokens, 0, self.model_info.cost(prompt_tokens, 0))
        today = utcnow().astimezone(UTC).date()
        for budget in found:
            start, end = period_bounds(budget.period, today)
            used = await self.store.used(
                SCOPE_COLUMN[budget.scope], budget.target_id, start, end, budget.metric
            )
            used += self._amount(self.unrecorded, budget.metric)
            if used >= budget.limit or used + self._amount(projected, budget.metric) > budget.limit:
                metrics.BUDGET_EXCEEDED.labels(budget.scope).inc()
                log.warning("budget %s (%s %s) refused a model call: used %s of %s %s",
                            budget.id, budget.scope, budget.target_id, used, budget.limit,
                            budget.metric)  # fmt: skip
                await emit(EventType.BUDGET_EXCEEDED, event_data(budget, used))
                raise BudgetExceeded(budget, used)
            self._seen.append((budget, used, start.isoformat()))
            await self._maybe_warn(budget, used, start.isoformat(), emit)

    async def _maybe_warn(self, budget: Budget, used: Decimal, period: str, emit: Emit) -> None:
        if used < budget.limit * Decimal(str(budget.warn_ratio)) or budget.warned_period == period:
            return
        if budget.id is None or not await self.store.mark_warned(budget.id, period):
            return
        budget.warned_period = period
        metrics.BUDGET_WARNINGS.labels(budget.scope).inc()
        await emit(EventType.BUDGET_WARNING, event_data(budget, used))

    async def after_call(self, usage: Usage, purpose: str, emit: Emit) -> None:
        self.calls += 1
        call = UsageCall(
            call_key=f"{self.run_key}:{self.calls}", at=utcnow(), model=self.model,
            purpose=purpose, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cost_usd=as_cost(usage.cost_usd), user_id=self.scope.user_id, agent_id=self.agent_id,
            workflow_id=self.scope.workflow_id, schedule_id=self.scope.schedule_id,
            task_id=self.scope.task_id, session_id=self.scope.session_id,
            provider_id=self.provider_id, provider_type=self.provider_type,
        )  # fmt: skip
        if not await self._store(call):
            self.unrecorded.add(usage)
        for budget, used, period in self._seen:
            try:
                after = used + self._amount(usage, budget.metric)
                await self._maybe_warn(budget, after, period, emit)
            except Exception:
                log.exception("budget %s: its warning could not be checked", budget.id)

    async def _store(self, call: UsageCall) -> bool:
        """Write `call`, retrying; True once stored (or found stored by an earlier attempt)."""
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay:
                await asyncio.sleep(delay)
            try:
                await self.store.record(call)
            except Exception as exc:
                last = exc
                log.warning("usage call %s: write attempt %d failed: %s", call.call_key,
                            attempt + 1, exc)  # fmt: skip
                continue
            metrics.USAGE_RECORDS.labels("stored").inc()
            return True
        metrics.USAGE_RECORDS.labels("failed").inc()
        log.error(
            "usage call %s NOT RECORDED after %d attempts (%s): model=%s purpose=%s input=%d "
            "output=%d cost_usd=%s user=%s agent=%s workflow=%s task=%s session=%s",
            call.call_key, len(RETRY_DELAYS) + 1, last, call.model, call.purpose,
            call.input_tokens, call.output_tokens, call.cost_usd, call.user_id, call.agent_id,
            call.workflow_id, call.task_id, call.session_id,
        )  # fmt: skip
        return False


def meter_for(store: UsageStore, scope: UsageScope, plan: Any, model_info: ModelInfo) -> UsageMeter:
    """The meter of calls made with `plan` (`engine.builder.RunPlan`): its agent, provider and
    model, priced by `model_info`. A workflow run's calls are keyed by its task id; any other
    (a chat turn, a chat summary) by a fresh id."""
    return UsageMeter(
        store, scope, agent_id=plan.agent.id, provider_id=plan.agent.provider_id,
        provider_type=plan.provider.provider_type.value, model=plan.model,
        model_info=model_info, run_key=scope.task_id or uuid.uuid4().hex,
    )  # fmt: skip
