"""Keeping a long run inside the model's context window.

When the conversation exceeds `threshold` times the budget, compaction works in two steps, stopping
as soon as it fits:

1. clear old tool results: the content of tool results older than the last
   `keep_recent_tool_groups` tool-call groups is replaced by a short note (the tool message
   itself stays, so every call keeps its result);
2. summarise the middle: the system messages and the first user message stay, the most recent
   groups that fit in `tail_ratio` of the budget stay verbatim, and everything between is replaced
   by one summary message written by the model (or, if that fails, a plain note).

Messages are handled in groups (an assistant message with tool calls together with all of its
tool results), and cuts only fall between groups, so a tool call is never separated from its
result.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tbd_agents.engine.messages import Message
from tbd_agents.engine.tokens import count_message, count_messages

log = logging.getLogger(__name__)

Summariser = Callable[[list[Message]], Awaitable[str]]
SUMMARY_PREFIX = "[Summary of the earlier conversation]\n"


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    threshold: float = 0.8
    keep_recent_tool_groups: int = 2
    tail_ratio: float = 0.5
    #: Compaction on or off (COMPACTION_ENABLED; off: the loop never calls `compact`).
    enabled: bool = True
    #: Step 1 on or off (TOOL_RESULT_CLEARING_ENABLED).
    clear_tool_results: bool = True
    #: Longest summary kept, in characters (COMPACTION_SUMMARY_MAX_CHARS; None: no limit).
    summary_max_chars: int | None = None


@dataclass(slots=True)
class CompactionReport:
    before_tokens: int
    after_tokens: int
    cleared_tool_results: int = 0
    summarised_messages: int = 0
    summary_failed: str | None = None

    @property
    def changed(self) -> bool:
        return self.cleared_tool_results > 0 or self.summarised_messages > 0

    def to_dict(self) -> dict[str, object]:
        return {
            "before_tokens": self.before_tokens,
            "after_tokens": self.after_tokens,
            "cleared_tool_results": self.cleared_tool_results,
            "summarised_messages": self.summarised_messages,
            "summary_failed": self.summary_failed,
        }


def group(messages: list[Message]) -> list[list[Message]]:
    """Split into atomic groups: an assistant message with its tool results, or one message."""
    groups: list[list[Message]] = []
    for m in messages:
        if m.role == "tool" and groups and (groups[-1][0].tool_calls):
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


def _transcript(messages: list[Message]) -> str:
    lines = []
    for m in messages:
        if m.role == "tool":
            lines.append(f"tool result ({m.name}): {m.content[:2000]}")
        elif m.tool_calls:
            calls = ", ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
            lines.append(f"assistant: {m.content} [called {calls}]")
        else:
            lines.append(f"{m.role}: {m.content}")
    return "\n".join(lines)


def summary_request(messages: list[Message], max_chars: int | None = None) -> list[Message]:
    """The messages sent to the model to summarise `messages` (in at most `max_chars`)."""
    limit = f" Write at most {max_chars} characters." if max_chars is not None else ""
    return [
        Message(
            "system",
            "You compress conversations. Summarise the transcript below for the assistant that "
            "will continue it: keep facts, decisions, tool results that still matter, open "
            "questions and the user's goals. Be concise; no preamble." + limit,
        ),
        Message("user", _transcript(messages)),
    ]


async def compact(
    messages: list[Message],
    budget_tokens: int,
    summarise: Summariser | None,
    policy: CompactionPolicy = CompactionPolicy(),
) -> tuple[list[Message], CompactionReport]:
    """Return `messages` shrunk below `policy.threshold * budget_tokens` when possible."""
    limit = int(budget_tokens * policy.threshold)
    before = count_messages(messages)
    report = CompactionReport(before, before)
    if before <= limit:
        return messages, report
    head = [m for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    groups = group(rest)

    # Step 1: clear old tool results, oldest first.
    tool_groups = (
        [i for i, g in enumerate(groups) if len(g) > 1] if policy.clear_tool_results else []
    )
    old = tool_groups[: max(0, len(tool_groups) - policy.keep_recent_tool_groups)]
    total = before
    for i in old:
        if total <= limit:
            break
        cleared = [groups[i][0]]
        for m in groups[i][1:]:
            note = f"[tool result cleared to save context: {count_message(m)} tokens]"
            total -= count_message(m) - count_message(
                Message("tool", note, tool_call_id=m.tool_call_id)
            )
            cleared.append(Message("tool", note, tool_call_id=m.tool_call_id, name=m.name))
            report.cleared_tool_results += 1
        groups[i] = cleared
    if total <= limit:
        out = head + [m for g in groups for m in g]
        report.after_tokens = count_messages(out)
        return out, report

    # Step 2: summarise the middle; keep the first user turn and a recent tail.
    first = groups[:1] if groups and groups[0][0].role == "user" else []
    body = groups[len(first) :]
    tail: list[list[Message]] = []
    tail_budget = int(limit * policy.tail_ratio)
    used = 0
    for g in reversed(body):
        cost = count_messages(g)
        if tail and used + cost > tail_budget:
            break
        tail.insert(0, g)
        used += cost
    middle = [m for g in body[: len(body) - len(tail)] for m in g]
    if not middle:
        out = head + [m for g in groups for m in g]
        report.after_tokens = count_messages(out)
        return out, report
    summary = ""
    if summarise is not None:
        try:
            summary = (await summarise(middle)).strip()
        except Exception as exc:
            report.summary_failed = f"{type(exc).__name__}: {exc}"
            log.warning("compaction summary failed: %s", report.summary_failed)
    if not summary:
        summary = f"{len(middle)} earlier messages were removed to fit the context window."
    elif policy.summary_max_chars is not None and len(summary) > policy.summary_max_chars:
        summary = summary[: policy.summary_max_chars - 1].rstrip() + "…"
    report.summarised_messages = len(middle)
    out = head + [m for g in first for m in g] + [Message("user", SUMMARY_PREFIX + summary)]
    out += [m for g in tail for m in g]
    report.after_tokens = count_messages(out)
    return out, report


def pairs_intact(messages: list[Message]) -> bool:
    """True when every tool result follows the call it answers and every call has a result."""
    pending: set[str] = set()
    for m in messages:
        if m.role == "tool":
            if m.tool_call_id not in pending:
                return False
            pending.discard(m.tool_call_id)
        else:
            if pending:
                return False
            pending = {c.id for c in m.tool_calls}
    return not pending
