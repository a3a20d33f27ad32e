"""Budgets over HTTP (docs/observability.md, "Usage, cost and budgets"): admins create, change
and delete them; everyone reads the budgets that apply to them (a user: budgets on themselves
and on their agents, workflows and schedules). Each answer carries the budget's status in its
current period, from usage_daily."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal, InvalidOperation
from typing import Any

from tbd_agents.domain.models import Agent, ScheduledAgent, Workflow
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import InvalidData, NotFound
from tbd_agents.observability.usage.budgets import SCOPE_COLUMN, BudgetStatus, period_bounds
from tbd_agents.observability.usage.records import Budget
from tbd_agents.observability.usage.store import BUDGET_FIELDS, UsageStore
from tbd_agents.services.access import Principal
from tbd_agents.storage.protocol import DocumentStore, Query, eq

SCOPES = tuple(SCOPE_COLUMN)
METRICS = ("cost_usd", "tokens")
PERIODS = ("day", "month")
_TARGET_MODELS: dict[str, type[Any]] = {
    "agent": Agent,
    "workflow": Workflow,
    "schedule": ScheduledAgent,
}


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidData(
            f"{name} must be one of {', '.join(allowed)}, got {str(value)[:40]!r}",
            details={"field": name},
        )
    return str(value)


def validated(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (budget fields from a request body) checked; InvalidData names the field."""
    unknown = set(values) - set(BUDGET_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidData(f"unknown budget field {field!r}", details={"field": field})
    out = dict(values)
    for name, allowed in (("scope", SCOPES), ("metric", METRICS), ("period", PERIODS)):
        if name in out:
            out[name] = _choice(name, out[name], allowed)
    if "name" in out and (not isinstance(out["name"], str) or not out["name"].strip()):
        raise InvalidData("name must be a non-empty string", details={"field": "name"})
    if "target_id" in out and (not isinstance(out["target_id"], str) or not out["target_id"]):
        raise InvalidData("target_id must be a non-empty string", details={"field": "target_id"})
    if "limit" in out:
        try:
            limit = Decimal(str(out["limit"]))
        except InvalidOperation:
            limit = Decimal(0)
        if isinstance(out["limit"], bool) or not limit.is_finite() or limit <= 0:
            raise InvalidData("limit must be a number > 0", details={"field": "limit"})
        out["limit"] = limit
    if "warn_ratio" in out:
        ratio = out["warn_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio < 1:
            raise InvalidData("warn_ratio must be a number with 0 < r < 1",
                              details={"field": "warn_ratio"})  # fmt: skip
        out["warn_ratio"] = float(ratio)
    if "enabled" in out and not isinstance(out["enabled"], bool):
        raise InvalidData("enabled must be true or false", details={"field": "enabled"})
    return out


async def check_target(docs: DocumentStore, scope: str, target_id: str) -> None:
    """NotFound unless `target_id` names an existing record of `scope` (users are not stored
    records: any identity is accepted)."""
    model = _TARGET_MODELS.get(scope)
    if model is None:
        return
    async with docs.unit_of_work(readonly=True) as repos:
        await repos.for_model(model).get(target_id)


async def visible_targets(docs: DocumentStore, principal: Principal) -> dict[str, list[str]]:
    """scope → the ids whose budgets `principal` (a non-admin) may read: itself and its own
    agents, workflows and schedules."""
    out: dict[str, list[str]] = {"user": [principal.identity]}
    async with docs.unit_of_work(readonly=True) as repos:
        for scope, model in _TARGET_MODELS.items():
            field = model.owner_field or "created_by"
            out[scope] = [
                r.id
                async for r in repos.for_model(model).iterate(
                    Query(filters=(eq(field, principal.identity),))
                )
            ]
    return out


async def with_status(usage: UsageStore, budget: Budget) -> dict[str, Any]:
    """The budget as the API answers it, with its status in the current period."""
    start, end = period_bounds(budget.period, utcnow().astimezone(UTC).date())
    used = await usage.used(SCOPE_COLUMN[budget.scope], budget.target_id, start, end, budget.metric)
    limit: float | int = int(budget.limit) if budget.metric == "tokens" else float(budget.limit)
    return {
        "id": budget.id, "name": budget.name, "scope": budget.scope,
        "target_id": budget.target_id, "metric": budget.metric, "period": budget.period,
        "limit": limit, "warn_ratio": budget.warn_ratio, "enabled": budget.enabled,
        "created_at": budget.created_at, "updated_at": budget.updated_at,
        "status": BudgetStatus.of(budget, used, start, end).to_dict(budget),
    }  # fmt: skip


async def readable(
    docs: DocumentStore, usage: UsageStore, principal: Principal, budget_id: str
) -> Budget:
    """The budget, NotFound if absent or not one `principal` may read."""
    found = await usage.get_budget(budget_id)
    if found is None:
        raise NotFound("budgets", budget_id)
    if not principal.is_admin:
        visible = await visible_targets(docs, principal)
        if found.target_id not in visible.get(found.scope, []):
            raise NotFound("budgets", budget_id)
    return found


async def create(
    docs: DocumentStore, usage: UsageStore, principal: Principal, body: dict[str, Any]
) -> Budget:
    values = validated(body)
    missing = [f for f in ("name", "scope", "target_id", "metric", "period", "limit")
               if f not in values]  # fmt: skip
    if missing:
        raise InvalidData(f"{missing[0]} is required", details={"field": missing[0]})
    await check_target(docs, values["scope"], values["target_id"])
    return await usage.create_budget(
        Budget(
            name=values["name"].strip(), scope=values["scope"], target_id=values["target_id"],
            metric=values["metric"], period=values["period"], limit=values["limit"],
            warn_ratio=values.get("warn_ratio", 0.8), enabled=values.get("enabled", True),
            created_by=principal.identity,
        )
    )  # fmt: skip


async def change(
    docs: DocumentStore, usage: UsageStore, budget_id: str, body: dict[str, Any]
) -> Budget:
    current = await usage.get_budget(budget_id)
    if current is None:
        raise NotFound("budgets", budget_id)
    values = validated({k: v for k, v in body.items() if k not in _READ_ONLY})
    if "scope" in values or "target_id" in values:
        await check_target(
            docs, values.get("scope", current.scope), values.get("target_id", current.target_id)
        )
    changed = await usage.update_budget(budget_id, values)
    if changed is None:
        raise NotFound("budgets", budget_id)
    return changed


#: Fields of an answer a full PUT body may send back unchanged (ignored).
_READ_ONLY = frozenset({"id", "created_at", "updated_at", "status"})
