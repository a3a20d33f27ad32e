"""Human approval of tool calls: list, read and decide the approvals of paused runs.

Authorisation follows the runs': a caller sees and decides the approvals of the workflows it
owns (admins: all); deciding needs a writable key. The signed link
(`/api/approvals/{id}/decide?token=…`) needs no key: its token, bound to the approval and its
expiry, is the authorisation, and it decides once (services/approvals.py). After the last
pending approval of a pause is decided, the run is resumed through the runtime.
"""

from __future__ import annotations

import html
import json
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tbd_agents.api.crud import ERRORS, ErrorOut
from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.domain.approvals import ApprovalStatus, ToolApproval
from tbd_agents.errors import InvalidData
from tbd_agents.runtime.api import runtime_of
from tbd_agents.services import approvals as service
from tbd_agents.services.access import ensure_visible, owner_filters

router = APIRouter(
    tags=["approvals"],
    responses={**ERRORS, 410: {"model": ErrorOut, "description": "The approval expired"}},
)


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The arguments the tool receives instead of the model's (checked against its schema).
    arguments: dict[str, Any] | None = None
    reason: str | None = Field(default=None, max_length=2000)


class DenyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


def _key(ctx: ApiContext) -> bytes:
    return ctx.cipher().derive_key(service.LINK_PURPOSE)


def _shown(ctx: ApiContext, approval: ToolApproval) -> dict[str, Any]:
    out: dict[str, Any] = approval.model_dump(mode="json")
    out["links"] = service.links(approval, _key(ctx), ctx.settings.public_base_url)
    return out


async def _visible(ctx: ApiContext, caller: Any, approval_id: str) -> ToolApproval:
    approval = await service.get(ctx.store, approval_id)
    ensure_visible(approval, caller)
    return approval


async def _decide(
    ctx: ApiContext,
    approval: ToolApproval,
    *,
    approve: bool,
    by: str | None,
    arguments: dict[str, Any] | None = None,
    reason: str | None = None,
) -> ToolApproval:
    await service.ensure_run_waits(ctx.store, approval)
    runtime = runtime_of(ctx)
    decided = await service.decide(
        ctx.store, approval, approve=approve, by=by, arguments=arguments, reason=reason
    )
    data = {
        "approval_id": decided.id,
        "tool": decided.tool_name,
        "status": decided.status.value,
        "decided_by": decided.decided_by,
        "reason": decided.reason,
        "edited_arguments": decided.edited_arguments,
    }
    await runtime.approval_decided(decided.task_id, data)
    return decided


@router.get("/api/approvals", summary="Approvals of the caller's runs")
async def list_approvals(
    ctx: Ctx,
    caller: Caller,
    status: Annotated[
        str, Query(description="pending (default), approved, denied, expired, or all")
    ] = "pending",
    task_id: str | None = None,
    workflow_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[dict[str, Any]]:
    """The approvals of the caller's workflows (admins: all), newest first."""
    wanted: ApprovalStatus | None = None
    if status != "all":
        try:
            wanted = ApprovalStatus(status)
        except ValueError:
            raise InvalidData(
                f"status must be one of {', '.join(s.value for s in ApprovalStatus)} or all, "
                f"not {status!r}",
                details={"field": "status"},
            ) from None
    found = await service.list_for(
        ctx.store, owner_filters(ToolApproval, caller), status=wanted,
        task_id=task_id, workflow_id=workflow_id, limit=limit,
    )  # fmt: skip
    return [_shown(ctx, a) for a in found]


@router.get("/api/approvals/{approval_id}", summary="One approval")
async def get_approval(approval_id: str, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    return _shown(ctx, await _visible(ctx, caller, approval_id))


@router.post("/api/approvals/{approval_id}/approve", summary="Approve a waiting tool call")
async def approve(
    approval_id: str, ctx: Ctx, caller: Caller, body: ApproveIn | None = None
) -> dict[str, Any]:
    """The tool runs (with `arguments`, if given, instead of the model's) and the run
    resumes once no approval of its pause is pending. 409 when already decided or the run
    is not waiting; 410 when expired; 422 when `arguments` do not fit the tool's schema."""
    caller.require_write()
    approval = await _visible(ctx, caller, approval_id)
    given = body or ApproveIn()
    decided = await _decide(
        ctx, approval, approve=True, by=caller.identity,
        arguments=given.arguments, reason=given.reason,
    )  # fmt: skip
    return _shown(ctx, decided)


@router.post("/api/approvals/{approval_id}/deny", summary="Deny a waiting tool call")
async def deny(
    approval_id: str, ctx: Ctx, caller: Caller, body: DenyIn | None = None
) -> dict[str, Any]:
    """The model is told the call was denied (by whom, and `reason`) and the run goes on."""
    caller.require_write()
    approval = await _visible(ctx, caller, approval_id)
    reason = body.reason if body is not None else None
    decided = await _decide(ctx, approval, approve=False, by=caller.identity, reason=reason)
    return _shown(ctx, decided)


# --- the signed link ----------------------------------------------------------------------------
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Approve {tool}?</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}}
pre{{background:#f4f4f4;padding:.75rem;overflow:auto}}button{{font-size:1rem;margin-right:.5rem;
padding:.4rem 1rem}}</style></head><body>
<h1>Tool call awaiting approval</h1>
<p>Run <code>{task}</code> wants to call <strong>{tool}</strong> ({origin}).</p>
<p>Rule: {rule}<br>Expires: {expires}</p>
<h2>Arguments</h2><pre>{arguments}</pre>
{body}
</body></html>"""

_FORM = """<form method="post">
<label>Reason (optional) <input name="reason" maxlength="2000"></label>
<p><button name="decision" value="approve">Approve</button>
<button name="decision" value="deny">Deny</button></p></form>"""


def _page(approval: ToolApproval, body: str) -> str:
    return _PAGE.format(
        tool=html.escape(approval.tool_name),
        task=html.escape(approval.task_id),
        origin=html.escape(approval.origin or "unknown origin"),
        rule=html.escape(approval.rule),
        expires=html.escape(approval.expires_at.isoformat()),
        arguments=html.escape(json.dumps(approval.arguments, indent=2, ensure_ascii=False)),
        body=body,
    )


async def _linked(ctx: ApiContext, approval_id: str, token: str) -> ToolApproval:
    approval = await service.get(ctx.store, approval_id)
    service.check_token(ctx.cipher().derive_keys(service.LINK_PURPOSE), approval, token)
    return approval


@router.get(
    "/api/approvals/{approval_id}/decide",
    summary="The signed decision page (no API key: the token authorises)",
    responses={200: {"description": "The decision page", "content": {"text/html": {}}}},
)
async def decide_page(
    approval_id: str, ctx: Ctx, token: Annotated[str, Query(max_length=200)]
) -> HTMLResponse:
    approval = await _linked(ctx, approval_id, token)
    if approval.status is not ApprovalStatus.PENDING:
        state = html.escape(approval.status.value)
        return HTMLResponse(_page(approval, f"<p>Already decided: <strong>{state}</strong>.</p>"))
    return HTMLResponse(_page(approval, _FORM))


async def _link_decision(request: Request) -> tuple[str, str | None]:
    """(decision, reason) from a form post (the page) or a JSON body."""
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise InvalidData(f"the body is not JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise InvalidData('the body must be {"decision": "approve" | "deny", "reason": …}')
        decision, reason = data.get("decision"), data.get("reason")
    else:
        form = parse_qs(raw.decode("utf-8", "replace"))
        decision = next(iter(form.get("decision", [])), None)
        reason = next(iter(form.get("reason", [])), None)
    if decision not in ("approve", "deny"):
        raise InvalidData('decision must be "approve" or "deny"', details={"field": "decision"})
    if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
        raise InvalidData("reason must be text of at most 2000 characters")
    return str(decision), reason or None


@router.post(
    "/api/approvals/{approval_id}/decide",
    summary="Decide through the signed link (no API key; once)",
    responses={
        200: {
            "description": "The decided approval (an HTML page for a browser's form post)",
            "content": {"application/json": {}, "text/html": {}},
        }
    },
)
async def decide_link(
    approval_id: str,
    request: Request,
    ctx: Ctx,
    token: Annotated[str, Query(max_length=200)],
) -> Any:
    """`decision=approve|deny` (form or JSON, optional `reason`). The token must be the
    approval's; a second decision is 409, an expired approval 410."""
    approval = await _linked(ctx, approval_id, token)
    decision, reason = await _link_decision(request)
    decided = await _decide(
        ctx, approval, approve=decision == "approve", by="signed link", reason=reason
    )
    if "text/html" in request.headers.get("accept", ""):
        state = html.escape(decided.status.value)
        return HTMLResponse(_page(decided, f"<p>Decided: <strong>{state}</strong>.</p>"))
    return JSONResponse(decided.model_dump(mode="json"))
