"""Where usage and budgets are stored: the `UsageStore` protocol and the one place that picks an
implementation for a document store (PostgreSQL: `sql.SqlUsageStore`; MongoDB:
`mongo.MongoUsageStore`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from tbd_agents.errors import ConfigurationError
from tbd_agents.observability.usage.records import Budget, DailyRow, UsageCall, UsageFilter
from tbd_agents.observability.usage.topn import Ranked

log = logging.getLogger(__name__)

#: Budget fields a PUT may change.
BUDGET_FIELDS = ("name", "scope", "target_id", "metric", "period", "limit", "warn_ratio", "enabled")


class UsageStore(Protocol):
    """The usage ledger (`usage_calls`, `usage_daily`) and `budgets` of one database."""

    async def record(self, call: UsageCall) -> bool:
        """Store `call` and add it to its day's aggregate; False if its `call_key` was stored
        already (a retried write), in which case nothing changes."""
        ...

    async def grouped(
        self, where: UsageFilter, column: str | None, interval: str | None
    ) -> list[DailyRow]:
        """Sums from usage_daily per group key (`column`; '' without one) and, with `interval`
        (day, week, month), per bucket start (`DailyRow.day`; the range's start without)."""
        ...

    async def series(
        self, where: UsageFilter, column: str | None, interval: str, limit: int, metric: str
    ) -> Ranked:
        """Sums per bucket of `interval` of the top `limit` groups of `column` by `metric` over
        the range, the others folded into `topn.OTHER` rows (`topn.fold`'s ranking); without
        `column`, one group ('' key) of every matching call."""
        ...

    async def calls(
        self, where: UsageFilter, limit: int, after: tuple[datetime, str] | None
    ) -> list[UsageCall]:
        """Calls newest first (`at`, `id` descending), after the cursor position `after`."""
        ...

    async def prune_calls(self, before: datetime, limit: int, *, dry_run: bool = False) -> int:
        """Delete up to `limit` of the oldest call rows made before `before`; how many. The day
        and month aggregates stay: the usage totals of every period do not change. `dry_run`:
        count all of them, delete nothing."""
        ...

    def stream_calls(self, where: UsageFilter) -> AsyncIterator[UsageCall]:
        """Every matching call, newest first, read in batches (for CSV exports)."""
        ...

    def stream_daily(self, where: UsageFilter) -> AsyncIterator[tuple[date, dict[str, Any]]]:
        """Every matching usage_daily row (day, its dimensions and sums), by day."""
        ...

    async def used(
        self, column: str, target_id: str, start: date, end: date, metric: str
    ) -> Decimal:
        """Dollars (`cost_usd`) or tokens (input + output) of `column` = `target_id` in the days
        `start`..`end`."""
        ...

    async def applicable_budgets(self, targets: Mapping[str, str]) -> list[Budget]:
        """Enabled budgets whose (scope, target_id) is one of `targets` (scope → id)."""
        ...

    async def list_budgets(
        self, scope: str | None, target_id: str | None, visible: Mapping[str, list[str]] | None
    ) -> list[Budget]:
        """Budgets by creation; `visible` (scope → ids), when given, restricts to those."""
        ...

    async def get_budget(self, budget_id: str) -> Budget | None: ...

    async def create_budget(self, budget: Budget) -> Budget: ...

    async def update_budget(self, budget_id: str, changes: Mapping[str, Any]) -> Budget | None: ...

    async def delete_budget(self, budget_id: str) -> bool: ...

    async def mark_warned(self, budget_id: str, period: str) -> bool:
        """Note that `budget_id`'s warning for `period` was sent; False if it was already."""
        ...


def usage_store_for(source: Any) -> UsageStore:
    """The usage store of a document store (PostgreSQL: its engine; MongoDB: its database)."""
    backend = getattr(source, "backend", None)
    if backend == "postgres" and getattr(source, "engine", None) is not None:
        from tbd_agents.observability.usage.sql import SqlUsageStore

        return SqlUsageStore(source.engine)
    if backend == "mongo" and getattr(source, "database", None) is not None:
        from tbd_agents.observability.usage.mongo import MongoUsageStore

        return MongoUsageStore(source.database)
    raise ConfigurationError(
        f"usage cannot be stored in {type(source).__name__}: use DB_BACKEND=postgres or mongo"
    )


def usage_store_or_none(source: Any) -> UsageStore | None:
    """`usage_store_for(source)`, or None (logged) for a store that cannot hold usage."""
    try:
        return usage_store_for(source)
    except ConfigurationError as exc:
        log.warning("usage is not recorded and budgets are not checked: %s", exc.message)
        return None
