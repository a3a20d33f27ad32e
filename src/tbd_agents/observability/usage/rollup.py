"""`usage_rollup` on PostgreSQL: usage per dimension alone, per day and per month
(`storage/postgres/schema_usage.py`), and the top-N time series read from it.

Why: a time series over a year without filters read every usage_daily row of the year (one per
day and combination of the six dimensions: 237k rows for 1M calls) and took ~1 s. The rollup has
one row per day (and month) and value of ONE dimension, plus `all` ('' key) for every call:
the top N keys over the range come from ~12 monthly rows per key plus the days of the partial
months, the series of those N keys from N x days rows, and `_other` per bucket is the `all` row
minus the top keys (exact: integers and NUMERIC).

The rollup answers queries that filter on no dimension, or only on the dimension they group by
(`plan`); queries filtering across dimensions (a non-admin's forced user filter and group_by
agent) read usage_daily through its per-dimension indexes, which is fast since the filter is
selective.

The rows of a call are added by the statement that inserts the call (`add_call`, one multi-row
`INSERT … ON CONFLICT DO UPDATE` in the same CTE chain as usage_daily and usage_monthly): the
rollup always equals the sum of the calls, and a retried call adds nothing.
"""

from __future__ import annotations

from datetime import UTC, date
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    Numeric,
    Text,
    and_,
    cast,
    column,
    func,
    literal,
    or_,
    select,
    union_all,
    values,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tbd_agents.observability.usage.records import (
    COLUMN,
    DIMENSIONS,
    DailyRow,
    Totals,
    UsageCall,
    UsageFilter,
    split_months,
)
from tbd_agents.observability.usage.topn import OTHER, Ranked, subtract
from tbd_agents.storage.postgres.schema_usage import COST, usage_rollup

ALL = "all"
_SUMS = ("calls", "input_tokens", "output_tokens", "cost_usd")
_DIMENSION_OF = {c: d for d, c in COLUMN.items()}


def add_call(call: UsageCall, inserted: Any) -> Any:
    """The upsert adding `call` to its 14 rollup rows ((all + 6 dimensions) x (day, month)), if
    `inserted` (the CTE inserting the call) has a row."""
    day = call.at.astimezone(UTC).date()
    keys = [(ALL, ""), *((d, call.dim(COLUMN[d])) for d in DIMENSIONS)]
    rows = values(
        column("dimension", Text),
        column("grain", Text),
        column("period", Date),
        column("key", Text),
        name="rollup_rows",
    ).data(
        [(d, g, p, k) for g, p in (("day", day), ("month", day.replace(day=1))) for d, k in keys]
    )
    source = select(
        rows.c.dimension,
        rows.c.grain,
        rows.c.period,
        rows.c.key,
        literal(1, BigInteger).label("calls"),
        literal(call.input_tokens, Numeric(20, 0)).label("input_tokens"),
        literal(call.output_tokens, Numeric(20, 0)).label("output_tokens"),
        literal(call.cost_usd, COST).label("cost_usd"),
    ).where(select(inserted.c.id).exists())
    t = usage_rollup
    add = pg_insert(t).from_select(["dimension", "grain", "period", "key", *_SUMS], source)
    return add.on_conflict_do_update(
        index_elements=["dimension", "grain", "period", "key"],
        set_={c: t.c[c] + add.excluded[c] for c in _SUMS},
    )


def plan(where: UsageFilter, column_name: str | None) -> tuple[str, tuple[str, ...] | None] | None:
    """(rollup dimension, keys to keep or None for all) when the rollup can answer a query
    grouped by `column_name` under `where`; None when it filters across dimensions."""
    grouped = _DIMENSION_OF[column_name] if column_name else None
    filters = [(d, v) for d, v in where.values.items() if v]
    if not filters:
        return (grouped or ALL), None
    if len(filters) == 1 and grouped in (None, filters[0][0]):
        return filters[0][0], filters[0][1]
    return None


def _bucket(interval: str) -> ColumnElement[Any]:
    period = usage_rollup.c.period
    if interval == "day":
        return period
    return cast(func.date_trunc(interval, period), Date)


def _metric(metric: str) -> ColumnElement[Any]:
    t = usage_rollup
    if metric == "total_tokens":
        return func.sum(t.c.input_tokens) + func.sum(t.c.output_tokens)
    return func.sum(t.c[metric])


def _months_and_days(start: date, end: date) -> ColumnElement[bool]:
    """`start`..`end` as rollup rows: whole months from the month grain, the days of the
    partial months around them from the day grain."""
    t = usage_rollup
    head, months, tail = split_months(start, end)
    parts = [and_(t.c.grain == "day", t.c.period >= f, t.c.period <= last)
             for f, last in (head, tail) if f <= last]  # fmt: skip
    if months is not None:
        parts.append(and_(t.c.grain == "month", t.c.period >= months[0], t.c.period <= months[1]))
    return or_(*parts)


def _sum_columns() -> list[Any]:
    t = usage_rollup
    return [
        cast(func.sum(t.c.calls), BigInteger).label("calls"),
        cast(func.sum(t.c.input_tokens), BigInteger).label("input_tokens"),
        cast(func.sum(t.c.output_tokens), BigInteger).label("output_tokens"),
        func.sum(t.c.cost_usd).label("cost_usd"),
    ]


async def series(
    conn: AsyncConnection,
    where: UsageFilter,
    dimension: str,
    keys: tuple[str, ...] | None,
    grouped: bool,
    interval: str,
    limit: int,
    metric: str,
) -> Ranked:
    """Per-bucket sums of the top `limit` keys of `dimension` by `metric` (restricted to
    `keys`), and `_other` for the rest; without `grouped`, one series ('' key) of the total."""
    t = usage_rollup
    bucket = _bucket(interval).label("bucket")
    days = and_(t.c.grain == "day", t.c.period >= where.start, t.c.period <= where.end)
    scope = [t.c.dimension == dimension] + ([t.c.key.in_(keys)] if keys is not None else [])
    if not grouped:
        query = select(bucket, *_sum_columns()).where(*scope, days).group_by(bucket)
        rows = (await conn.execute(query)).all()
        return Ranked([DailyRow(b, "", Totals(n, i, o, c)) for b, n, i, o, c in rows], [""], 0)
    score = _metric(metric)
    top_query = (
        select(t.c.key, score.label("score"), func.count().over().label("groups"))
        .where(*scope, _months_and_days(where.start, where.end))
        .group_by(t.c.key)
        .order_by(score.desc(), t.c.key.collate("C"))
        .limit(limit)
    )
    top = (await conn.execute(top_query)).all()
    if not top:
        return Ranked([], [], 0)
    top_keys = [r.key for r in top]
    folded = int(top[0].groups) - len(top_keys)
    parts = [
        select(bucket, t.c.key, literal(0).label("part"), *_sum_columns())
        .where(t.c.dimension == dimension, t.c.key.in_(top_keys), days)
        .group_by(bucket, t.c.key)
    ]
    if folded:  # every key's total per bucket, to take the top keys' sums from
        everything = [t.c.dimension == ALL, t.c.key == ""] if keys is None else scope
        parts.append(
            select(bucket, literal("").label("key"), literal(1).label("part"), *_sum_columns())
            .where(*everything, days)
            .group_by(bucket)
        )
    result = await conn.execute(union_all(*parts) if len(parts) > 1 else parts[0])
    # Plain tuples: a year by day is ~4,000 rows, and named access per row costs more than
    # the query itself.
    found: list[DailyRow] = []
    wholes: list[tuple[date, Totals]] = []
    for day, key, part, calls, tokens_in, tokens_out, cost in result.all():
        totals = Totals(calls, tokens_in, tokens_out, cost)
        if part == 0:
            found.append(DailyRow(day, key, totals))
        else:
            wholes.append((day, totals))
    if folded:
        per_bucket: dict[date, list[Totals]] = {}
        for row in found:
            per_bucket.setdefault(row.day, []).append(row.totals)
        for day, whole in wholes:
            other = subtract(whole, per_bucket.get(day, []))
            if other.calls or other.cost_usd or other.input_tokens or other.output_tokens:
                found.append(DailyRow(day, OTHER, other))
    return Ranked(found, top_keys, folded)
