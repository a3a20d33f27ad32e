"""The run-time writes records outside the repositories (claims, heartbeats, ends of runs, halts,
the workflow's status): each of those writes raises the record's version too, on both backends,
so an `If-Match` taken before a run changed a workflow or task is refused (412) afterwards."""

from __future__ import annotations

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import Workflow
from tbd_agents.runtime.contracts import RunOutcome
from tests.runtime.conftest import RtBackend, make_workflow


async def _workflow_version(rt: RtBackend, workflow_id: str) -> int:
    async with rt.store.unit_of_work(readonly=True) as repos:
        workflow: Workflow = await repos.workflows.get(workflow_id)
    return workflow.version


async def test_every_state_change_of_a_run_raises_the_versions(rt: RtBackend) -> None:
    workflow_id = await make_workflow(rt)
    assert await _workflow_version(rt, workflow_id) == 1
    task = await rt.runs.create_run(workflow_id, "p")
    assert task.version == 1

    await rt.runs.set_backend_id(task.id, "celery-id")
    assert (await rt.task(task.id)).version == 2

    claimed = await rt.runs.claim(task.id, "worker@v")
    assert claimed is not None and claimed.task.version == 3
    assert await _workflow_version(rt, workflow_id) == 2  # running

    assert (await rt.runs.heartbeat(task.id, "worker@v")).owned
    assert (await rt.task(task.id)).version == 4

    ended = await rt.runs.finish(task.id, "worker@v", RunOutcome(TaskStatus.COMPLETED, result="ok"))
    assert ended is not None and ended.task.version == 5
    assert (await rt.task(task.id)).version == 5
    assert await _workflow_version(rt, workflow_id) == 3  # active again


async def test_halting_a_queued_run_raises_the_versions(rt: RtBackend) -> None:
    workflow_id = await make_workflow(rt)
    task = await rt.runs.create_run(workflow_id, "p")
    await rt.runs.halt(task.id, "someone")
    halted = await rt.task(task.id)
    assert halted.status is TaskStatus.HALTED and halted.version == 2
