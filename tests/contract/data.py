"""Records the contract tests store. Times are whole milliseconds (BSON keeps milliseconds)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tbd_agents.domain.enums import OutputFormat, TaskStatus
from tbd_agents.domain.models import Agent, Entity, TaskExecution, Workflow
from tbd_agents.storage.protocol import Repositories, Sort, eq

T0 = datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
HOUR = timedelta(hours=1)


def agent(name: str, **fields: Any) -> Agent:
    return Agent(name=name, **fields)


def seed_agents() -> list[Agent]:
    """Five agents whose fields cover every filter operator (incl. nulls and empty arrays)."""
    return [
        Agent(
            id="a1",
            name="alpha",
            model="gpt",
            tags=["ops", "prod"],
            max_turns=1,
            temperature=0.1,
            memory_enabled=True,
            output_format=OutputFormat.TEXT,
            created_at=T0,
        ),
        Agent(
            id="a2",
            name="bravo",
            model=None,
            tags=["ops"],
            max_turns=5,
            temperature=None,
            memory_enabled=False,
            output_format=OutputFormat.MARKDOWN,
            created_at=T0 + HOUR,
        ),
        Agent(
            id="a3",
            name="charlie",
            model="claude",
            tags=[],
            max_turns=None,
            temperature=1.0,
            memory_enabled=True,
            output_format=OutputFormat.JSON,
            created_at=T0 + 2 * HOUR,
        ),
        Agent(
            id="a4",
            name="delta",
            model="gpt",
            tags=["prod", "dev"],
            max_turns=10,
            temperature=2.0,
            memory_enabled=False,
            output_format=OutputFormat.TEXT,
            created_at=T0 + 3 * HOUR,
        ),
        Agent(
            id="a5",
            name="echo",
            model="claude",
            tags=["dev"],
            max_turns=5,
            temperature=None,
            memory_enabled=True,
            output_format=OutputFormat.TEXT,
            created_at=T0 + 4 * HOUR,
        ),
    ]


ALL_AGENTS = frozenset({"alpha", "bravo", "charlie", "delta", "echo"})

STATUSES = (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.COMPLETED)


def seed_tasks(workflow_id: str, n: int) -> list[TaskExecution]:
    """`n` task executions with many equal sort values (3 statuses, 4 turn counts, 5 times)."""
    return [
        TaskExecution(
            id=f"t{i:03d}",
            workflow_id=workflow_id,
            status=STATUSES[i % 3],
            turns=(i * 7) % 4,
            tool_calls=i,
            created_at=T0 + (i % 5) * HOUR,
            prompt=f"prompt {i}",
        )
        for i in range(n)
    ]


async def add_tasks(repos: Repositories, workflow_id: str, n: int) -> list[TaskExecution]:
    """Store a workflow and `n` task executions of it (PostgreSQL checks the parent exists)."""
    if await repos.workflows.find_one(eq("id", workflow_id)) is None:
        await repos.workflows.create(Workflow(id=workflow_id, agent_id="agent"))
    tasks = seed_tasks(workflow_id, n)
    await repos.task_executions.insert_many(tasks)
    return tasks


def python_order(records: Sequence[Entity], sort: Sequence[Sort]) -> list[str]:
    """Ids of `records` in the order `sort` (+ id ascending) defines, computed in Python."""
    keys: list[Sort] = list(sort)
    if not any(s.field == "id" for s in keys):
        keys.append(Sort("id"))
    ordered = list(records)
    for key in reversed(keys):  # stable sorts, least significant key first
        get: Callable[[Entity], Any] = lambda r, f=key.field: getattr(r, f)  # noqa: E731
        ordered.sort(key=get, reverse=key.descending)
    return [r.id for r in ordered]
