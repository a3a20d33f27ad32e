"""Sending a prompt to a workflow as the existing TBD Agents did, before a run is queued.

- A workflow whose `status` is `inactive` refuses prompts and runs (409 naming the fix); every
  other status accepts them (`active`, the default, `idle`, and the states a run leaves).
- After a run the workflow goes back to `active`, unless it was made `inactive` meanwhile
  (`status_after_run`): a finished run never leaves it refusing the next prompt.
- `prepare_prompt` checks a prompt and/or a structured request against the workflow's
  guardrails (the agent's, plus the workflow's `guardrail_ids` and `guardrail_tags`) and returns
  the effective prompt: the JSON of the request when one is given (what the run receives and the
  task records), else the prompt (redacted when a `redact` guardrail matched). A blocking
  violation raises InvalidData (422) naming the guardrail, as the existing prompt endpoint did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tbd_agents.domain.enums import WorkflowStatus
from tbd_agents.domain.models import Agent, TaskExecution, Workflow
from tbd_agents.engine.builder import load_guardrails
from tbd_agents.engine.guardrails import Guardrails
from tbd_agents.errors import Conflict, InvalidData
from tbd_agents.services.privilege import AdminDirectory
from tbd_agents.storage.protocol import Query, Repositories, eq, gt, ne


class RunStateRefused(Conflict):
    """The workflow or run is not in a state that allows the request. A conflict, answered
    400 as the existing TBD Agents answered it on its prompt, halt and stop routes."""

    http_status = 400
    code = "invalid_run_state"


def ensure_accepts_prompts(workflow: Workflow) -> None:
    """Conflict (409) when the workflow is `inactive`, naming how to reactivate it."""
    if workflow.status is WorkflowStatus.INACTIVE:
        raise Conflict(
            f"workflow {workflow.id!r} is inactive and refuses prompts: set its status to "
            f'active (PATCH /api/workflows/{workflow.id} with {{"status": "active"}})',
            details={"field": "status", "status": WorkflowStatus.INACTIVE.value},
        )


def status_after_run(current: WorkflowStatus) -> WorkflowStatus:
    """The workflow's status once a run ended: `inactive` stays, anything else is `active`."""
    return WorkflowStatus.INACTIVE if current is WorkflowStatus.INACTIVE else WorkflowStatus.ACTIVE


@dataclass(slots=True)
class PreparedPrompt:
    """What a run of the workflow receives, once the guardrails let it through."""

    #: The effective prompt: the request's JSON when a request was given, else the prompt.
    prompt: str
    request: dict[str, Any] | None = None
    #: Violations that did not block (flag / redact): `{guardrail, action, reason, stage}`.
    violations: list[dict[str, str]] = field(default_factory=list)


def check_prompt(
    rails: Guardrails, prompt: str | None, request: Mapping[str, Any] | None
) -> PreparedPrompt:
    """Apply request and prompt guardrails to what a caller sent; raise InvalidData (422)
    naming the guardrail when one blocks, or naming what to send when something is missing."""
    if prompt is None and request is None:
        raise InvalidData("send a prompt, a request (a JSON object), or both")
    if request is not None and not isinstance(request, Mapping):
        raise InvalidData("request must be a JSON object", details={"field": "request"})
    body = dict(request) if request is not None else None
    prepared = PreparedPrompt(prompt="", request=body)
    checks = rails.checks_prompt
    if prompt is None and checks:
        raise InvalidData(
            f"guardrail {', '.join(checks)} checks the prompt: send `prompt` with the request",
            details={"field": "prompt"},
        )
    text = prompt or ""
    for stage, verdict in (
        ("request", rails.check_request(body, text)),
        ("input", rails.check_input(text) if prompt is not None else None),
    ):
        if verdict is None:
            continue
        if verdict.blocked:
            raise InvalidData(verdict.block_message, details={"field": stage})
        prepared.violations += [{**v.to_dict(), "stage": stage} for v in verdict.violations]
        if stage == "input":
            text = verdict.text
    prepared.prompt = json.dumps(body, ensure_ascii=False) if body is not None else text
    return prepared


async def prepare_prompt(
    repos: Repositories,
    workflow: Workflow,
    *,
    prompt: str | None,
    request: Mapping[str, Any] | None = None,
    admins: AdminDirectory | None = None,
) -> PreparedPrompt:
    """Check that `workflow` accepts prompts (409) and that its guardrails let `prompt` and
    `request` through (422); the effective prompt to start the run with."""
    ensure_accepts_prompts(workflow)
    agent: Agent = await repos.agents.get(workflow.agent_id)
    records, _ = await load_guardrails(repos, agent, admins or AdminDirectory(), workflow=workflow)
    return check_prompt(Guardrails.from_records(records), prompt, request)


def prompt_response(workflow: Workflow, task: TaskExecution) -> dict[str, Any]:
    """The existing `PromptResponse` of a prompt that started `task` (plus `task_id`, and our
    `task`: the run as stored): the workflow's settings, with the conversation just reset."""
    return {
        "workflow_id": workflow.id,
        "task_id": task.id,
        "status": "running",
        "current_turn": 0,
        "max_turns": workflow.max_turns,
        "response": None,
        "output_format": workflow.output_format.value,
        "infinite_session": workflow.infinite_session,
        "caveman": workflow.caveman,
        "tsv_tool_results": workflow.tsv_tool_results,
        "usage": workflow.usage,
        "logs": [],
        "messages": [],
        "task": task.model_dump(mode="json", exclude={"extras"}),
    }


async def conversation_of(
    repos: Repositories, workflow: Workflow, task_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The conversation a new run `task_id` of `workflow` continues, and the part of it to carry
    onto that run.

    The conversation is the messages of the workflow's earlier runs (`run_messages`), oldest run
    first, since the last reset (`conversation_reset_at`); runs deleted by retention drop out
    of it. A workflow whose runs were recorded before runs kept their messages holds its whole
    conversation on its row: that is the conversation then, and it is carried onto the new run
    (the second list) so that it survives the row being overwritten with the last run's view."""
    filters = [eq("workflow_id", workflow.id), ne("id", task_id)]
    if workflow.conversation_reset_at is not None:
        filters.append(gt("created_at", workflow.conversation_reset_at))
    earlier: list[dict[str, Any]] = []
    recorded = False
    async for run in repos.task_executions.iterate(Query(filters=tuple(filters))):
        if run.run_messages:
            recorded = True
            earlier.extend(run.run_messages)
    if recorded or not workflow.messages:
        return earlier, []
    legacy = list(workflow.messages)
    return legacy, legacy
