"""Contract: `Repository.group_latest` (the count and newest record per group, one statement)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tbd_agents.storage.protocol import DocumentStore


async def test_counts_and_newest_per_group(store: DocumentStore) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    plan = {
        "w1": [(1, TaskStatus.COMPLETED), (5, TaskStatus.FAILED), (3, TaskStatus.RUNNING)],
        "w2": [(2, TaskStatus.HALTED)],
        "w3": [(4, TaskStatus.PENDING)],
    }
    async with store.unit_of_work() as repos:
        for workflow_id, runs in plan.items():
            for minute, status in runs:
                await repos.task_executions.create(
                    TaskExecution(
                        workflow_id=workflow_id,
                        prompt="p",
                        status=status,
                        created_at=base + timedelta(minutes=minute),
                    )
                )
    async with store.unit_of_work(readonly=True) as repos:
        found = await repos.task_executions.group_latest(
            "workflow_id", ["w1", "w2", "nobody"], take=("status",)
        )
        assert await repos.task_executions.group_latest("workflow_id", []) == {}
    assert set(found) == {"w1", "w2"}
    assert found["w1"].count == 3 and found["w2"].count == 1
    status = found["w1"].latest["status"]
    assert getattr(status, "value", status) == "failed"
    assert found["w1"].latest["created_at"] == base + timedelta(minutes=5)
    assert found["w2"].latest["created_at"] == base + timedelta(minutes=2)
