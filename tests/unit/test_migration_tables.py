"""Conversion of our own non-entity collections (`tools/migration/tables.py`), without a
database: each field to its column and type, derived and dropped fields, refusals that name the
column and value."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from bson import Decimal128, Int64, ObjectId

from tbd_agents.tools.migration.report import ReportLog
from tbd_agents.tools.migration.results import SilentReporter
from tbd_agents.tools.migration.sources import DumpSource
from tbd_agents.tools.migration.tables import TABLE_SPECS, convert_row
from tbd_agents.tools.migration.tablestep import TableStep
from tbd_agents.tools.migration.tableverify import compare_row

AT = datetime(2026, 3, 4, 5, 6, 7, 8000, tzinfo=UTC)


def test_a_call_keeps_its_id_and_its_cost_in_dollars() -> None:
    document = {
        "_id": "c1", "call_key": "k:1", "at": AT.replace(tzinfo=None), "user_id": "u",
        "model": "m", "purpose": "turn", "input_tokens": Int64(3), "output_tokens": 4.0,
        "cost_pico": Int64(1_234_567), "day": "2026-03-04", "daily_applied": True,
    }  # fmt: skip
    converted = convert_row(TABLE_SPECS["usage_calls"], document)
    assert converted.problem is None and converted.dropped == () and converted.warning is None
    row = converted.row
    assert row is not None
    assert (row["id"], row["at"], row["agent_id"]) == ("c1", AT, None)
    assert (row["input_tokens"], row["output_tokens"]) == (3, 4)
    assert row["cost_usd"] == Decimal("0.000001234567")


def test_a_budget_limit_and_a_daily_total() -> None:
    budget = convert_row(
        TABLE_SPECS["budgets"],
        {"_id": "b", "name": "n", "scope": "user", "target_id": "u", "metric": "cost_usd",
         "period": "day", "limit": "12.5", "warn_ratio": 0.8, "enabled": True,
         "created_at": AT, "updated_at": AT},
    )  # fmt: skip
    assert budget.row is not None and budget.row["limit_value"] == Decimal("12.5")
    daily = convert_row(
        TABLE_SPECS["usage_daily"],
        {"_id": ObjectId(), "day": "2026-03-04", "model": "m", "calls": 1,
         "input_tokens": 2, "output_tokens": 3, "cost_pico": Decimal128("5")},
    )  # fmt: skip
    assert daily.row is not None
    assert daily.row["day"] == date(2026, 3, 4) and daily.row["user_id"] == ""
    assert daily.row["cost_usd"] == Decimal("5e-12")


def test_refusals_name_the_column_and_value_and_unknown_fields_are_dropped() -> None:
    converted = convert_row(
        TABLE_SPECS["run_events"],
        {"_id": ObjectId(), "task_id": "t", "seq": "one", "type": "log", "data": {"a": 1},
         "created_at": AT, "mood": "happy"},
    )  # fmt: skip
    assert converted.row is None
    assert converted.problem == "invalid: seq: not an integer (got 'one')"
    assert converted.dropped == ("mood",)
    missing = convert_row(TABLE_SPECS["run_halts"], {"_id": "t", "requested_at": "yesterday"})
    assert missing.problem == "invalid: requested_at: not a date and time (got 'yesterday')"
    assert convert_row(TABLE_SPECS["run_halts"], {"requested_by": "x"}).problem == (
        "document has no _id"
    )
    nul = convert_row(TABLE_SPECS["webhook_secrets"], {"_id": "w", "encrypted_secret": "a\x00b"})
    assert nul.problem is not None and nul.problem.startswith("invalid: encrypted_secret: ")


def test_comparison_is_by_value_and_names_the_column() -> None:
    spec = TABLE_SPECS["webhook_attempts"]
    converted = convert_row(
        spec,
        {"_id": ObjectId(), "delivery_id": "d", "attempt": 1, "status_code": None,
         "error": "boom", "duration_ms": 2, "created_at": AT},
    )  # fmt: skip
    row = converted.row
    assert row is not None
    same = {**row, "duration_ms": 2.0, "created_at": AT.astimezone(timezone(timedelta(hours=5)))}
    assert compare_row(spec, row, same) == []
    differences = compare_row(spec, row, {**row, "error": "other"})
    assert [(d.field, d.source, d.target) for d in differences] == [("error", "'boom'", "'other'")]


async def test_a_key_held_twice_in_a_batch_quarantines_the_second(tmp_path: Path) -> None:
    """Our MongoDB backend keeps the key unique; a dump that breaks it does not stop the run."""
    spec = TABLE_SPECS["usage_daily"]
    day = {"day": "2026-03-04", "model": "m", "calls": 1, "input_tokens": 2,
           "output_tokens": 3, "cost_pico": 5}  # fmt: skip
    first, second = ObjectId(), ObjectId()
    log = ReportLog(tmp_path / "q.jsonl")
    (tmp_path / "db").mkdir()
    step = TableStep(
        DumpSource(tmp_path, "db"), None, batch_size=10, dry_run=True, log=log,
        reporter=SilentReporter(), start=None, dry_parents={},  # type: ignore[arg-type]
    )  # fmt: skip
    batch = await step._prepare(spec, [{"_id": first, **day}, {"_id": second, **day}])
    log.close()
    assert batch.ids == [str(first)]
    assert [(r.id, r.reason) for r in batch.rejected] == [
        (str(second), f"duplicate key, same day, user_id, agent_id, workflow_id, schedule_id, "
                      f"provider_id, model as {first}")
    ]  # fmt: skip
