"""The trace context a run carries from where it was created to where it executes, on both
stores (PostgreSQL, and MongoDB through the in-process emulation), with the runtime tests'
scripted executor: the traceparent stored at creation is the parent of the run span even when
the run executes later, outside any span (a deferred dispatch); a schedule-fired run's trace
starts at the scheduler's `schedule_fire` span; failures count and end the span as failed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from tbd_agents.domain.enums import IntervalUnit, OverlapPolicy, TaskStatus, TaskTrigger
from tbd_agents.domain.models import ScheduledAgent
from tbd_agents.runtime.scheduler import Scheduler
from tests.observability.conftest import Deltas, one
from tests.runtime.conftest import RtBackend, make_workflow
from tests.runtime.test_scheduler import T0

MIN = timedelta(minutes=1)


def traceparent_of(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


async def test_the_stored_traceparent_is_the_run_spans_parent_when_it_runs_later(
    rt: RtBackend, spans: Any
) -> None:
    workflow = await make_workflow(rt)
    runtime = await rt.runtime(start=False)
    try:
        with trace.get_tracer("tests").start_as_current_span("POST /prompt") as api:
            created = await runtime.runs.create_run(workflow, "emit:2")  # not dispatched yet
        stored = await rt.task(created.id)
        assert stored.trace_parent == traceparent_of(api)
        assert "trace_parent" not in stored.model_dump()  # never serialized (API, webhooks)
        deltas = Deltas()
        finished = await runtime.execute(created.id)  # later, outside any span
    finally:
        await runtime.aclose(drain_seconds=5)
    assert finished is not None and finished.status is TaskStatus.COMPLETED
    run = one(spans.get_finished_spans(), "invoke_agent")
    assert run.parent is not None
    assert run.parent.span_id == api.get_span_context().span_id
    assert run.context.trace_id == api.get_span_context().trace_id
    assert (run.attributes or {})["tbd.task.status"] == "completed"
    d = deltas.take()
    assert d("agent_tasks_total", status="completed", model="unknown", reasoning_effort="none") == 1
    assert d("agent_task_duration_seconds_count", model="unknown", status="completed") == 1


async def test_a_failed_run_is_counted_and_its_span_fails(rt: RtBackend, spans: Any) -> None:
    workflow = await make_workflow(rt)
    runtime = await rt.runtime(start=False)
    try:
        created = await runtime.runs.create_run(workflow, "fail", reasoning_effort="high")
        assert (await rt.task(created.id)).trace_parent is None  # created outside any span
        deltas = Deltas()
        active = deltas.before[("agent_tasks_active", ())]
        finished = await runtime.execute(created.id)
    finally:
        await runtime.aclose(drain_seconds=5)
    assert finished is not None and finished.status is TaskStatus.FAILED
    d = deltas.take()
    assert d("agent_tasks_total", status="failed", model="unknown", reasoning_effort="high") == 1
    assert d.after[("agent_tasks_active", ())] == active
    run = one(spans.get_finished_spans(), "invoke_agent")
    assert run.parent is None  # no stored parent: the run is a trace of its own
    assert run.status.status_code is StatusCode.ERROR
    assert (run.attributes or {})["error.type"] == "run_failed"


async def test_a_schedule_fired_run_starts_its_trace_at_the_fire_span(
    rt: RtBackend, spans: Any
) -> None:
    workflow = await make_workflow(rt)
    schedule = ScheduledAgent(
        workflow_id=workflow, prompt="emit:1", interval_value=1,
        interval_unit=IntervalUnit.MINUTES, start_at=T0, next_run_at=T0,
        overlap_policy=OverlapPolicy.ALLOW, created_at=T0 - timedelta(days=1),
    )  # fmt: skip
    async with rt.store.unit_of_work() as repos:
        await repos.scheduled_agents.create(schedule)
    runtime = await rt.runtime(start=False)
    dispatched: list[str] = []

    async def keep(task_id: str) -> None:
        dispatched.append(task_id)

    scheduler = Scheduler(rt.runs, keep, scheduler_id="sig", misfire_grace_seconds=90)
    deltas = Deltas()
    try:
        with trace.get_tracer("tests").start_as_current_span("unrelated"):  # not its parent
            await scheduler.tick(T0 + 30 * timedelta(seconds=1))
        (task_id,) = dispatched
        task = await rt.task(task_id)
        assert task.trigger is TaskTrigger.SCHEDULE
        await runtime.execute(task_id)
    finally:
        await runtime.aclose(drain_seconds=5)
    d = deltas.take()
    assert d("tbd_schedule_fires_total", outcome="fired") == 1
    assert d("tbd_scheduler_lag_seconds_count") == 1
    assert d("tbd_scheduler_lag_seconds_sum") == pytest.approx(30)  # a float sum
    found = spans.get_finished_spans()
    fire = one(found, "schedule_fire")
    assert fire.parent is None  # a root: schedule runs start their own trace
    assert (fire.attributes or {})["tbd.schedule.id"] == schedule.id
    assert (fire.attributes or {})["tbd.task.id"] == task_id
    run = one(found, "invoke_agent")
    assert run.parent is not None and run.parent.span_id == fire.context.span_id
    assert run.context.trace_id == fire.context.trace_id
    assert (run.attributes or {})["tbd.trigger"] == "schedule"
    assert (run.attributes or {})["tbd.schedule.id"] == schedule.id
