"""Human approval of tool calls: the per-tool policy of agents and workflows, and the approval
record of a call that waits for a decision.

A policy (`Agent.tool_policy`, `Workflow.tool_policy`, stored as JSON) is a list of rules, each
matching calls by tool name (a glob), by where the tool comes from (an MCP server's name or id,
or a custom tool / plugin name) and by patterns on top-level string arguments (regular
expressions), with an action: `always` (run it), `never` (refuse it: the model is told so and
the run goes on) or `ask` (pause the run until a human decides). The workflow's rules are
checked first, then the agent's; the first rule that matches decides. With no matching rule the
workflow's `default` applies, else the agent's, else `always` — so no policy means no approvals,
as before the feature existed.

Not one of the guide's 15 collections: `ToolApproval` is an extra table (`tool_approvals`) in
PostgreSQL and an extra collection in MongoDB, stored through the same repository protocol as
agent versions.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tbd_agents.domain.models import Entity, Json
from tbd_agents.domain.types import LenientEnum, UtcDatetime


class ToolAction(StrEnum):
    ALWAYS = "always"
    NEVER = "never"
    ASK = "ask"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


#: Longest wait for a decision a policy may set (30 days).
MAX_APPROVAL_SECONDS = 30 * 24 * 3600
DEFAULT_APPROVAL_SECONDS = 3600


class PolicyRule(BaseModel):
    """One rule: every criterion given must match (an empty rule matches every call)."""

    model_config = ConfigDict(extra="forbid")

    #: Tool name glob (`fnmatch`: `*`, `?`, `[...]`), e.g. `write_*`.
    tool: str | None = Field(default=None, min_length=1, max_length=200)
    #: An MCP server's name or id, or a custom tool's / plugin's name (the tool's origin).
    server: str | None = Field(default=None, min_length=1, max_length=200)
    #: Top-level argument name → regular expression searched in its string value; a call whose
    #: argument is absent or not a string does not match.
    args: dict[str, str] = Field(default_factory=dict)
    action: ToolAction

    @field_validator("args")
    @classmethod
    def _patterns_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"args.{name}: {pattern!r} is not a regular expression: {exc}"
                ) from None
        return value

    def matches(self, tool: str, origins: frozenset[str], arguments: dict[str, Any]) -> bool:
        if self.tool is not None and not fnmatch.fnmatchcase(tool, self.tool):
            return False
        if self.server is not None and self.server not in origins:
            return False
        for name, pattern in self.args.items():
            value = arguments.get(name)
            if not isinstance(value, str) or re.search(pattern, value) is None:
                return False
        return True

    def describe(self) -> str:
        parts = [f"tool={self.tool}"] if self.tool else []
        if self.server:
            parts.append(f"server={self.server}")
        parts += [f"args.{k}~{v}" for k, v in self.args.items()]
        return f"{' '.join(parts) or 'any call'} → {self.action.value}"


class ToolPolicy(BaseModel):
    """The `tool_policy` of an agent or a workflow (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[PolicyRule] = Field(default_factory=list, max_length=200)
    #: The action when no rule matches; None leaves it to the agent's policy (then `always`).
    default: ToolAction | None = None
    #: How long an `ask` waits for a decision.
    timeout_seconds: int = Field(default=DEFAULT_APPROVAL_SECONDS, ge=1, le=MAX_APPROVAL_SECONDS)
    #: What an unanswered `ask` becomes: `deny` (the model is told; the run goes on) or `fail`.
    on_timeout: Literal["deny", "fail"] = "deny"


def parse_policy(value: Json | None, where: str = "tool_policy") -> ToolPolicy | None:
    """The policy of a stored or submitted `tool_policy`; ValueError naming the bad rule (and
    what is wrong with it) otherwise."""
    if value is None:
        return None
    try:
        return ToolPolicy.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}.{path}: {first['msg']}") from None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a policy says about one call, and why (the rule, for the approval record)."""

    action: ToolAction
    rule: str
    timeout_seconds: int = DEFAULT_APPROVAL_SECONDS
    on_timeout: str = "deny"


def evaluate(
    policies: list[tuple[str, ToolPolicy | None]],
    tool: str,
    origins: frozenset[str],
    arguments: dict[str, Any],
) -> Verdict:
    """The verdict of `policies` (workflow's first, then the agent's; (label, policy)) on a call
    of `tool` from `origins` (its server's name and id, or its custom tool/plugin name)."""
    present = [(label, p) for label, p in policies if p is not None]
    for label, policy in present:
        for index, rule in enumerate(policy.rules):
            if rule.matches(tool, origins, arguments):
                return Verdict(
                    rule.action,
                    f"{label} rule {index}: {rule.describe()}",
                    policy.timeout_seconds,
                    policy.on_timeout,
                )
    for label, policy in present:
        if policy.default is not None:
            return Verdict(
                policy.default, f"{label} default", policy.timeout_seconds, policy.on_timeout
            )
    first = present[0][1] if present else ToolPolicy()
    return Verdict(ToolAction.ALWAYS, "no policy", first.timeout_seconds, first.on_timeout)


class ToolApproval(Entity):
    """A tool call waiting for (or given) a human decision."""

    collection = "tool_approvals"
    owner_field = "owner"

    task_id: str
    workflow_id: str
    #: The workflow's owner: who may decide (admins too).
    owner: str | None = None
    tool_name: str
    #: The model's id of the call (its tool result answers this id).
    call_id: str = ""
    #: The tool's origin: `mcp:<server>`, `custom:<name>`, `builtin:`, `plugin:<name>`.
    origin: str = ""
    arguments: Json = Field(default_factory=dict)
    #: The tool's JSON schema, when known: edited arguments are checked against it.
    parameters: Json | None = None
    status: Annotated[ApprovalStatus, LenientEnum] = ApprovalStatus.PENDING
    #: The rule that asked.
    rule: str = ""
    decided_by: str | None = None
    decided_at: UtcDatetime | None = None
    #: Arguments the approver changed; the tool receives these instead.
    edited_arguments: Json | None = None
    reason: str | None = None
    expires_at: UtcDatetime
    #: `deny` or `fail`: what expiry does to the run.
    on_timeout: str = "deny"

    def expired_by(self, now: datetime) -> bool:
        return self.status is ApprovalStatus.PENDING and self.expires_at <= now
