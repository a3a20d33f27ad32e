"""The usage and budgets API (/api/usage/*, /api/budgets): see services/usage.py and
services/budgets.py; the contract is in docs/observability.md ("Usage, cost and budgets")."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import Caller, Ctx
from tbd_agents.errors import InvalidData, NotFound
from tbd_agents.observability.usage.store import UsageStore, usage_store_for
from tbd_agents.observability.usage.topn import DEFAULT_LIMIT, MAX_LIMIT
from tbd_agents.services import budgets as budget_service
from tbd_agents.services import usage as usage_service

router = APIRouter(tags=["usage"], responses=ERRORS)
Text = Annotated[str | None, Query()]


async def _usage_store(ctx: Ctx) -> UsageStore:
    return usage_store_for(ctx.store)


Usage = Annotated[UsageStore, Depends(_usage_store)]


class Filters:
    """The common usage filters (comma-separated values) and the date range."""

    def __init__(
        self,
        start: Annotated[str | None, Query(description="First day, YYYY-MM-DD (UTC).")] = None,
        end: Annotated[str | None, Query(description="Last day, YYYY-MM-DD (inclusive).")] = None,
        user_id: Text = None,
        agent_id: Text = None,
        workflow_id: Text = None,
        schedule_id: Text = None,
        provider_id: Text = None,
        model: Text = None,
    ) -> None:
        self.start, self.end = start, end
        self.values = {"user_id": user_id, "agent_id": agent_id, "workflow_id": workflow_id,
                       "schedule_id": schedule_id, "provider_id": provider_id, "model": model}  # fmt: skip


Filter = Annotated[Filters, Depends()]
GroupBy = Annotated[
    str | None, Query(description="user, agent, workflow, schedule, provider or model.")
]


@router.get("/api/usage/summary", summary="Usage totals, optionally grouped")
async def usage_summary(
    ctx: Ctx, caller: Caller, usage: Usage, f: Filter, group_by: GroupBy = None
) -> dict[str, Any]:
    where = usage_service.usage_filter(caller, f.start, f.end, f.values)
    return await usage_service.summary(ctx.store, usage, where, group_by)


@router.get(
    "/api/usage/timeseries",
    summary="Usage per day, week or month",
    response_class=JSONResponse,
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def usage_timeseries(
    ctx: Ctx, caller: Caller, usage: Usage, f: Filter, group_by: GroupBy = None,
    interval: Annotated[str, Query(description="day, week or month.")] = "day",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=(
        "With group_by: the number of groups with a series of their own (the largest by "
        "`metric` over the range); the others are summed into one series \"_other\"."
    ))] = DEFAULT_LIMIT,
    metric: Annotated[str, Query(description=(
        "What ranks the groups: cost_usd, total_tokens, calls, input_tokens or output_tokens."
    ))] = "cost_usd",
) -> Response:  # fmt: skip
    usage_service.check_interval(interval)
    usage_service.check_metric(metric)
    where = usage_service.usage_filter(caller, f.start, f.end, f.values)
    answer = await usage_service.timeseries(
        ctx.store, usage, where, interval, group_by, limit, metric
    )
    # Already JSON values (str, int, float): encoded directly, without FastAPI's walk over
    # thousands of points.
    return Response(orjson.dumps(answer), media_type="application/json")


@router.get("/api/usage/calls", summary="Recorded model calls, newest first")
async def usage_calls(
    caller: Caller, usage: Usage, f: Filter,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:  # fmt: skip
    where = usage_service.usage_filter(caller, f.start, f.end, f.values)
    return await usage_service.calls_page(usage, where, limit, cursor)


@router.get(
    "/api/usage/export.csv",
    summary="Usage as CSV (calls or daily rows)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def usage_export(
    ctx: Ctx, caller: Caller, usage: Usage, f: Filter, group_by: GroupBy = None,
    level: Annotated[str, Query(description="calls or daily.")] = "daily",
) -> StreamingResponse:  # fmt: skip
    if level not in ("calls", "daily"):
        raise InvalidData(f"level must be calls or daily, got {level[:40]!r}",
                          details={"field": "level"})  # fmt: skip
    usage_service.group_column(group_by)
    where = usage_service.usage_filter(caller, f.start, f.end, f.values)
    name = f"usage-{where.start.isoformat()}-{where.end.isoformat()}.csv"
    return StreamingResponse(
        usage_service.csv_lines(ctx.store, usage, where, level, group_by),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- budgets ----------------------------------------------------------------------------------
@router.get("/api/budgets", summary="Budgets (admins: all; users: those that apply to them)")
async def list_budgets(
    ctx: Ctx, caller: Caller, usage: Usage,
    scope: Text = None, target_id: Text = None,
) -> list[dict[str, Any]]:  # fmt: skip
    if scope is not None and scope not in budget_service.SCOPES:
        raise InvalidData(f"scope must be one of {', '.join(budget_service.SCOPES)}",
                          details={"field": "scope"})  # fmt: skip
    visible = None if caller.is_admin else await budget_service.visible_targets(ctx.store, caller)
    found = await usage.list_budgets(scope, target_id, visible)
    return [await budget_service.with_status(usage, b) for b in found]


@router.post("/api/budgets", status_code=201, summary="Create a budget (admins)")
async def create_budget(
    ctx: Ctx, caller: Caller, usage: Usage, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    caller.require_admin()
    made = await budget_service.create(ctx.store, usage, caller, body)
    return await budget_service.with_status(usage, made)


@router.get("/api/budgets/{budget_id}", summary="One budget with its status")
async def get_budget(ctx: Ctx, caller: Caller, usage: Usage, budget_id: str) -> dict[str, Any]:
    found = await budget_service.readable(ctx.store, usage, caller, budget_id)
    return await budget_service.with_status(usage, found)


@router.put("/api/budgets/{budget_id}", summary="Change a budget (admins; full or partial)")
async def put_budget(
    ctx: Ctx, caller: Caller, usage: Usage, budget_id: str,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:  # fmt: skip
    caller.require_admin()
    changed = await budget_service.change(ctx.store, usage, budget_id, body)
    return await budget_service.with_status(usage, changed)


@router.delete("/api/budgets/{budget_id}", status_code=204, summary="Delete a budget (admins)")
async def delete_budget(caller: Caller, usage: Usage, budget_id: str) -> Response:
    caller.require_admin()
    if not await usage.delete_budget(budget_id):
        raise NotFound("budgets", budget_id)
    return Response(status_code=204)
