"""Task executions as the existing TBD Agents answered them.

- `summary_fields` computes the `TaskExecutionSummary` fields a stored run does not hold itself
  (`workflow_title`, `agent_name`, `elapsed_seconds`) for a list of runs, with one query for
  their workflows and one for those workflows' agents, whatever the number of runs (no N+1);
  `summaries` gives the runs' JSON with those fields added.
- `progress_of` is a run's TODO progress `{todos, current_step, percent_complete}` from its
  stored `progress`, with the empty answer for a run that recorded none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tbd_agents.domain.enums import TodoItemStatus
from tbd_agents.domain.models import Agent, TaskExecution, Workflow
from tbd_agents.storage.protocol import Query, Repositories, Sort, in_


def elapsed_seconds(task: TaskExecution, now: datetime | None = None) -> float | None:
    """Seconds from start to finish (to `now` while the run goes on); None before it started."""
    if task.started_at is None:
        return None
    end = task.finished_at or now or datetime.now(UTC)
    return round(max((end - task.started_at).total_seconds(), 0.0), 3)


async def summary_fields(
    repos: Repositories, tasks: Sequence[TaskExecution]
) -> dict[str, dict[str, Any]]:
    """`{task id: {workflow_title, agent_name, elapsed_seconds}}` for the runs.

    Two queries in all (the runs' workflows, then their agents), whatever the number of runs;
    a run whose workflow or agent is gone has None there."""
    workflow_ids = sorted({t.workflow_id for t in tasks})
    workflows: dict[str, Workflow] = {}
    if workflow_ids:
        page = await repos.workflows.list(
            Query(filters=(in_("id", workflow_ids),), sort=(Sort("id"),))
        )
        workflows = {w.id: w for w in page.items}
    agent_ids = sorted(
        {w.agent_id for w in workflows.values()} | {t.agent_id for t in tasks if t.agent_id}
    )
    agents: dict[str, Agent] = {}
    if agent_ids:
        found = await repos.agents.list(Query(filters=(in_("id", agent_ids),), sort=(Sort("id"),)))
        agents = {a.id: a for a in found.items}
    now = datetime.now(UTC)
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        workflow = workflows.get(task.workflow_id)
        agent_id = task.agent_id or (workflow.agent_id if workflow is not None else None)
        agent = agents.get(agent_id) if agent_id else None
        out[task.id] = {
            "workflow_title": workflow.title if workflow is not None else None,
            "agent_name": agent.name if agent is not None else None,
            "elapsed_seconds": elapsed_seconds(task, now),
        }
    return out


async def summaries(repos: Repositories, tasks: Sequence[TaskExecution]) -> list[dict[str, Any]]:
    """Each run's JSON fields plus its `summary_fields` (two queries in all)."""
    extra = await summary_fields(repos, tasks)
    return [{**t.model_dump(mode="json", exclude={"extras"}), **extra[t.id]} for t in tasks]


_STATUSES = {s.value for s in TodoItemStatus}


def _todo(raw: Any, index: int) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    ident = raw.get("id", index + 1)
    try:
        number = int(ident)
    except (TypeError, ValueError):
        number = index + 1
    status = str(raw.get("status") or TodoItemStatus.NOT_STARTED.value)
    try:
        status = TodoItemStatus(status).value
    except ValueError:
        status = status if status in _STATUSES else TodoItemStatus.NOT_STARTED.value
    return {"id": number, "title": str(raw.get("title") or ""), "status": status}


def progress_of(task: TaskExecution) -> dict[str, Any]:
    """`{todos: [{id:int, title, status}], current_step: int|null, percent_complete: 0..1}`.

    A run with no stored progress answers `{todos: [], current_step: null,
    percent_complete: 0}`. A stored percentage above 1 (an old 0-100 value) is read as a
    percent; without one it is the share of completed todos."""
    stored = task.progress if isinstance(task.progress, Mapping) else {}
    raw_todos = stored.get("todos")
    todos = [
        t
        for i, raw in enumerate(raw_todos if isinstance(raw_todos, list) else [])
        if (t := _todo(raw, i)) is not None
    ]
    step = stored.get("current_step")
    current_step = step if isinstance(step, int) and not isinstance(step, bool) else None
    percent = stored.get("percent_complete")
    if isinstance(percent, int | float) and not isinstance(percent, bool):
        value = float(percent)
        value = value / 100.0 if value > 1.0 else value
    elif todos:
        done = sum(t["status"] == TodoItemStatus.COMPLETED.value for t in todos)
        value = done / len(todos)
    else:
        value = 0.0
    return {
        "todos": todos,
        "current_step": current_step,
        "percent_complete": min(max(value, 0.0), 1.0),
    }
