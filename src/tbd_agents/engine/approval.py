"""The tool policy as the agent loop applies it (`domain/approvals.py` defines the policy).

`ApprovalGate` says, for each tool call, whether it runs, is refused (`never`: the model gets
a refusal and the run goes on) or must wait for a human (`ask`). The loop pauses the run before
a batch of calls in which one must wait (none of the batch has run yet, so the conversation
can resume exactly there); the executor stores the pending calls as approval records. When the
run resumes, the gate carries the decisions of that pause, keyed by call id: an approved call
runs (with the approver's arguments, if they edited them), a denied or expired one answers the
model with the denial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tbd_agents.domain.approvals import ToolAction, ToolPolicy, Verdict, evaluate
from tbd_agents.engine.messages import ToolCall
from tbd_agents.engine.tools.base import ToolResult, origin_of


@dataclass(frozen=True, slots=True)
class Decision:
    """A human's answer to one waiting call (or its expiry)."""

    status: str  # approved | denied | expired
    arguments: dict[str, Any] | None = None  # the approver's edited arguments
    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PendingCall:
    """A call the run waits on, with what the approval record needs."""

    call: ToolCall
    source: str
    verdict: Verdict
    parameters: dict[str, Any] | None


@dataclass(slots=True)
class ApprovalGate:
    """The run's policies (workflow's first, then the agent's) and the decisions it resumes
    with."""

    policies: list[tuple[str, ToolPolicy | None]]
    #: MCP server name → id, so a rule may name a server by either.
    server_ids: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    #: False where a run cannot pause (a chat turn streams to a waiting client): an `ask` is
    #: then refused, with the reason, instead of waiting.
    can_pause: bool = True

    @property
    def active(self) -> bool:
        return self.can_pause and any(p is not None for _, p in self.policies)

    def origins(self, source: str) -> frozenset[str]:
        name = origin_of(source)["name"]
        found = {source, name, self.server_ids.get(name, "")} if name else {source}
        return frozenset(x for x in found if x)

    def verdict(self, call: ToolCall, source: str) -> Verdict:
        return evaluate(self.policies, call.name, self.origins(source), call.arguments)

    def waiting(self, call: ToolCall, source: str) -> Verdict | None:
        """The `ask` verdict of a call that has no decision yet, else None."""
        if call.id in self.decisions:
            return None
        verdict = self.verdict(call, source)
        return verdict if verdict.action is ToolAction.ASK else None

    def ruling(self, call: ToolCall, source: str) -> tuple[ToolCall, ToolResult | None]:
        """The call to execute (edited arguments applied), or the result that answers it
        without running it (refused by policy, denied, expired)."""
        decision = self.decisions.get(call.id)
        if decision is not None:
            if decision.status == "approved":
                if decision.arguments is not None:
                    call = ToolCall(call.id, call.name, dict(decision.arguments))
                return call, None
            if decision.status == "expired":
                text = "nobody decided before the approval expired, so it was denied"
            else:
                who = decision.by or "the approver"
                text = f"denied by {who}: {decision.reason or 'no reason given'}"
            return call, ToolResult(f"Error: the call to {call.name} was {text}", True)
        verdict = self.verdict(call, source)
        if verdict.action is ToolAction.NEVER:
            refusal = f"Error: the call to {call.name} was refused by policy ({verdict.rule})"
            return call, ToolResult(refusal, True)
        if verdict.action is ToolAction.ASK:  # only reached where the run cannot pause
            refusal = (
                f"Error: the call to {call.name} needs a person's approval ({verdict.rule}), "
                "which this run cannot wait for (a chat turn or a run it delegated to, a /v1 "
                "or /mcp request): run it in a workflow to have it approved"
            )
            return call, ToolResult(refusal, True)
        return call, None
