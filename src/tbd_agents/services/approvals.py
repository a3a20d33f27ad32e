"""Approval records of tool calls: opened when a run pauses, decided by a person (API, signed
link) or expired by the runtime's upkeep, and turned into the decisions a resumed run applies.

A paused run keeps, on its task (`paused_state`), the conversation the agent loop resumes from
and the ids of the approvals of that pause. The run is resumed (made pending and dispatched, by
`Runtime.resume_run`) once none of them is pending any more.

Signed links: `/api/approvals/{id}/decide?token=…`, where the token is an HMAC-SHA256 of the
approval id and its expiry under a key derived from the server's token-encryption key ring
(`TokenCipher.derive_key`), so no new secret is configured. Links are signed with the newest
key version and checked against every version of the ring, so rotating the ring (adding a newer
key) keeps the links already sent working; removing a version revokes the links it signed. A link
is valid until the approval expires and serves one decision: the first one decides, any later one is 409 (the approval is
no longer pending).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import jsonschema

from tbd_agents.domain.approvals import ApprovalStatus, ToolApproval, parse_policy
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import Agent, TaskExecution, Workflow
from tbd_agents.domain.types import utcnow
from tbd_agents.engine.approval import ApprovalGate, Decision, PendingCall
from tbd_agents.errors import Conflict, InvalidData, PermissionDenied, TbdError, VersionConflict
from tbd_agents.storage.protocol import DocumentStore, Query, asc, desc, eq, in_, lte

LINK_PURPOSE = "approval-links-v1"


class ApprovalGone(TbdError):
    """The approval expired before this decision."""

    http_status = 410
    code = "approval_expired"


# --- signed links ---------------------------------------------------------------------------
def _signature(key: bytes, approval: ToolApproval) -> str:
    message = f"{approval.id}:{int(approval.expires_at.timestamp())}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def link_token(key: bytes, approval: ToolApproval) -> str:
    """The token of the approval's signed decision link."""
    return _signature(key, approval)


def check_token(keys: Sequence[bytes], approval: ToolApproval, token: str) -> None:
    """PermissionDenied unless `token` is the approval's link token under one of `keys` (the
    link keys of every version of the key ring: a link sent before a rotation stays valid
    until its key version is removed from the ring)."""
    given = token.strip()
    if not any(hmac.compare_digest(_signature(key, approval), given) for key in keys):
        raise PermissionDenied(
            "this approval link is not valid (altered, or signed with a key that is no longer "
            "in the server's key ring): decide through the API or the dashboard instead"
        )


def links(approval: ToolApproval, key: bytes, base_url: str | None) -> dict[str, str]:
    """The URLs of an approval: the API's (need an API key) and the signed decision link."""
    base = (base_url or "").rstrip("/")
    path = f"{base}/api/approvals/{approval.id}"
    return {
        "url": path,
        "approve_url": f"{path}/approve",
        "deny_url": f"{path}/deny",
        "decide_url": f"{path}/decide?token={link_token(key, approval)}",
    }


def payload(approval: ToolApproval, urls: dict[str, str]) -> dict[str, Any]:
    """The `approval_requested` event and webhook body."""
    return {
        "event": "approval_requested",
        "approval_id": approval.id,
        "task_id": approval.task_id,
        "workflow_id": approval.workflow_id,
        "tool": approval.tool_name,
        "call_id": approval.call_id,
        "origin": approval.origin,
        "arguments": approval.arguments,
        "rule": approval.rule,
        "expires_at": approval.expires_at.isoformat(),
        "on_timeout": approval.on_timeout,
        **urls,
    }


# --- opening a pause --------------------------------------------------------------------------
async def gate_for(
    store: DocumentStore, agent: Agent, workflow: Workflow | None, *, can_pause: bool = True
) -> ApprovalGate:
    """The run's gate: the workflow's policy (for a workflow run), then the agent's, with the
    MCP servers the rules name by id resolved to their names. `can_pause=False` for a chat
    turn: its `ask` calls are refused with the reason (engine/approval.py)."""
    policies = [
        (
            "workflow",
            parse_policy(workflow.tool_policy, "workflow.tool_policy") if workflow else None,
        ),
        ("agent", parse_policy(agent.tool_policy, "agent.tool_policy")),
    ]
    named = {r.server for _, p in policies if p is not None for r in p.rules if r.server}
    server_ids: dict[str, str] = {}
    if named:
        async with store.unit_of_work(readonly=True) as repos:
            page = await repos.mcp_servers.list(Query(filters=(in_("id", sorted(named)),)))
        server_ids = {s.name: s.id for s in page.items}
    return ApprovalGate(policies, server_ids, can_pause=can_pause)


async def open_pause(
    store: DocumentStore,
    task: TaskExecution,
    workflow: Workflow,
    pending: list[PendingCall],
    state: dict[str, Any],
    *,
    key: bytes,
    base_url: str | None,
) -> list[dict[str, Any]]:
    """Store one approval per waiting call and the run's resume state; their payloads."""
    now = utcnow()
    records = [
        ToolApproval(
            task_id=task.id,
            workflow_id=workflow.id,
            owner=workflow.github_user,
            tool_name=p.call.name,
            call_id=p.call.id,
            origin=p.source,
            arguments=p.call.arguments,
            parameters=p.parameters,
            rule=p.verdict.rule,
            expires_at=now + timedelta(seconds=p.verdict.timeout_seconds),
            on_timeout=p.verdict.on_timeout,
        )
        for p in pending
    ]
    async with store.unit_of_work() as repos:
        approvals = repos.for_model(ToolApproval)
        for record in records:
            await approvals.create(record)
        paused = {"loop": state, "approval_ids": [r.id for r in records]}
        await repos.task_executions.update(task.id, {"paused_state": paused})
    return [payload(r, links(r, key, base_url)) for r in records]


# --- deciding ---------------------------------------------------------------------------------
async def get(store: DocumentStore, approval_id: str) -> ToolApproval:
    async with store.unit_of_work(readonly=True) as repos:
        found: ToolApproval = await repos.for_model(ToolApproval).get(approval_id)
    return found


def _check_arguments(approval: ToolApproval, arguments: dict[str, Any]) -> None:
    if not approval.parameters:
        return
    try:
        jsonschema.validate(arguments, approval.parameters)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(arguments)"
        raise InvalidData(
            f"the edited arguments do not fit the schema of {approval.tool_name}: {where}: "
            f"{exc.message}",
            details={"field": "arguments", "schema": approval.parameters},
        ) from None
    except jsonschema.SchemaError:
        return  # the tool's own schema is broken: the tool itself will judge the arguments


async def decide(
    store: DocumentStore,
    approval: ToolApproval,
    *,
    approve: bool,
    by: str | None,
    arguments: dict[str, Any] | None = None,
    reason: str | None = None,
) -> ToolApproval:
    """Record the decision on a pending approval (once: a concurrent or later decision is
    Conflict; an expired one ApprovalGone)."""
    if approval.status is not ApprovalStatus.PENDING:
        raise Conflict(
            f"approval {approval.id} is already {approval.status.value}"
            + (f" (by {approval.decided_by})" if approval.decided_by else ""),
            details={"status": approval.status.value},
        )
    if approval.expired_by(utcnow()):
        raise ApprovalGone(
            f"approval {approval.id} expired at {approval.expires_at.isoformat()}; its run "
            f"went on as its policy's on_timeout ({approval.on_timeout}) says"
        )
    if arguments is not None:
        if not approve:
            raise InvalidData("arguments can only be given with an approval, not a denial")
        _check_arguments(approval, arguments)
    changes: dict[str, Any] = {
        "status": ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED,
        "decided_by": by,
        "decided_at": utcnow(),
        "edited_arguments": arguments,
        "reason": reason,
    }
    try:
        async with store.unit_of_work() as repos:
            decided: ToolApproval = await repos.for_model(ToolApproval).update(
                approval.id, changes, expected_version=approval.version
            )
    except VersionConflict:
        raise Conflict(f"approval {approval.id} was decided by someone else meanwhile") from None
    return decided


async def expire_due(store: DocumentStore, limit: int = 100) -> list[ToolApproval]:
    """Mark expired the pending approvals past their `expires_at` (once each)."""
    now = utcnow()
    query = Query(
        filters=(eq("status", ApprovalStatus.PENDING.value), lte("expires_at", now)),
        sort=(asc("expires_at"),),
        limit=limit,
    )
    async with store.unit_of_work(readonly=True) as repos:
        due = list((await repos.for_model(ToolApproval).list(query)).items)
    expired: list[ToolApproval] = []
    for approval in due:
        try:
            async with store.unit_of_work() as repos:
                expired.append(
                    await repos.for_model(ToolApproval).update(
                        approval.id,
                        {"status": ApprovalStatus.EXPIRED, "decided_at": now},
                        expected_version=approval.version,
                    )
                )
        except VersionConflict:
            continue  # decided (or expired by another process) meanwhile
    return expired


async def undecided(store: DocumentStore, task_id: str) -> int:
    """How many approvals of the run's current pause are still pending."""
    async with store.unit_of_work(readonly=True) as repos:
        task: TaskExecution = await repos.task_executions.get(task_id)
        ids = list((task.paused_state or {}).get("approval_ids", []))
        if not ids:
            return 0
        return await repos.for_model(ToolApproval).count(
            in_("id", ids), eq("status", ApprovalStatus.PENDING.value)
        )


async def decisions_of(
    store: DocumentStore, paused: dict[str, Any]
) -> tuple[dict[str, Decision], str | None]:
    """The decisions a resumed run applies (call id → decision) and, when an approval expired
    with `on_timeout: fail`, the error that fails the run."""
    ids = list(paused.get("approval_ids", []))
    async with store.unit_of_work(readonly=True) as repos:
        page = await repos.for_model(ToolApproval).list(Query(filters=(in_("id", ids),)))
    decisions: dict[str, Decision] = {}
    failure: str | None = None
    for a in page.items:
        decisions[a.call_id] = Decision(a.status.value, a.edited_arguments, a.decided_by, a.reason)
        if a.status is ApprovalStatus.EXPIRED and a.on_timeout == "fail":
            failure = (
                f"nobody approved the call to {a.tool_name} before {a.expires_at.isoformat()} "
                f"(approval {a.id}), and its policy's on_timeout is `fail`"
            )
    return decisions, failure


# --- reading ----------------------------------------------------------------------------------
async def list_for(
    store: DocumentStore,
    owner_filters: tuple[Any, ...],
    *,
    status: ApprovalStatus | None,
    task_id: str | None = None,
    workflow_id: str | None = None,
    limit: int = 50,
) -> list[ToolApproval]:
    """Approvals the caller may see (`owner_filters`), newest first, filtered."""
    filters = list(owner_filters)
    if status is not None:
        filters.append(eq("status", status.value))
    if task_id:
        filters.append(eq("task_id", task_id))
    if workflow_id:
        filters.append(eq("workflow_id", workflow_id))
    query = Query(filters=tuple(filters), sort=(desc("created_at"),), limit=limit)
    async with store.unit_of_work(readonly=True) as repos:
        page = await repos.for_model(ToolApproval).list(query)
    return list(page.items)


async def ensure_run_waits(store: DocumentStore, approval: ToolApproval) -> None:
    """Conflict unless the approval's run is awaiting approval (halted or ended runs have
    nothing left to decide)."""
    if approval.status is not ApprovalStatus.PENDING:
        return  # `decide` names the approval's own state
    async with store.unit_of_work(readonly=True) as repos:
        task: TaskExecution | None = await repos.task_executions.find_one(
            eq("id", approval.task_id)
        )
    status = task.status if task is not None else None
    # RUNNING: the run is still pausing (the approval exists, the runner parks it next).
    if status not in (TaskStatus.AWAITING_APPROVAL, TaskStatus.RUNNING):
        shown = status.value if status is not None else "deleted"
        raise Conflict(
            f"the run {approval.task_id} of approval {approval.id} is {shown}: there is "
            "nothing left to decide",
            details={"task_status": shown},
        )
