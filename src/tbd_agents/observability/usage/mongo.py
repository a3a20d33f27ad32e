"""`UsageStore` on MongoDB: the collections `usage_calls`, `usage_daily` and `budgets`, named and
shaped as the PostgreSQL tables (`storage/postgres/schema_usage.py`).

Without multi-document transactions a call is written in three steps: the call document is
inserted (unique `call_key`, `daily_applied: false`), its amounts are added to its day's document
(`update_one(upsert=True)` with `$inc`, unique on the day and dimensions), and the call is marked
`daily_applied: true`. A retried write finds the call's key taken and adds nothing, so a call is
never counted twice. The crash window: a process that dies between the insert and the `$inc`
leaves one call missing from usage_daily (the usage API and budgets under-count it) and marked
`daily_applied: false`, so it can be found (`{daily_applied: false}`) and added by hand; a death
between the `$inc` and the mark leaves a call counted but marked false (do not re-add calls
newer than a crash without checking the day's sum against the calls).

Costs are stored as integer picodollars (`cost_pico`, int64): `$inc` on integers is exact, as
NUMERIC is on PostgreSQL. Days are ISO strings (`YYYY-MM-DD`), which sort and compare as dates.
The usage queries read the matching usage_daily documents and sum them in Python (the daily
documents of a year are a few hundred thousand at most; the MongoDB profile is for small hubs).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from pymongo.errors import DuplicateKeyError

from tbd_agents.domain.types import utcnow
from tbd_agents.observability.usage.records import (
    Budget,
    DailyRow,
    Totals,
    UsageCall,
    UsageFilter,
)
from tbd_agents.observability.usage.topn import Ranked, fold
from tbd_agents.storage.mongo.indexes import IndexSpec

CALLS, DAILY, BUDGETS = "usage_calls", "usage_daily", "budgets"
_DIMS = ("user_id", "agent_id", "workflow_id", "schedule_id", "provider_id", "model")
_PICO = Decimal(10) ** 12
_CALL_FIELDS = (
    "call_key", "at", "user_id", "agent_id", "workflow_id", "schedule_id", "task_id",
    "session_id", "provider_id", "provider_type", "model", "purpose", "input_tokens",
    "output_tokens",
)  # fmt: skip

#: Indexes created when the store opens (`MongoStore.open`).
USAGE_INDEXES: dict[str, tuple[IndexSpec, ...]] = {
    CALLS: (
        IndexSpec("uq_usage_calls_call_key", (("call_key", 1),), unique=True),
        IndexSpec("idx_usage_calls_at", (("at", -1), ("_id", -1))),
        IndexSpec("idx_usage_calls_user_id_at", (("user_id", 1), ("at", -1))),
        IndexSpec("idx_usage_calls_daily_applied", (("daily_applied", 1),)),
    ),
    DAILY: (
        IndexSpec("pk_usage_daily", (("day", 1), *((d, 1) for d in _DIMS)), unique=True),
        IndexSpec("idx_usage_daily_user_id_day", (("user_id", 1), ("day", 1))),
        IndexSpec("idx_usage_daily_agent_id_day", (("agent_id", 1), ("day", 1))),
        IndexSpec("idx_usage_daily_workflow_id_day", (("workflow_id", 1), ("day", 1))),
        IndexSpec("idx_usage_daily_schedule_id_day", (("schedule_id", 1), ("day", 1))),
    ),
    BUDGETS: (IndexSpec("idx_budgets_scope_target_id", (("scope", 1), ("target_id", 1))),),
}


def _pico(cost: Decimal) -> int:
    return int((cost * _PICO).to_integral_value())


def _dollars(pico: int) -> Decimal:
    return (Decimal(int(pico)) / _PICO).quantize(Decimal("1e-12"))


def _match(where: UsageFilter, day_field: str = "day") -> dict[str, Any]:
    found: dict[str, Any] = {
        day_field: {"$gte": where.start.isoformat(), "$lte": where.end.isoformat()}
    }
    for column, values in where.items():
        found[column] = {"$in": list(values)}
    return found


def _bucket(day: date, interval: str | None, start: date) -> date:
    if interval == "day":
        return day
    if interval == "week":
        return date.fromordinal(day.toordinal() - day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return start


def _budget(doc: Mapping[str, Any]) -> Budget:
    return Budget(
        id=str(doc["_id"]), name=doc["name"], scope=doc["scope"], target_id=doc["target_id"],
        metric=doc["metric"], period=doc["period"], limit=Decimal(doc["limit"]),
        warn_ratio=doc["warn_ratio"], enabled=doc["enabled"], created_by=doc.get("created_by"),
        created_at=doc.get("created_at"), updated_at=doc.get("updated_at"),
        warned_period=doc.get("warned_period"),
    )  # fmt: skip


def _call(doc: Mapping[str, Any]) -> UsageCall:
    values: dict[str, Any] = {f: doc.get(f) for f in _CALL_FIELDS}
    values["input_tokens"] = int(values["input_tokens"])
    values["output_tokens"] = int(values["output_tokens"])
    return UsageCall(**values, cost_usd=_dollars(doc["cost_pico"]), id=str(doc["_id"]))


class MongoUsageStore:
    def __init__(self, database: Any) -> None:
        self.database = database
        self.calls_c = database.get_collection(CALLS)
        self.daily_c = database.get_collection(DAILY)
        self.budgets_c = database.get_collection(BUDGETS)

    # --- the ledger -------------------------------------------------------------------------
    async def record(self, call: UsageCall) -> bool:
        call.id = call.id or uuid.uuid4().hex
        doc = {f: getattr(call, f) for f in _CALL_FIELDS}
        doc |= {"_id": call.id, "cost_pico": _pico(call.cost_usd), "day": self._day(call),
                "daily_applied": False}  # fmt: skip
        try:
            await self.calls_c.insert_one(doc)
        except DuplicateKeyError:
            return False
        key = {"day": doc["day"], **{d: call.dim(d) for d in _DIMS}}
        await self.daily_c.update_one(
            key,
            {"$inc": {"calls": 1, "input_tokens": call.input_tokens,
                      "output_tokens": call.output_tokens, "cost_pico": doc["cost_pico"]}},
            upsert=True,
        )  # fmt: skip
        await self.calls_c.update_one({"_id": call.id}, {"$set": {"daily_applied": True}})
        return True

    @staticmethod
    def _day(call: UsageCall) -> str:
        return call.at.astimezone(UTC).date().isoformat()

    async def grouped(
        self, where: UsageFilter, column: str | None, interval: str | None
    ) -> list[DailyRow]:
        sums: dict[tuple[date, str], Totals] = {}
        async for doc in self.daily_c.find(_match(where)):
            bucket = _bucket(date.fromisoformat(doc["day"]), interval, where.start)
            key = (bucket, (doc.get(column) or "") if column else "")
            totals = sums.setdefault(key, Totals())
            totals.add(Totals(int(doc["calls"]), int(doc["input_tokens"]),
                              int(doc["output_tokens"]), _dollars(doc["cost_pico"])))  # fmt: skip
        rows = [DailyRow(b, k, t) for (b, k), t in sums.items()]
        rows.sort(key=lambda r: (r.day, -r.totals.cost_usd, r.key))
        return rows

    async def series(
        self, where: UsageFilter, column: str | None, interval: str, limit: int, metric: str
    ) -> Ranked:
        # No rollup on MongoDB: the matching daily documents are summed and ranked in Python
        # (the same answer as PostgreSQL's rollup; the MongoDB profile is for small hubs).
        rows = await self.grouped(where, column, interval)
        return fold(rows, limit if column else None, metric)

    def _calls_filter(self, where: UsageFilter) -> dict[str, Any]:
        """`at` within the days' UTC bounds (the index on `at` serves it) and the filters."""
        spec = _match(where)
        del spec["day"]
        first = datetime.combine(where.start, time(), UTC)
        spec["at"] = {
            "$gte": first,
            "$lt": first + timedelta(days=(where.end - where.start).days + 1),
        }
        return spec

    async def calls(
        self, where: UsageFilter, limit: int, after: tuple[datetime, str] | None
    ) -> list[UsageCall]:
        spec = self._calls_filter(where)
        if after is not None:
            at, last = after
            spec["$or"] = [{"at": {"$lt": at}}, {"at": at, "_id": {"$lt": last}}]
        cursor = self.calls_c.find(spec, sort=[("at", -1), ("_id", -1)]).limit(limit)
        return [_call(d) for d in await cursor.to_list(None)]

    async def prune_calls(self, before: datetime, limit: int, *, dry_run: bool = False) -> int:
        # A call whose day aggregate is not applied yet (a crash between the two writes) stays:
        # deleting it would lose it from the totals.
        old = {"at": {"$lt": before}, "daily_applied": True}
        if dry_run:
            return int(await self.calls_c.count_documents(old))
        oldest = self.calls_c.find(old, {"_id": 1}, sort=[("at", 1)], limit=limit)
        ids = [d["_id"] for d in await oldest.to_list(None)]
        if not ids:
            return 0
        return int((await self.calls_c.delete_many({"_id": {"$in": ids}})).deleted_count)

    async def stream_calls(self, where: UsageFilter) -> AsyncIterator[UsageCall]:
        async for doc in self.calls_c.find(
            self._calls_filter(where), sort=[("at", -1), ("_id", -1)]
        ):
            yield _call(doc)

    async def stream_daily(self, where: UsageFilter) -> AsyncIterator[tuple[date, dict[str, Any]]]:
        order = [("day", 1), *((d, 1) for d in _DIMS)]
        async for doc in self.daily_c.find(_match(where), sort=order):
            row = {d: doc.get(d, "") for d in _DIMS}
            row |= {"calls": int(doc["calls"]), "input_tokens": int(doc["input_tokens"]),
                    "output_tokens": int(doc["output_tokens"]),
                    "cost_usd": _dollars(doc["cost_pico"])}  # fmt: skip
            yield date.fromisoformat(doc["day"]), row

    async def used(
        self, column: str, target_id: str, start: date, end: date, metric: str
    ) -> Decimal:
        spec = {column: target_id, "day": {"$gte": start.isoformat(), "$lte": end.isoformat()}}
        total = 0
        async for doc in self.daily_c.find(spec):
            total += (
                int(doc["cost_pico"]) if metric == "cost_usd"
                else int(doc["input_tokens"]) + int(doc["output_tokens"])
            )  # fmt: skip
        return _dollars(total) if metric == "cost_usd" else Decimal(total)

    # --- budgets ----------------------------------------------------------------------------
    async def applicable_budgets(self, targets: Mapping[str, str]) -> list[Budget]:
        if not targets:
            return []
        spec = {"enabled": True,
                "$or": [{"scope": s, "target_id": i} for s, i in targets.items()]}  # fmt: skip
        return [_budget(d) async for d in self.budgets_c.find(spec, sort=[("_id", 1)])]

    async def list_budgets(
        self, scope: str | None, target_id: str | None, visible: Mapping[str, list[str]] | None
    ) -> list[Budget]:
        spec: dict[str, Any] = {}
        if scope is not None:
            spec["scope"] = scope
        if target_id is not None:
            spec["target_id"] = target_id
        if visible is not None:
            spec["$or"] = [{"scope": s, "target_id": {"$in": ids}} for s, ids in visible.items()
                           if ids] or [{"_id": None}]  # fmt: skip
        found = self.budgets_c.find(spec, sort=[("created_at", 1), ("_id", 1)])
        return [_budget(d) async for d in found]

    async def get_budget(self, budget_id: str) -> Budget | None:
        doc = await self.budgets_c.find_one({"_id": budget_id})
        return _budget(doc) if doc is not None else None

    async def create_budget(self, budget: Budget) -> Budget:
        now = utcnow()
        doc = {
            "_id": uuid.uuid4().hex, "name": budget.name, "scope": budget.scope,
            "target_id": budget.target_id, "metric": budget.metric, "period": budget.period,
            "limit": str(budget.limit), "warn_ratio": budget.warn_ratio,
            "enabled": budget.enabled, "warned_period": None, "created_by": budget.created_by,
            "created_at": now, "updated_at": now,
        }  # fmt: skip
        await self.budgets_c.insert_one(doc)
        return _budget(doc)

    async def update_budget(self, budget_id: str, changes: Mapping[str, Any]) -> Budget | None:
        values = {k: (str(v) if k == "limit" else v) for k, v in changes.items()}
        values["updated_at"] = utcnow()
        await self.budgets_c.update_one({"_id": budget_id}, {"$set": values})
        return await self.get_budget(budget_id)

    async def delete_budget(self, budget_id: str) -> bool:
        result = await self.budgets_c.delete_one({"_id": budget_id})
        return bool(result.deleted_count)

    async def mark_warned(self, budget_id: str, period: str) -> bool:
        found = await self.budgets_c.find_one_and_update(
            {"_id": budget_id, "warned_period": {"$ne": period}},
            {"$set": {"warned_period": period}},
        )
        return found is not None
