"""Task routes the existing TBD Agents clients call besides the generic CRUD ones.

- `GET /api/tasks/workflow/{workflow_id}`: every run of one workflow, newest first, each with
  the `TaskExecutionSummary` fields (`workflow_title`, `agent_name`, `elapsed_seconds`).
- `GET /api/tasks/{task_id}/progress`: the run's TODO progress.

Halting (`POST /api/tasks/{id}/stop`, `/halt`) and following (`/events`) are run-time routes
(`runtime/api.py`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import Caller, Ctx
from tbd_agents.domain.models import TaskExecution, Workflow
from tbd_agents.services.records import Records
from tbd_agents.services.task_views import progress_of, summaries
from tbd_agents.storage.protocol import Query, desc, eq

router = APIRouter(prefix="/api/tasks", tags=["tasks"], responses=ERRORS)


class TodoOut(BaseModel):
    id: int
    title: str
    status: str = Field(description="not-started, in-progress or completed.")


class ProgressOut(BaseModel):
    todos: list[TodoOut]
    current_step: int | None
    percent_complete: float = Field(ge=0, le=1)


@router.get(
    "/workflow/{workflow_id}",
    summary="Every run of one workflow (newest first), with summary fields",
)
async def workflow_tasks(
    workflow_id: Annotated[str, Path(description="Workflow id.")], ctx: Ctx, caller: Caller
) -> list[dict[str, Any]]:
    """A bare array of the workflow's task executions: each stored field plus
    `workflow_title`, `agent_name` and `elapsed_seconds`. 404 for a workflow the caller does
    not own."""
    async with ctx.store.unit_of_work(readonly=True) as repos:
        await Records(repos, caller, Workflow).get(workflow_id)
        page = await repos.task_executions.list(
            Query(filters=(eq("workflow_id", workflow_id),), sort=(desc("created_at"),))
        )
        return await summaries(repos, page.items)


@router.get("/{task_id}/progress", response_model=ProgressOut, summary="A run's TODO progress")
async def task_progress(
    task_id: Annotated[str, Path(description="Task execution id.")], ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    """`{todos: [{id, title, status}], current_step, percent_complete (0..1)}`; a run that
    recorded no progress answers no todos, no current step and 0."""
    async with ctx.store.unit_of_work(readonly=True) as repos:
        task = await Records(repos, caller, TaskExecution).get(task_id)
    return progress_of(task)
