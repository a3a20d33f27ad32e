"""How records of some resources are shaped in responses, beyond their stored fields.

Most records go out exactly as stored (serialised straight from the model, or as JSON built by
the database for lists). A few carry fields the existing TBD Agents API returns and its clients
require, which are derived rather than stored:

* tokens: `masked_value` (the secret's last four characters behind "…", or "****" for short
  secrets) and `value` always "********"; the secret itself is never returned;
* providers: `api_key_token_name` as a string ("" when none is set);
* workflows: `task_count`, `last_task_status`, `last_task_at`, and `github_user` / `model` as
  strings ("" when an existing record has none);
* task executions: `workflow_title`, `agent_name`, `elapsed_seconds` (the existing API's
  `TaskExecutionSummary`) and `progress` in the existing `{todos, current_step,
  percent_complete}` shape (null when the run has none).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
from pydantic import TypeAdapter

from tbd_agents.api.deps import ApiContext
from tbd_agents.api.schemas import record_json
from tbd_agents.domain.models import Entity, Provider, TaskExecution, Token, Workflow
from tbd_agents.services.task_views import progress_of, summary_fields
from tbd_agents.services.tokens import MASK
from tbd_agents.storage.protocol import GroupLatest, Repositories

log = logging.getLogger("tbd_agents.api")

_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(datetime)

#: Models whose responses are shaped here (their lists are built record by record).
PRESENTED: frozenset[type[Entity]] = frozenset({Token, Provider, Workflow, TaskExecution})

#: Secrets shorter than this show no characters at all in `masked_value`.
MASK_MIN_LENGTH = 12


def masked_value(secret: str | None) -> str:
    """The existing API's hint of a secret: "…" and its last four characters, or "****"."""
    if secret is None or len(secret) < MASK_MIN_LENGTH:
        return "****"
    return "…" + secret[-4:]


def _token_fields(token: Token, ctx: ApiContext) -> dict[str, Any]:
    try:
        secret: str | None = ctx.cipher().decrypt(token.encrypted_value)
    except Exception as exc:  # a value under a retired key still lists, masked entirely
        log.warning("token %s cannot be decrypted for its masked value: %s", token.id, exc)
        secret = None
    return {
        "value": MASK,
        "masked_value": masked_value(secret),
        "created_by": token.created_by or "",
    }


def _workflow_fields(workflow: Workflow, runs: GroupLatest | None) -> dict[str, Any]:
    latest = runs.latest if runs is not None else {}
    status = latest.get("status")
    created = latest.get("created_at")
    return {
        "github_user": workflow.github_user or "",
        "model": workflow.model or "",
        "task_count": runs.count if runs is not None else 0,
        "last_task_status": str(getattr(status, "value", status)) if status is not None else None,
        "last_task_at": _TIMESTAMP.dump_python(created, mode="json") if created else None,
    }


async def _runs_of(workflows: list[Workflow], repos: Repositories) -> dict[str, GroupLatest]:
    tasks = repos.for_model(TaskExecution)
    return await tasks.group_latest("workflow_id", [w.id for w in workflows], take=("status",))


def _derived(
    record: Entity,
    ctx: ApiContext,
    runs: dict[str, GroupLatest],
    summaries: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    if isinstance(record, Token):
        return _token_fields(record, ctx)
    if isinstance(record, Provider):
        return {"api_key_token_name": record.api_key_token_name or ""}
    if isinstance(record, Workflow):
        return _workflow_fields(record, runs.get(record.id))
    if isinstance(record, TaskExecution):
        progress = progress_of(record) if record.progress else None
        return {**summaries.get(record.id, {}), "progress": progress}
    return {}


def _merge(raw: bytes, fields: dict[str, Any]) -> bytes:
    if not fields:
        return raw
    document = orjson.loads(raw)
    document.update(fields)
    return orjson.dumps(document)


async def present_one(record: Entity, repos: Repositories, ctx: ApiContext) -> bytes:
    """The record's response JSON."""
    return await present_many(type(record), [record], repos, ctx, array=False)


async def present_many(
    model: type[Entity],
    records: Iterable[Entity],
    repos: Repositories,
    ctx: ApiContext,
    *,
    array: bool = True,
) -> bytes:
    """A JSON array of the records' response JSON (a constant number of statements)."""
    rows = list(records)
    runs: dict[str, GroupLatest] = {}
    summaries: dict[str, dict[str, Any]] = {}
    if model is Workflow:
        runs = await _runs_of([r for r in rows if isinstance(r, Workflow)], repos)
    if model is TaskExecution:
        summaries = await summary_fields(repos, [r for r in rows if isinstance(r, TaskExecution)])
    parts = [
        _merge(record_json(r), _derived(r, ctx, runs, summaries))
        if model in PRESENTED
        else record_json(r)
        for r in rows
    ]
    if not array:
        return parts[0]
    return b"[" + b",".join(parts) + b"]"
