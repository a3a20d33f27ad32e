"""Schedules: occurrence arithmetic (interval, cron, time zones, bounds), the policies (on
PostgreSQL and on MongoDB), two schedulers racing in one process over a simulated hour on both,
and three scheduler processes on PostgreSQL firing every occurrence exactly once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.domain.enums import IntervalUnit, MissedRunPolicy, OverlapPolicy, TaskStatus
from tbd_agents.domain.models import ScheduledAgent
from tbd_agents.errors import InvalidData
from tbd_agents.runtime import leases
from tbd_agents.runtime.scheduler import (
    Outcome,
    Scheduler,
    occurrence_after,
    occurrences_between,
    schedule_history,
    validate_schedule,
)
from tbd_agents.runtime.service import Runtime
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.postgres.schema_runtime import schedule_occurrences
from tbd_agents.storage.protocol import eq
from tests.runtime.conftest import ROOT, RtBackend, make_workflow, runtime_settings, settings_env

T0 = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # Europe/Paris moves to summer time at 01:00 UTC
MIN = timedelta(minutes=1)


def schedule(**fields: Any) -> ScheduledAgent:
    fields.setdefault("workflow_id", "w")
    fields.setdefault("created_at", T0 - timedelta(days=1))
    return ScheduledAgent(**fields)


async def insert_schedule(target: AsyncEngine | RtBackend, workflow_id: str, **fields: Any) -> str:
    model = schedule(workflow_id=workflow_id, **fields)
    store = (
        target.store if isinstance(target, RtBackend) else PostgresStore(target, owns_engine=False)
    )
    async with store.unit_of_work() as repos:
        await repos.scheduled_agents.create(model)
    return model.id


# --- arithmetic ------------------------------------------------------------------------------
def test_interval_counts_from_start_at_and_stops_at_end_at() -> None:
    s = schedule(
        interval_value=5,
        interval_unit=IntervalUnit.MINUTES,
        start_at=T0 + 7 * MIN,
        end_at=T0 + 50 * MIN,
    )
    got = occurrences_between(s, T0, T0 + 2 * timedelta(hours=1))
    assert got == [T0 + m * MIN for m in (7, 12, 17, 22, 27, 32, 37, 42, 47)]
    assert occurrence_after(s, T0 + 47 * MIN) is None
    assert occurrence_after(s, T0 - timedelta(days=3)) == T0 + 7 * MIN


def test_interval_without_start_at_counts_from_creation() -> None:
    s = schedule(interval_value=2, interval_unit=IntervalUnit.HOURS)
    assert occurrence_after(s, T0) == T0 + timedelta(hours=2)  # created at T0 - 24 h
    d = schedule(interval_value=3, interval_unit=IntervalUnit.DAYS, start_at=T0)
    assert occurrence_after(d, T0) == T0 + timedelta(days=3)


def test_cron_is_read_in_the_schedules_time_zone_across_a_dst_change() -> None:
    paris = schedule(cron_expression="0 9 * * *", timezone="Europe/Paris")
    first = occurrence_after(paris, T0 - timedelta(days=1))  # 28 March: winter time, UTC+1
    second = occurrence_after(paris, T0)  # 29 March: summer time, UTC+2
    assert first == datetime(2026, 3, 28, 8, 0, tzinfo=UTC)
    assert second == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    utc = schedule(cron_expression="0 9 * * *")
    assert occurrence_after(utc, T0) == datetime(2026, 3, 29, 9, 0, tzinfo=UTC)


def test_cron_honours_start_at_inclusively() -> None:
    s = schedule(cron_expression="*/15 * * * *", start_at=T0 + 30 * MIN)
    assert occurrence_after(s, T0) == T0 + 30 * MIN


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron_expression": "every monday"}, "is not valid"),
        ({"timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is unknown"),
        ({"start_at": T0, "end_at": T0}, "end_at must be after start_at"),
    ],
)
def test_invalid_schedules_are_refused_with_the_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidData, match=message):
        validate_schedule(schedule(**fields))


# --- policies (one scheduler, controlled time) --------------------------------------------------
async def _noop_dispatch(task_id: str) -> None:
    return None


def _scheduler(rt: RtBackend, grace: float = 90.0, name: str = "test") -> Scheduler:
    return Scheduler(rt.runs, _noop_dispatch, scheduler_id=name, misfire_grace_seconds=grace)


async def _runs_of(target: AsyncEngine | RtBackend, schedule_id: str) -> int:
    store = (
        target.store if isinstance(target, RtBackend) else PostgresStore(target, owns_engine=False)
    )
    async with store.unit_of_work() as repos:
        count: int = await repos.task_executions.count(eq("scheduled_agent_id", schedule_id))
    return count


@pytest.mark.parametrize(
    ("policy", "outcome", "runs", "missed"),
    [
        (MissedRunPolicy.RUN_ONCE, Outcome.FIRED, 1, 11),
        (MissedRunPolicy.SKIP, Outcome.SKIPPED_MISSED, 0, 12),
    ],
)
async def test_missed_run_policy_after_downtime(
    rt: RtBackend, policy: MissedRunPolicy, outcome: Outcome, runs: int, missed: int
) -> None:
    workflow = await make_workflow(rt)
    sid = await insert_schedule(
        rt,
        workflow,
        interval_value=1,
        interval_unit=IntervalUnit.MINUTES,
        start_at=T0,
        next_run_at=T0,
        missed_run_policy=policy,
        overlap_policy=OverlapPolicy.ALLOW,
    )
    # Back after downtime at 00:11:40: occurrences 00:00 … 00:11 (12) all older than the grace.
    scheduler = _scheduler(rt, grace=30)
    report = await scheduler.tick(T0 + 11 * MIN + timedelta(seconds=40))
    assert [(c.outcome, c.missed, c.occurrence_at) for c in report.claimed] == [
        (outcome, missed, T0 + 11 * MIN)
    ]
    assert await _runs_of(rt, sid) == runs
    history = await schedule_history(rt.runs, sid)
    assert [(h.outcome, h.missed) for h in history] == [(outcome.value, missed)]
    again = await scheduler.tick(T0 + 11 * MIN + timedelta(seconds=50))
    assert again.claimed == []  # the next occurrence is 00:12


async def test_an_ended_schedule_does_not_catch_up_but_its_last_occurrence_fires_on_time(
    rt: RtBackend,
) -> None:
    workflow = await make_workflow(rt)
    common: dict[str, Any] = {
        "interval_value": 1,
        "interval_unit": IntervalUnit.MINUTES,
        "start_at": T0,
        "end_at": T0 + 10 * MIN,
        "missed_run_policy": MissedRunPolicy.RUN_ONCE,
    }
    # Schedulers down until 00:30: the occurrences until 00:10 (end_at) were missed, and the
    # schedules have ended meanwhile. Nothing is left to catch up: recorded, not run.
    missed = await insert_schedule(rt, workflow, next_run_at=T0 + 5 * MIN, **common)
    last_missed = await insert_schedule(rt, workflow, next_run_at=T0 + 10 * MIN, **common)
    scheduler = _scheduler(rt, grace=30)
    mine = {missed, last_missed}  # (the module's database holds other tests' schedules too)
    late = await scheduler.tick(T0 + 30 * MIN)
    assert {c.schedule_id: c.outcome for c in late.claimed if c.schedule_id in mine} == {
        missed: Outcome.SKIPPED_MISSED,
        last_missed: Outcome.SKIPPED_MISSED,
    }
    assert await _runs_of(rt, missed) == await _runs_of(rt, last_missed) == 0
    # The last occurrence (00:10, its end_at) seen 20 s late, within the grace: it runs.
    on_time = await insert_schedule(rt, workflow, next_run_at=T0 + 10 * MIN, **common)
    mine.add(on_time)
    report = await scheduler.tick(T0 + 10 * MIN + timedelta(seconds=20))
    assert [(c.schedule_id, c.outcome) for c in report.claimed if c.schedule_id in mine] == [
        (on_time, Outcome.FIRED)
    ]
    assert await _runs_of(rt, on_time) == 1
    # Ended, nothing due any more: later ticks do not look at them again.
    again = await scheduler.tick(T0 + 2 * timedelta(hours=1))
    assert [c for c in again.claimed if c.schedule_id in mine] == []


async def test_disabled_schedules_and_future_start_at_do_not_fire(rt: RtBackend) -> None:
    workflow = await make_workflow(rt)
    off = await insert_schedule(
        rt,
        workflow,
        interval_value=1,
        interval_unit=IntervalUnit.MINUTES,
        next_run_at=T0,
        enabled=False,
    )
    later = await insert_schedule(
        rt,
        workflow,
        interval_value=1,
        interval_unit=IntervalUnit.MINUTES,
        start_at=T0 + timedelta(hours=2),
    )
    scheduler = _scheduler(rt)
    for minute in range(5):
        await scheduler.tick(T0 + minute * MIN)
    assert await _runs_of(rt, off) == 0
    assert await _runs_of(rt, later) == 0
    await scheduler.tick(T0 + timedelta(hours=2))
    assert await _runs_of(rt, later) == 1


# --- three scheduler processes over a simulated hour -------------------------------------------
EXPECTED = {
    "interval": [T0 + m * MIN for m in (7, 12, 17, 22, 27, 32, 37, 42, 47)],
    "cron-paris": [T0 + m * MIN for m in range(0, 61, 10)],
    "cron-new-york": [T0 + 45 * MIN],  # 20:45 in New York on 28 March
    "overlap": [T0 + m * MIN for m in range(0, 61, 10)],
}


async def _create_hour_schedules(db: AsyncEngine | RtBackend) -> dict[str, str]:
    workflow = await make_workflow(db)
    common = {"overlap_policy": OverlapPolicy.ALLOW, "prompt": "emit:1"}
    ids = {
        "interval": await insert_schedule(
            db,
            workflow,
            interval_value=5,
            interval_unit=IntervalUnit.MINUTES,
            start_at=T0 + 7 * MIN,
            end_at=T0 + 50 * MIN,
            **common,
        ),
        "cron-paris": await insert_schedule(
            db, workflow, cron_expression="*/10 * * * *", timezone="Europe/Paris", **common
        ),
        "cron-new-york": await insert_schedule(
            db, workflow, cron_expression="45 20 * * *", timezone="America/New_York", **common
        ),
        "overlap": await insert_schedule(
            db,
            workflow,
            interval_value=10,
            interval_unit=IntervalUnit.MINUTES,
            start_at=T0,
            overlap_policy=OverlapPolicy.SKIP,
            prompt="block",
        ),
        "disabled": await insert_schedule(
            db,
            workflow,
            interval_value=1,
            interval_unit=IntervalUnit.MINUTES,
            enabled=False,
            **common,
        ),
        "ended": await insert_schedule(
            db,
            workflow,
            interval_value=1,
            interval_unit=IntervalUnit.MINUTES,
            start_at=T0 - timedelta(hours=3),
            end_at=T0 - timedelta(hours=2),
            **common,
        ),
    }
    return ids


def _wait_acks(
    directory: Path, names: list[str], step: int, procs: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + 60
    while True:
        acks = [(directory / f"ack-{n}") for n in names]
        if all(a.exists() and a.read_text() == str(step) for a in acks):
            return
        for p in procs:
            assert p.poll() is None, "a scheduler process died"
        assert time.monotonic() < deadline, f"schedulers did not finish step {step}"
        time.sleep(0.005)


async def test_three_scheduler_processes_fire_each_occurrence_exactly_once(
    module_db: URL, db: AsyncEngine, tmp_path: Path
) -> None:
    ids = await _create_hour_schedules(db)
    config = runtime_settings(module_db, run_lease_seconds=3.0)
    env = settings_env(config)
    names = ["s1", "s2", "s3"]
    logs = [open(tmp_path / f"{n}.log", "wb") for n in names]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.runtime.sched_proc", str(tmp_path), n],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for n, log in zip(names, logs, strict=True)
    ]
    try:
        for step in range(61):
            (tmp_path / "clock.tmp").write_text(f"{step}|{(T0 + step * MIN).isoformat()}")
            (tmp_path / "clock.tmp").replace(tmp_path / "clock")
            await asyncio.to_thread(_wait_acks, tmp_path, names, step, procs)

        async with db.connect() as conn:
            rows = (
                await conn.execute(
                    select(schedule_occurrences).where(
                        schedule_occurrences.c.scheduled_agent_id.in_(list(ids.values()))
                    )
                )
            ).all()
        by_schedule: dict[str, list[Any]] = {}
        for row in rows:
            by_schedule.setdefault(row.scheduled_agent_id, []).append(row)
        for key, expected in EXPECTED.items():
            got = sorted(by_schedule.get(ids[key], []), key=lambda r: r.occurrence_at)
            assert [r.occurrence_at for r in got] == expected, key
        for key in ("interval", "cron-paris", "cron-new-york"):
            got = by_schedule[ids[key]]
            assert {r.outcome for r in got} == {"fired"}
            assert await _runs_of(db, ids[key]) == len(EXPECTED[key])  # one run per occurrence
        overlap = sorted(by_schedule[ids["overlap"]], key=lambda r: r.occurrence_at)
        assert [r.outcome for r in overlap] == ["fired"] + ["skipped_overlap"] * 6
        assert await _runs_of(db, ids["overlap"]) == 1
        assert ids["disabled"] not in by_schedule and ids["ended"] not in by_schedule
        assert all(r.claimed_by.startswith("scheduler-s") for r in rows)

        # Halt the blocking run from this process; the scheduler process running it stops it.
        blocking = overlap[0].task_id
        runtime = await Runtime.open(config, db, role="api")
        try:
            await runtime.halt(blocking)
            deadline = time.monotonic() + 10
            while (await leases.load(db, blocking)).status is not TaskStatus.HALTED:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the blocking run was not halted"
                await asyncio.sleep(0.1)
        finally:
            await runtime.aclose()
        for key in ("interval", "cron-paris"):
            # the last fired runs may still be executing on a loaded machine: wait for them
            deadline = time.monotonic() + 60
            history = await schedule_history(db, ids[key])
            while {h.task_status for h in history} & {"pending", "running"}:
                assert time.monotonic() < deadline, f"{key}: runs still going"
                await asyncio.sleep(0.2)
                history = await schedule_history(db, ids[key])
            assert {h.task_status for h in history} == {"completed"}
    finally:
        (tmp_path / "stop").touch()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
    for p, n in zip(procs, names, strict=True):
        assert p.returncode == 0, (tmp_path / f"{n}.log").read_text()


async def test_an_edited_schedule_gets_its_next_run_from_the_new_definition(
    rt: RtBackend,
) -> None:
    workflow = await make_workflow(rt)
    sid = await insert_schedule(
        rt, workflow, interval_value=1, interval_unit=IntervalUnit.DAYS, start_at=T0,
        next_run_at=T0 + timedelta(days=1),
    )  # fmt: skip
    scheduler = _scheduler(rt)
    await scheduler.tick(T0 + 3 * MIN)
    async with rt.store.unit_of_work() as repos:  # the API changes it to every 5 minutes
        await repos.scheduled_agents.update(
            sid, {"interval_unit": IntervalUnit.MINUTES, "interval_value": 5}
        )
    await scheduler.tick(T0 + 4 * MIN)
    async with rt.store.unit_of_work() as repos:
        nxt = (await repos.scheduled_agents.get(sid)).next_run_at
    assert nxt == T0 + 5 * MIN
    report = await scheduler.tick(T0 + 5 * MIN)
    assert [c.occurrence_at for c in report.fired if c.schedule_id == sid] == [T0 + 5 * MIN]


async def test_a_schedule_that_cannot_be_computed_is_reported_once(
    rt: RtBackend, caplog: pytest.LogCaptureFixture
) -> None:
    workflow = await make_workflow(rt)
    await insert_schedule(rt, workflow, cron_expression="61 * * * *")
    scheduler = _scheduler(rt)
    for minute in range(3):
        await scheduler.tick(T0 + minute * MIN)
    errors = [r for r in caplog.records if "cannot be computed" in r.getMessage()]
    assert len(errors) == 1 and "is not valid" in errors[0].getMessage()


async def test_two_schedulers_racing_over_an_hour_fire_each_occurrence_once(
    rt: RtBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two schedulers of one process tick at the same simulated instants, interleaved on the
    event loop (on MongoDB nothing locks the schedules: the occurrence key alone decides)."""
    ids = await _create_hour_schedules(rt)
    async with rt.runs.scheduling() as session:
        session_class = type(session)
    refused: list[datetime] = []
    claim = session_class.claim

    async def counted(self: Any, schedule: Any, occurrence_at: datetime, *args: Any) -> Any:
        result = await claim(self, schedule, occurrence_at, *args)
        if not result[0]:
            refused.append(occurrence_at)
        return result

    monkeypatch.setattr(session_class, "claim", counted)
    first, second = _scheduler(rt, name="race-a"), _scheduler(rt, name="race-b")
    for step in range(61):
        now = T0 + step * MIN
        # The runs they start stay pending (nothing dispatches them): "overlap" stays busy.
        reports = await asyncio.gather(first.tick(now), second.tick(now))
        assert all(c.occurrence_at <= now for r in reports for c in r.claimed)
    claimed_by: set[str] = set()
    for key, expected in EXPECTED.items():
        history = await schedule_history(rt.runs, ids[key], limit=200)
        assert sorted(h.occurrence_at for h in history) == expected, key
        claimed_by |= {h.claimed_by for h in history}
    for key in ("interval", "cron-paris", "cron-new-york"):
        history = await schedule_history(rt.runs, ids[key], limit=200)
        assert {h.outcome for h in history} == {"fired"}
        assert await _runs_of(rt, ids[key]) == len(EXPECTED[key])  # one run per occurrence
    overlap = sorted(await schedule_history(rt.runs, ids["overlap"]), key=lambda h: h.occurrence_at)
    assert [h.outcome for h in overlap] == ["fired"] + ["skipped_overlap"] * 6
    assert await _runs_of(rt, ids["overlap"]) == 1
    for key in ("disabled", "ended"):
        assert await schedule_history(rt.runs, ids[key]) == []
        assert await _runs_of(rt, ids[key]) == 0
    # Who wins an occurrence is timing: on PostgreSQL the loser of a row lock skips the schedule,
    # so one scheduler may win every occurrence on a loaded machine. Exactly-once is what holds.
    assert claimed_by and claimed_by <= {"race-a", "race-b"}
    if rt.name == "mongo":  # both tried every occurrence; the unique key refused the second
        assert len(refused) == sum(len(v) for v in EXPECTED.values())
