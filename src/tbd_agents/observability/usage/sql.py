"""`UsageStore` on PostgreSQL: `usage_calls`, `usage_daily` and `budgets`
(`storage/postgres/schema_usage.py`).

A call and its aggregates are written by ONE statement (a CTE inserting the call with
`ON CONFLICT (call_key) DO NOTHING` feeding `INSERT … ON CONFLICT DO UPDATE` on usage_daily,
usage_monthly and usage_rollup): the aggregates always equal the sum of the calls, and a
retried write adds nothing. Time series read usage_rollup when they can (`rollup.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    and_,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.domain.types import utcnow
from tbd_agents.observability.usage.records import (
    Budget,
    DailyRow,
    Totals,
    UsageCall,
    UsageFilter,
    split_months,
)
from tbd_agents.observability.usage.rollup import add_call, plan
from tbd_agents.observability.usage.rollup import series as rollup_series
from tbd_agents.observability.usage.store import BUDGET_FIELDS
from tbd_agents.observability.usage.topn import Ranked, fold
from tbd_agents.storage.postgres.schema_usage import (
    budgets,
    usage_calls,
    usage_daily,
    usage_monthly,
)

_DIMS = ("user_id", "agent_id", "workflow_id", "schedule_id", "provider_id", "model")
_CALL_FIELDS = (
    "call_key",
    "at",
    "user_id",
    "agent_id",
    "workflow_id",
    "schedule_id",
    "task_id",
    "session_id",
    "provider_id",
    "provider_type",
    "model",
    "purpose",
    "input_tokens",
    "output_tokens",
    "cost_usd",
)
_SUMS = ("calls", "input_tokens", "output_tokens", "cost_usd")
_STREAM_BATCH = 2000


def _where(table: Any, where: UsageFilter, day: ColumnElement[Any]) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = [day >= where.start, day <= where.end]
    for column, values in where.items():
        found.append(table.c[column].in_(values))
    return found


def _sums(
    table: Any,
    period: str,
    where: UsageFilter,
    first: date,
    last: date,
    column: str | None,
    interval: str | None,
) -> Any:
    """Sums of `table` (usage_daily or usage_monthly) per bucket and key for periods
    `first`..`last` (days or month starts) and `where`'s dimension filters."""
    when = table.c[period]
    key = table.c[column] if column else literal("")
    bucket: ColumnElement[Any] = (
        cast(func.date_trunc(interval, when), Date)
        if interval in ("week", "month")
        else (when if interval == "day" else literal(where.start, Date))
    )
    return (
        select(bucket.label("bucket"), key.label("key"),
               cast(func.sum(table.c.calls), BigInteger).label("calls"),
               cast(func.sum(table.c.input_tokens), BigInteger).label("input_tokens"),
               cast(func.sum(table.c.output_tokens), BigInteger).label("output_tokens"),
               func.sum(table.c.cost_usd).label("cost_usd"))
        .where(when >= first, when <= last, *(table.c[c].in_(v) for c, v in where.items()))
        .group_by(bucket, key)
    )  # fmt: skip


def _calls_where(where: UsageFilter) -> list[ColumnElement[bool]]:
    """`where` on usage_calls: `at` within the days' UTC bounds (a range the index on `at`
    serves), and the dimension filters."""
    first = datetime.combine(where.start, time(), UTC)
    after = datetime.combine(where.end + timedelta(days=1), time(), UTC)
    t = usage_calls
    return [t.c.at >= first, t.c.at < after, *(t.c[c].in_(v) for c, v in where.items())]


def _budget(row: Any) -> Budget:
    return Budget(
        id=row.id,
        name=row.name,
        scope=row.scope,
        target_id=row.target_id,
        metric=row.metric,
        period=row.period,
        limit=row.limit_value,
        warn_ratio=row.warn_ratio,
        enabled=row.enabled,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        warned_period=row.warned_period,
    )


def _call(row: Any) -> UsageCall:
    return UsageCall(**{f: getattr(row, f) for f in _CALL_FIELDS}, id=row.id)


class SqlUsageStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # --- the ledger -------------------------------------------------------------------------
    async def record(self, call: UsageCall) -> bool:
        call.id = call.id or uuid.uuid4().hex
        values = {f: getattr(call, f) for f in _CALL_FIELDS} | {"id": call.id}
        inserted = (
            pg_insert(usage_calls)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["call_key"])
            .returning(usage_calls.c.id)
            .cte("inserted")
        )
        day = call.at.astimezone(UTC).date()
        daily = self._add(usage_daily, "day", day, call, inserted).cte("daily")
        rollup = add_call(call, inserted).cte("rollup")
        monthly = self._add(usage_monthly, "month", day.replace(day=1), call, inserted)
        statement = monthly.returning(usage_monthly.c.calls).add_cte(daily).add_cte(rollup)
        async with self.engine.begin() as conn:
            fresh = (await conn.execute(statement)).first()
        return fresh is not None

    @staticmethod
    def _add(table: Any, period: str, first: date, call: UsageCall, inserted: Any) -> Any:
        """Add `call` to `table`'s row of its period and dimensions, if `inserted` has a row."""
        source = select(
            literal(first, Date).label(period),
            *(literal(call.dim(d)).label(d) for d in _DIMS),
            literal(1).label("calls"),
            literal(call.input_tokens).label("input_tokens"),
            literal(call.output_tokens).label("output_tokens"),
            literal(call.cost_usd).label("cost_usd"),
        ).where(select(inserted.c.id).exists())
        add = pg_insert(table).from_select([period, *_DIMS, *_SUMS], source)
        return add.on_conflict_do_update(
            index_elements=[period, *_DIMS],
            set_={c: table.c[c] + add.excluded[c] for c in _SUMS},
        )

    async def grouped(
        self, where: UsageFilter, column: str | None, interval: str | None
    ) -> list[DailyRow]:
        head, months, tail = split_months(where.start, where.end)
        if interval in ("day", "week") or months is None:
            parts = [_sums(usage_daily, "day", where, where.start, where.end, column, interval)]
        else:  # whole months from usage_monthly, the days around them from usage_daily
            parts = [_sums(usage_monthly, "month", where, *months, column, interval)]
            parts += [
                _sums(usage_daily, "day", where, first, last, column, interval)
                for first, last in (head, tail)
                if first <= last
            ]
        query = parts[0]
        if len(parts) > 1:  # the same bucket and key can come from both tables: add them up
            both = union_all(*parts).subquery()
            sums = [cast(func.sum(both.c[c]), BigInteger).label(c) for c in _SUMS[:3]]
            query = select(
                both.c.bucket, both.c.key, *sums, func.sum(both.c.cost_usd).label("cost_usd")
            ).group_by(both.c.bucket, both.c.key)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        # no ORDER BY: callers order groups and series themselves
        return [DailyRow(r[0], r[1] or "", Totals(r[2], r[3], r[4], r[5])) for r in rows]

    async def series(
        self, where: UsageFilter, column: str | None, interval: str, limit: int, metric: str
    ) -> Ranked:
        found = plan(where, column)
        if found is None:  # filtered across dimensions: usage_daily's indexes serve the filter
            rows = await self.grouped(where, column, interval)
            return fold(rows, limit if column else None, metric)
        dimension, keys = found
        async with self.engine.connect() as conn:
            return await rollup_series(
                conn, where, dimension, keys, column is not None, interval, limit, metric
            )

    async def calls(
        self, where: UsageFilter, limit: int, after: tuple[datetime, str] | None
    ) -> list[UsageCall]:
        query = self._calls_query(where)
        if after is not None:
            query = query.where(tuple_(usage_calls.c.at, usage_calls.c.id) < tuple_(*after))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [_call(r) for r in rows]

    @staticmethod
    def _calls_query(where: UsageFilter) -> Any:
        t = usage_calls
        return select(t).where(*_calls_where(where)).order_by(t.c.at.desc(), t.c.id.desc())

    async def prune_calls(self, before: datetime, limit: int, *, dry_run: bool = False) -> int:
        t = usage_calls
        async with self.engine.begin() as conn:
            if dry_run:
                count = select(func.count()).where(t.c.at < before)
                return int((await conn.execute(count)).scalar_one())
            oldest = select(t.c.id).where(t.c.at < before).order_by(t.c.at).limit(limit)
            result = await conn.execute(delete(t).where(t.c.id.in_(oldest.scalar_subquery())))
        return int(result.rowcount or 0)

    async def stream_calls(self, where: UsageFilter) -> AsyncIterator[UsageCall]:
        async with self.engine.connect() as conn:
            result = await conn.stream(
                self._calls_query(where).execution_options(yield_per=_STREAM_BATCH)
            )
            async for row in result:
                yield _call(row)

    async def stream_daily(self, where: UsageFilter) -> AsyncIterator[tuple[date, dict[str, Any]]]:
        t = usage_daily
        query = select(t).where(*_where(t, where, t.c.day)).order_by(t.c.day, *t.c[_DIMS])
        async with self.engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=_STREAM_BATCH))
            async for row in result:
                yield row.day, dict(row._mapping)

    async def used(
        self, column: str, target_id: str, start: date, end: date, metric: str
    ) -> Decimal:
        t = usage_daily
        amount = t.c.cost_usd if metric == "cost_usd" else t.c.input_tokens + t.c.output_tokens
        query = select(func.coalesce(func.sum(amount), 0)).where(
            t.c[column] == target_id, t.c.day >= start, t.c.day <= end
        )
        async with self.engine.connect() as conn:
            return Decimal(await conn.scalar(query) or 0)

    # --- budgets ----------------------------------------------------------------------------
    async def applicable_budgets(self, targets: Mapping[str, str]) -> list[Budget]:
        if not targets:
            return []
        match = or_(
            *(and_(budgets.c.scope == s, budgets.c.target_id == i) for s, i in targets.items())
        )
        query = select(budgets).where(budgets.c.enabled.is_(True), match)
        async with self.engine.connect() as conn:
            return [_budget(r) for r in (await conn.execute(query.order_by(budgets.c.id))).all()]

    async def list_budgets(
        self, scope: str | None, target_id: str | None, visible: Mapping[str, list[str]] | None
    ) -> list[Budget]:
        query = select(budgets).order_by(budgets.c.created_at, budgets.c.id)
        if scope is not None:
            query = query.where(budgets.c.scope == scope)
        if target_id is not None:
            query = query.where(budgets.c.target_id == target_id)
        if visible is not None:
            query = query.where(
                or_(
                    literal(False),
                    *(
                        and_(budgets.c.scope == s, budgets.c.target_id.in_(ids))
                        for s, ids in visible.items()
                        if ids
                    ),
                )
            )
        async with self.engine.connect() as conn:
            return [_budget(r) for r in (await conn.execute(query)).all()]

    async def get_budget(self, budget_id: str) -> Budget | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(budgets).where(budgets.c.id == budget_id))).first()
        return _budget(row) if row is not None else None

    async def create_budget(self, budget: Budget) -> Budget:
        values = {f: getattr(budget, f) for f in BUDGET_FIELDS if f != "limit"}
        values |= {"limit_value": budget.limit, "created_by": budget.created_by}
        async with self.engine.begin() as conn:
            row = (await conn.execute(insert(budgets).values(**values).returning(budgets))).one()
        return _budget(row)

    async def update_budget(self, budget_id: str, changes: Mapping[str, Any]) -> Budget | None:
        values = {("limit_value" if k == "limit" else k): v for k, v in changes.items()}
        values["updated_at"] = utcnow()
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(budgets).where(budgets.c.id == budget_id).values(**values)
                    .returning(budgets)
                )
            ).first()  # fmt: skip
        return _budget(row) if row is not None else None

    async def delete_budget(self, budget_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(budgets).where(budgets.c.id == budget_id))
        return bool(result.rowcount)

    async def mark_warned(self, budget_id: str, period: str) -> bool:
        query = (
            update(budgets)
            .where(budgets.c.id == budget_id, budgets.c.warned_period.is_distinct_from(period))
            .values(warned_period=period)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)
