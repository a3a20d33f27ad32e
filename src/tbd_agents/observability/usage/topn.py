"""Bounded time series: the top N groups by a metric over the range, the rest folded into one
series `_other`, so an answer has at most N + 1 series (a year by day for 200 agents was 73,000
points and 5 MB) while every bucket still sums to the totals.

The ranking is the same on every path (the rollup query in `sql.py`, and `fold` here over
usage_daily rows for filtered queries and on MongoDB): the metric summed over the whole range,
descending, ties by key in code point order (`COLLATE "C"` in SQL).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from tbd_agents.observability.usage.records import DailyRow, Totals

#: The key (and, with label "Other", the series) of the groups past the top N.
OTHER = "_other"
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
#: Metrics the top N can be chosen by (the fields of a point).
RANK_METRICS = ("cost_usd", "total_tokens", "calls", "input_tokens", "output_tokens")


def amount(totals: Totals, metric: str) -> Decimal:
    """`metric` of `totals` (total_tokens: input + output)."""
    if metric == "total_tokens":
        return Decimal(totals.input_tokens + totals.output_tokens)
    value: int | Decimal = getattr(totals, metric)
    return Decimal(value)


def rank_key(key: str, value: Decimal) -> tuple[Decimal, str]:
    """Sort key of a group: largest first, then by key."""
    return (-value, key)


@dataclass(slots=True)
class Ranked:
    """Rows of the top groups (`keys`, best first) and of `OTHER`, per bucket; `folded`: how
    many groups `OTHER` sums (0: there is no `OTHER` row)."""

    rows: list[DailyRow]
    keys: list[str] = field(default_factory=list)
    folded: int = 0


def fold(rows: Iterable[DailyRow], limit: int | None, metric: str) -> Ranked:
    """Keep the `limit` groups with the largest `metric` over all `rows`; sum the others per
    bucket into `OTHER` rows. `limit` None keeps every group."""
    rows = list(rows)
    per_key: dict[str, Decimal] = {}
    for row in rows:
        per_key[row.key] = per_key.get(row.key, Decimal(0)) + amount(row.totals, metric)
    order = sorted(per_key, key=lambda k: rank_key(k, per_key[k]))
    keep = order if limit is None else order[:limit]
    if len(keep) == len(order):
        return Ranked(rows, keep, 0)
    kept = set(keep)
    out = [r for r in rows if r.key in kept]
    other: dict[date, Totals] = {}
    for row in rows:
        if row.key not in kept:
            other.setdefault(row.day, Totals()).add(row.totals)
    out += [DailyRow(day, OTHER, t) for day, t in sorted(other.items())]
    return Ranked(out, keep, len(order) - len(keep))


def subtract(total: Totals, parts: Iterable[Totals]) -> Totals:
    """`total` minus the sum of `parts` (exact: integers and Decimals)."""
    left = Totals(total.calls, total.input_tokens, total.output_tokens, total.cost_usd)
    for part in parts:
        left.calls -= part.calls
        left.input_tokens -= part.input_tokens
        left.output_tokens -= part.output_tokens
        left.cost_usd -= part.cost_usd
    return left
