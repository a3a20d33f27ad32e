"""Schedule routes beside the generic CRUD ones.

- `POST /api/scheduled-agents/preview`: a schedule's next fire times before it is saved (the
  dashboard's "Next runs" list). The times come from the scheduler's own rules
  (`validate_schedule`, `occurrence_after`), so what the preview shows is what the scheduler
  would fire for the same definition created now.
- `PATCH /api/scheduled-agents/{id}/enable` and `/disable` (the existing API's routes): switch
  the schedule on or off and answer the record. The record stays either way; a disabled
  schedule fires nothing until it is enabled again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from croniter import CroniterError
from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tbd_agents.api.crud import ERRORS, record_response
from tbd_agents.api.deps import Caller, Ctx
from tbd_agents.api.preconditions import IfMatch, expected_versions
from tbd_agents.api.schemas import output_schema, record_json
from tbd_agents.domain.models import ScheduledAgent
from tbd_agents.errors import InvalidData
from tbd_agents.runtime.scheduler import occurrence_after, unschedulable, validate_schedule
from tbd_agents.services.records import Records

router = APIRouter(tags=["scheduled agents"], responses=ERRORS)

_TINY = timedelta(microseconds=1)


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    interval_value: Any = Field(default=1, description="Repeat every N units (ignored with cron).")
    interval_unit: Any = Field(default="hours", description="minutes, hours, days or weeks.")
    cron_expression: str | None = Field(default=None, max_length=200)
    timezone: str = Field(default="UTC", max_length=100, description="IANA name, for cron.")
    start_at: Any = None
    end_at: Any = None
    count: int = Field(default=5, ge=1, le=20, description="How many occurrences to list.")


class PreviewOut(BaseModel):
    occurrences: list[datetime] = Field(
        description="The next fire times from now, in UTC; fewer than `count` if end_at comes first."
    )


def _schedule(body: PreviewIn) -> ScheduledAgent:
    values = body.model_dump(exclude={"count"})
    if isinstance(values["cron_expression"], str) and not values["cron_expression"].strip():
        values["cron_expression"] = None
    try:
        return ScheduledAgent.model_validate({"workflow_id": "preview", **values})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidData(f"{where}: {err['msg']}", details={"field": where}) from None


def _check(schedule: ScheduledAgent) -> None:
    """validate_schedule, with the failing field named: cron first, then zone, then the window."""
    steps: list[tuple[str, dict[str, Any]]] = [
        ("cron_expression", {"timezone": "UTC", "start_at": None, "end_at": None}),
        ("timezone", {"start_at": None, "end_at": None}),
        ("end_at", {}),
    ]
    for name, update in steps:
        try:
            validate_schedule(schedule.model_copy(update=update))
        except InvalidData as exc:
            field = exc.details.get("field", name)  # unschedulable() names it already
            raise InvalidData(exc.message, details={"field": field}) from None


def next_occurrences(schedule: ScheduledAgent, now: datetime, count: int) -> list[datetime]:
    """Up to `count` occurrences at or after `now` (UTC), in order; fewer if the schedule ends.

    Raises InvalidData naming the field when the schedule cannot be computed."""
    _check(schedule)
    out: list[datetime] = []
    try:
        current = occurrence_after(schedule, now - _TINY)
        while current is not None and len(out) < count:
            out.append(current)
            current = occurrence_after(schedule, current)
    except (CroniterError, OverflowError) as exc:
        raise unschedulable(schedule, exc) from None
    return out


@router.post(
    "/api/scheduled-agents/preview",
    response_model=PreviewOut,
    summary="List the next fire times of an unsaved schedule",
)
async def preview_schedule(body: PreviewIn, caller: Caller) -> PreviewOut:
    """Compute the next `count` (1-20, default 5) occurrences from now of the schedule in the
    body (workflow_id not needed); nothing is saved. A schedule that cannot be computed is a 422
    whose `details.field` names the field to fix."""
    schedule = _schedule(body)
    return PreviewOut(occurrences=next_occurrences(schedule, datetime.now(UTC), body.count))


ScheduleId = Annotated[str, Path(description="Scheduled agent id.")]


async def _set_enabled(
    ctx: Ctx, caller: Caller, schedule_id: str, enabled: bool, if_match: str | None
) -> Response:
    expected = expected_versions(if_match)
    async with ctx.store.unit_of_work() as repos:
        record = await Records(repos, caller, ScheduledAgent).update(
            schedule_id, {"enabled": enabled}, expected_versions=expected
        )
    return record_response(record_json(record), record)


@router.patch(
    "/api/scheduled-agents/{schedule_id}/enable",
    response_model=output_schema(ScheduledAgent),
    summary="Switch a schedule on",
)
async def enable_schedule(
    schedule_id: ScheduleId, ctx: Ctx, caller: Caller, if_match: IfMatch = None
) -> Response:
    return await _set_enabled(ctx, caller, schedule_id, True, if_match)


@router.patch(
    "/api/scheduled-agents/{schedule_id}/disable",
    response_model=output_schema(ScheduledAgent),
    summary="Switch a schedule off (the record stays)",
)
async def disable_schedule(
    schedule_id: ScheduleId, ctx: Ctx, caller: Caller, if_match: IfMatch = None
) -> Response:
    return await _set_enabled(ctx, caller, schedule_id, False, if_match)
