"""Values of the usage ledger: one call's record, the filters of a usage query, a budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Literal

#: Dimensions a usage query can filter on and group by (usage_daily's key columns).
DIMENSIONS = ("user", "agent", "workflow", "schedule", "provider", "model")
Dimension = Literal["user", "agent", "workflow", "schedule", "provider", "model"]
#: Dimension → column / field name.
COLUMN: dict[str, str] = {
    "user": "user_id",
    "agent": "agent_id",
    "workflow": "workflow_id",
    "schedule": "schedule_id",
    "provider": "provider_id",
    "model": "model",
}
#: Cost is stored with this many decimals (NUMERIC(20, 12)).
COST_PLACES = Decimal("1e-12")


def as_cost(value: float | Decimal) -> Decimal:
    """`value` (dollars) as the ledger stores it: a Decimal rounded to 12 places."""
    return Decimal(str(value)).quantize(COST_PLACES)


@dataclass(frozen=True, slots=True)
class UsageScope:
    """Whom and what a run's model calls are for: the entry point knows these ids (a
    workflow run: its owner, workflow, schedule and task; a chat turn: the caller and session)."""

    user_id: str | None = None
    workflow_id: str | None = None
    schedule_id: str | None = None
    task_id: str | None = None
    session_id: str | None = None


@dataclass(slots=True)
class UsageCall:
    """One model call as the ledger records it. `call_key` is unique: a retried write of the
    same call is ignored (`<run key>:<number of the call in the run>`)."""

    call_key: str
    at: datetime
    model: str
    purpose: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    user_id: str | None = None
    agent_id: str | None = None
    workflow_id: str | None = None
    schedule_id: str | None = None
    task_id: str | None = None
    session_id: str | None = None
    provider_id: str | None = None
    provider_type: str | None = None
    id: str | None = None

    def dim(self, name: str) -> str:
        """The usage_daily key value of dimension column `name` ('' when the call has none)."""
        value: str | None = getattr(self, name)
        return value or ""


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Days `start`..`end` (inclusive, UTC) and, per dimension, the values to keep (empty: all)."""

    start: date
    end: date
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def items(self) -> list[tuple[str, tuple[str, ...]]]:
        """(column, values) of the dimensions filtered on."""
        return [(COLUMN[d], v) for d, v in self.values.items() if v]


@dataclass(slots=True)
class Totals:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    def add(self, other: Totals) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd


@dataclass(slots=True)
class DailyRow:
    """Usage of one day (or one bucket) and one group key ('' without a group)."""

    day: date
    key: str
    totals: Totals


@dataclass(slots=True)
class Budget:
    """A spending limit: see the usage contract (docs/observability.md)."""

    name: str
    scope: str
    target_id: str
    metric: str
    period: str
    limit: Decimal
    warn_ratio: float = 0.8
    enabled: bool = True
    created_by: str | None = None
    id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    warned_period: str | None = None


def split_months(
    start: date, end: date
) -> tuple[tuple[date, date], tuple[date, date] | None, tuple[date, date]]:
    """`start`..`end` as (days before the first whole month, (first, last) whole month starts or
    None, days after the last whole month)."""
    first = start if start.day == 1 else (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    after_end = end + timedelta(days=1)
    last_end = after_end.replace(day=1)  # the first day after the last whole month
    if first >= last_end:
        return (start, end), None, (end, start)
    last = (last_end - timedelta(days=1)).replace(day=1)
    return (start, first - timedelta(days=1)), (first, last), (last_end, end)
