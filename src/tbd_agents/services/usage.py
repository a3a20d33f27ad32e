"""The usage API's answers (docs/observability.md, "Usage, cost and budgets"): totals and groups
(`summary`), buckets (`timeseries`), the call list (`calls`) and CSV exports, from usage_daily and
usage_calls (`observability/usage`), with ids resolved to names.

A non-admin caller's own identity is forced as the `user_id` filter: users see only the usage of
runs and chats they own. Ids are resolved to labels with one query per kind; an id whose record
is gone (a deleted agent) is labelled "(deleted)", its usage stays.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tbd_agents.domain.models import Agent, Provider, ScheduledAgent, Workflow
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import InvalidData
from tbd_agents.observability.usage.records import (
    COLUMN,
    DIMENSIONS,
    Totals,
    UsageCall,
    UsageFilter,
)
from tbd_agents.observability.usage.store import UsageStore
from tbd_agents.observability.usage.topn import DEFAULT_LIMIT, MAX_LIMIT, OTHER, RANK_METRICS
from tbd_agents.services.access import Principal
from tbd_agents.storage.protocol import DocumentStore, Query, decode_cursor, encode_cursor, in_

DEFAULT_DAYS = 30
MAX_DAYS = 3660
INTERVALS = ("day", "week", "month")
DELETED = "(deleted)"
NONE = "(none)"
#: Dimension → (model, field holding its name) for labels.
_LABELS: dict[str, tuple[type[Any], str]] = {
    "agent": (Agent, "name"),
    "workflow": (Workflow, "title"),
    "schedule": (ScheduledAgent, "name"),
    "provider": (Provider, "name"),
}
CALL_COLUMNS = (
    "id", "at", "user_id", "agent_id", "workflow_id", "schedule_id", "task_id", "session_id",
    "provider_id", "provider_type", "model", "purpose", "input_tokens", "output_tokens",
    "cost_usd",
)  # fmt: skip
DAILY_COLUMNS = (
    "day", "user_id", "agent_id", "workflow_id", "schedule_id", "provider_id", "model", "calls",
    "input_tokens", "output_tokens", "cost_usd",
)  # fmt: skip


def _day(value: str | None, name: str) -> date | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidData(
            f"{name} must be a date YYYY-MM-DD, got {value[:40]!r}", details={"field": name}
        ) from None


def usage_filter(
    principal: Principal, start: str | None, end: str | None, values: Mapping[str, str | None]
) -> UsageFilter:
    """The filter of a usage request: the range (default: the last 30 days ending today, UTC),
    the comma-separated filter values, and a non-admin's own user id forced."""
    today = utcnow().astimezone(UTC).date()
    last = _day(end, "end") or today
    first = _day(start, "start") or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidData("start must not be after end", details={"field": "start"})
    if (last - first).days >= MAX_DAYS:
        raise InvalidData(f"the range may span at most {MAX_DAYS} days", details={"field": "start"})
    parsed: dict[str, tuple[str, ...]] = {}
    for dim in DIMENSIONS:
        raw = values.get(COLUMN[dim] if dim != "model" else "model")
        if raw is not None:
            items = tuple(v.strip() for v in raw.split(",") if v.strip())
            if not items:
                raise InvalidData(
                    f"{COLUMN[dim]} must not be empty", details={"field": COLUMN[dim]}
                )
            parsed[dim] = items
    if not principal.is_admin:
        parsed["user"] = (principal.identity,)  # whatever user_id asked for
    return UsageFilter(first, last, parsed)


def group_column(group_by: str | None) -> str | None:
    if group_by is None or group_by == "":
        return None
    if group_by not in DIMENSIONS:
        raise InvalidData(
            f"group_by must be one of {', '.join(DIMENSIONS)}, got {group_by[:40]!r}",
            details={"field": "group_by"},
        )
    return COLUMN[group_by]


def check_interval(interval: str) -> str:
    if interval not in INTERVALS:
        raise InvalidData(
            f"interval must be one of {', '.join(INTERVALS)}, got {interval[:40]!r}",
            details={"field": "interval"},
        )
    return interval


def totals_dict(t: Totals) -> dict[str, Any]:
    return {
        "calls": t.calls, "input_tokens": t.input_tokens, "output_tokens": t.output_tokens,
        "total_tokens": t.input_tokens + t.output_tokens, "cost_usd": float(t.cost_usd),
    }  # fmt: skip


async def labels(store: DocumentStore, group_by: str | None, keys: set[str]) -> dict[str, str]:
    """Names of `keys` (ids of `group_by`'s records): one query per kind; "(deleted)" for ids
    whose record is gone, "(none)" for the empty key (a chat has no workflow)."""
    found = {k: (NONE if k == "" else k) for k in keys}
    if group_by not in _LABELS:
        return found
    model, name_field = _LABELS[group_by]
    ids = sorted(k for k in keys if k)
    if not ids:
        return found
    # Only the id and name of each record, as JSON (no model validation of whole records).
    omit = frozenset(model.model_fields) - {"id", name_field}
    async with store.unit_of_work(readonly=True) as repos:
        page = await repos.for_model(model).list_json(
            Query(filters=(in_("id", ids),), limit=len(ids)), omit=omit
        )
    names = {r["id"]: (r.get(name_field) or r["id"]) for r in json.loads(page.items)}
    return found | {i: names.get(i, DELETED) for i in ids}


async def summary(
    docs: DocumentStore, usage: UsageStore, where: UsageFilter, group_by: str | None
) -> dict[str, Any]:
    rows = await usage.grouped(where, group_column(group_by), None)
    total = Totals()
    for row in rows:
        total.add(row.totals)
    groups: list[dict[str, Any]] = []
    if group_by:
        names = await labels(docs, group_by, {r.key for r in rows})
        rows.sort(key=lambda r: (-r.totals.cost_usd, r.key))
        groups = [{"key": r.key, "label": names[r.key], **totals_dict(r.totals)} for r in rows]
    return {"start": where.start.isoformat(), "end": where.end.isoformat(), "group_by": group_by,
            "totals": totals_dict(total), "groups": groups}  # fmt: skip


def buckets(start: date, end: date, interval: str) -> list[date]:
    """Every bucket start from the one holding `start` to the one holding `end` (weeks start
    on Monday, months on the 1st)."""
    if interval == "day":
        first = start
    elif interval == "week":
        first = start - timedelta(days=start.weekday())
    else:
        first = start.replace(day=1)
    out: list[date] = []
    cur = first
    while cur <= end:
        out.append(cur)
        if interval == "day":
            cur += timedelta(days=1)
        elif interval == "week":
            cur += timedelta(days=7)
        else:
            cur = (cur.replace(day=28) + timedelta(days=4)).replace(day=1)
    return out


def check_metric(metric: str) -> str:
    if metric not in RANK_METRICS:
        raise InvalidData(
            f"metric must be one of {', '.join(RANK_METRICS)}, got {metric[:40]!r}",
            details={"field": "metric"},
        )
    return metric


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidData(
            f"limit must be between 1 and {MAX_LIMIT}, got {limit}", details={"field": "limit"}
        )
    return limit


async def timeseries(
    docs: DocumentStore,
    usage: UsageStore,
    where: UsageFilter,
    interval: str,
    group_by: str | None,
    limit: int = DEFAULT_LIMIT,
    metric: str = "cost_usd",
) -> dict[str, Any]:
    """The buckets of the range and, with `group_by`, the series of the top `limit` groups by
    `metric` over the range (largest first) and one series "_other" (label "Other", `folded`:
    how many groups it sums) for the rest, so every bucket still sums to the totals."""
    ranked = await usage.series(
        where,
        group_column(group_by),
        check_interval(interval),
        check_limit(limit),
        check_metric(metric),
    )
    starts = [b.isoformat() for b in buckets(where.start, where.end, interval)]
    # Points are built as dicts of the rows' sums (one dict per row), filling the gaps with one
    # shared zero dict.
    per_key: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in ranked.keys}
    total = Totals()
    for row in ranked.rows:
        per_key.setdefault(row.key, {})[row.day.isoformat()] = totals_dict(row.totals)
        total.add(row.totals)
    keys = [k for k in ranked.keys if k in per_key]
    if not group_by:
        per_key, keys, names = {"all": per_key.get("", {})}, ["all"], {"all": "all"}
    else:
        names = await labels(docs, group_by, set(keys))
    zero = totals_dict(Totals())
    series: list[dict[str, Any]] = [{"key": key, "label": names[key],
               "points": [{"date": b, **per_key[key].get(b, zero)} for b in starts]}
              for key in keys]  # fmt: skip
    if ranked.folded:
        points = per_key.get(OTHER, {})
        series.append({"key": OTHER, "label": "Other", "folded": ranked.folded,
                       "points": [{"date": b, **points.get(b, zero)} for b in starts]})  # fmt: skip
    return {"start": where.start.isoformat(), "end": where.end.isoformat(), "interval": interval,
            "group_by": group_by, "limit": limit, "metric": metric, "buckets": starts,
            "series": series, "totals": totals_dict(total)}  # fmt: skip


def call_dict(call: UsageCall) -> dict[str, Any]:
    out = {c: getattr(call, c) for c in CALL_COLUMNS}
    out["at"] = call.at.astimezone(UTC).isoformat()
    out["cost_usd"] = float(call.cost_usd)
    return out


async def calls_page(
    usage: UsageStore, where: UsageFilter, limit: int, cursor: str | None
) -> dict[str, Any]:
    after = None
    if cursor:
        try:
            at, last = decode_cursor(cursor, 2)
            after = (datetime.fromisoformat(str(at)), str(last))
        except Exception:
            raise InvalidData(
                "cursor is not one this API returned", details={"field": "cursor"}
            ) from None
    found = await usage.calls(where, limit + 1, after)
    page, more = found[:limit], len(found) > limit
    next_cursor = encode_cursor([page[-1].at.isoformat(), page[-1].id]) if more and page else None
    return {"items": [call_dict(c) for c in page], "next_cursor": next_cursor}


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return "" if value is None else value


async def csv_lines(
    docs: DocumentStore, usage: UsageStore, where: UsageFilter, level: str, group_by: str | None
) -> AsyncIterator[str]:
    """The CSV export, one line at a time: calls or usage_daily rows streamed from the
    database; with `group_by` (daily level), one line per day and group, with its label."""
    if level == "daily" and group_by:
        rows = await usage.grouped(where, group_column(group_by), "day")
        names = await labels(docs, group_by, {r.key for r in rows})
        yield _csv_line(["day", group_by, "label", *DAILY_COLUMNS[7:]])
        for r in rows:
            t = r.totals
            yield _csv_line([r.day.isoformat(), r.key, names[r.key], t.calls, t.input_tokens,
                             t.output_tokens, _cell(t.cost_usd)])  # fmt: skip
        return
    if level == "calls":
        yield _csv_line(list(CALL_COLUMNS))
        async for call in usage.stream_calls(where):
            yield _csv_line([_cell(getattr(call, c)) for c in CALL_COLUMNS])
        return
    yield _csv_line(list(DAILY_COLUMNS))
    async for day, row in usage.stream_daily(where):
        yield _csv_line([day.isoformat(), *(_cell(row[c]) for c in DAILY_COLUMNS[1:])])
