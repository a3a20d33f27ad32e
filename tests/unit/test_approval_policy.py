"""The tool policy's rules and the approval gate, as pure functions: matching by tool glob, by
origin (MCP server name or id), by argument patterns; the workflow's rules before the agent's;
defaults; validation messages that name the bad rule; the signed link's token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tbd_agents.domain.approvals import ToolAction, ToolApproval, ToolPolicy, evaluate, parse_policy
from tbd_agents.engine.approval import ApprovalGate, Decision
from tbd_agents.engine.messages import ToolCall
from tbd_agents.errors import PermissionDenied
from tbd_agents.security.cipher import TokenCipher, generate_fernet_key
from tbd_agents.services.approvals import check_token, link_token, links


def policy(*rules: dict[str, object], **rest: object) -> ToolPolicy:
    parsed = parse_policy({"rules": list(rules), **rest})
    assert parsed is not None
    return parsed


def action(policies: list[tuple[str, ToolPolicy | None]], tool: str, **args: object) -> str:
    return evaluate(policies, tool, frozenset({"mcp:files", "files", "srv-1"}), args).action.value


def test_rules_match_by_glob_origin_and_argument_patterns() -> None:
    agent = policy(
        {"tool": "read_*", "action": "always"},
        {"tool": "write_file", "args": {"path": "^/etc/"}, "action": "never"},
        {"server": "srv-1", "action": "ask"},
    )
    policies: list[tuple[str, ToolPolicy | None]] = [("workflow", None), ("agent", agent)]
    assert action(policies, "read_file") == "always"
    assert action(policies, "write_file", path="/etc/passwd") == "never"
    assert action(policies, "write_file", path="/tmp/x") == "ask"  # by the server's id
    assert action(policies, "write_file", path=42) == "ask"  # not a string: no match
    assert action([("agent", None)], "anything") == "always"  # no policy: no approvals


def test_the_workflow_comes_first_then_the_defaults() -> None:
    workflow = policy({"tool": "delete_*", "action": "always"}, default="never")
    agent = policy({"tool": "*", "action": "ask"}, timeout_seconds=60, on_timeout="fail")
    both: list[tuple[str, ToolPolicy | None]] = [("workflow", workflow), ("agent", agent)]
    assert action(both, "delete_file") == "always"
    verdict = evaluate(both, "other", frozenset(), {})
    assert (verdict.action, verdict.rule) == (ToolAction.ASK, "agent rule 0: tool=* → ask")
    assert (verdict.timeout_seconds, verdict.on_timeout) == (60, "fail")
    defaults: list[tuple[str, ToolPolicy | None]] = [
        ("workflow", policy(default="ask")),
        ("agent", policy(default="never")),
    ]
    assert evaluate(defaults, "x", frozenset(), {}).rule == "workflow default"
    assert action([("workflow", policy()), ("agent", policy(default="never"))], "x") == "never"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"rules": [{"action": "ask"}, {"args": {"p": "(["}, "action": "ask"}]},
         "tool_policy.rules.1.args"),
        ({"rules": [{"tool": "x", "action": "sometimes"}]}, "tool_policy.rules.0.action"),
        ({"rules": [{"tool": "x"}]}, "tool_policy.rules.0.action"),
        ({"rules": [{"tool": "x", "action": "ask", "colour": "red"}]}, "tool_policy.rules.0.colour"),
        ({"timeout_seconds": 0}, "tool_policy.timeout_seconds"),
        ({"on_timeout": "explode"}, "tool_policy.on_timeout"),
    ],
)  # fmt: skip
def test_a_bad_policy_names_what_is_wrong(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        parse_policy(raw)


def test_the_gate_applies_decisions_and_refusals() -> None:
    gate = ApprovalGate([("agent", policy({"tool": "rm", "action": "ask"},
                                          {"tool": "drop", "action": "never"}))])  # fmt: skip
    rm = ToolCall("c1", "rm", {"path": "/a"})
    assert gate.waiting(rm, "builtin") is not None
    gate.decisions = {"c1": Decision("approved", {"path": "/b"}, "ann")}
    assert gate.waiting(rm, "builtin") is None
    call, ruled = gate.ruling(rm, "builtin")
    assert ruled is None and call.arguments == {"path": "/b"}
    gate.decisions = {"c1": Decision("denied", None, "ann", "no")}
    _, denied = gate.ruling(rm, "builtin")
    assert denied is not None and "denied by ann: no" in denied.content
    _, refused = gate.ruling(ToolCall("c2", "drop", {}), "builtin")
    assert refused is not None and "refused by policy (agent rule 1" in refused.content
    chat = ApprovalGate(gate.policies, can_pause=False)
    assert not chat.active and chat.waiting(rm, "builtin") is not None
    _, no_wait = chat.ruling(ToolCall("c3", "rm", {}), "builtin")
    assert no_wait is not None and "cannot wait" in no_wait.content


def test_the_link_token_is_bound_to_the_approval_and_its_expiry() -> None:
    approval = ToolApproval(
        task_id="t", workflow_id="w", tool_name="rm",
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    key = b"k" * 32
    token = link_token(key, approval)
    check_token([key], approval, token)
    check_token([b"n" * 32, key], approval, token)  # an older key of the ring
    with pytest.raises(PermissionDenied):
        check_token([b"x" * 32], approval, token)
    later = approval.model_copy(update={"expires_at": approval.expires_at + timedelta(hours=1)})
    with pytest.raises(PermissionDenied):
        check_token([key], later, token)
    urls = links(approval, key, "https://hub.example/")
    assert (
        urls["decide_url"]
        == f"https://hub.example/api/approvals/{approval.id}/decide?token={token}"
    )
    assert urls["approve_url"].endswith(f"/api/approvals/{approval.id}/approve")


def test_link_keys_follow_the_key_ring_newest_first() -> None:
    old, new = generate_fernet_key(), generate_fernet_key()
    before = TokenCipher({1: old})
    after = TokenCipher({2: new, 1: old})
    assert after.derive_keys("links") == (TokenCipher({2: new}).derive_key("links"),
                                          before.derive_key("links"))  # fmt: skip
    assert after.derive_key("links") != before.derive_key("links")
    assert after.derive_key("other") != after.derive_key("links")
