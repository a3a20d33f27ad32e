"""Budget periods, status and the refusal that stops a run.

A budget limits the dollars (`cost_usd`) or tokens (input + output) of one user, agent, workflow
or schedule per UTC day or calendar month. It is checked before each model call (`meter`): the
call is refused when the period's usage is at the limit already, or when the usage plus what
this request's prompt alone would cost (its input tokens, counted; output unknown) passes it.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from tbd_agents.errors import TbdError
from tbd_agents.observability.usage.records import Budget

#: Budget scope → the usage column it limits.
SCOPE_COLUMN = {
    "user": "user_id",
    "agent": "agent_id",
    "workflow": "workflow_id",
    "schedule": "schedule_id",
}


def period_bounds(period: str, today: date) -> tuple[date, date]:
    """The first and last day (UTC) of the `period` ("day" or "month") containing `today`."""
    if period == "day":
        return today, today
    last = calendar.monthrange(today.year, today.month)[1]
    return today.replace(day=1), today.replace(day=last)


def _number(value: Decimal, metric: str) -> float | int:
    return int(value) if metric == "tokens" else float(round(value, 6))


@dataclass(slots=True)
class BudgetStatus:
    used: Decimal
    start: date
    end: date
    state: str  # ok | warning | exceeded

    @classmethod
    def of(cls, budget: Budget, used: Decimal, start: date, end: date) -> BudgetStatus:
        ratio = used / budget.limit if budget.limit else Decimal(0)
        state = (
            "exceeded" if used >= budget.limit
            else "warning" if ratio >= Decimal(str(budget.warn_ratio))
            else "ok"
        )  # fmt: skip
        return cls(used, start, end, state)

    def to_dict(self, budget: Budget) -> dict[str, Any]:
        return {
            "used": _number(self.used, budget.metric),
            "ratio": float(round(self.used / budget.limit, 6)),
            "period_start": self.start.isoformat(),
            "period_end": self.end.isoformat(),
            "state": self.state,
        }


def event_data(budget: Budget, used: Decimal) -> dict[str, Any]:
    """The data of a `budget_warning` / `budget_exceeded` event."""
    return {
        "budget_id": budget.id, "name": budget.name, "scope": budget.scope,
        "target_id": budget.target_id, "metric": budget.metric, "period": budget.period,
        "used": _number(used, budget.metric), "limit": _number(budget.limit, budget.metric),
    }  # fmt: skip


class BudgetExceeded(TbdError):
    """A budget refused a model call; the run ends failed with this message."""

    http_status = 429
    code = "budget_exceeded"

    def __init__(self, budget: Budget, used: Decimal) -> None:
        used_text = _number(used, budget.metric)
        limit_text = _number(budget.limit, budget.metric)
        super().__init__(
            f"budget_exceeded: {budget.name}: used {used_text} of {limit_text} {budget.metric} "
            f"this {budget.period}",
            details=event_data(budget, used),
        )
        self.budget = budget
