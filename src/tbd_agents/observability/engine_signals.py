"""The agent loop's signals: tool calls, context retrieval, compaction, guardrail verdicts.

The loop (engine/loop.py) calls these at the step they describe, so its own code stays about the
agent: each helper both counts the step's Prometheus series and opens (or annotates) its span.
The spans are children of the current one: the run's `invoke_agent` span, in workflow runs and
chat turns alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span

from tbd_agents.observability import metrics as m
from tbd_agents.observability.spans import clip, fail, span, tool_origin

if TYPE_CHECKING:  # the vector stores import this module: no engine import at run time
    from tbd_agents.engine.messages import ToolCall


@dataclass(slots=True)
class ToolCallSignals:
    """What `tool_call` needs to know once the call has ended (`ended`)."""

    span: Span
    origin: str
    capture_content: bool

    def ended(self, content: str, is_error: bool, seconds: float, *, blocked: bool = False) -> None:
        outcome = "blocked" if blocked else "error" if is_error else "ok"
        m.TOOL_DURATION.labels(self.origin, outcome).observe(seconds)
        if self.capture_content:
            self.span.set_attribute("gen_ai.tool.call.result", clip(content))
        if blocked:
            fail(self.span, "guardrail_blocked")
        elif is_error:
            fail(self.span, "tool_error")


@contextmanager
def tool_call(call: ToolCall, source: str, *, capture_content: bool) -> Iterator[ToolCallSignals]:
    """An `execute_tool <name>` span around one tool call, counting `tool_calls_total`; the
    caller reports the result with `ended(...)` (which observes the call's duration)."""
    origin = tool_origin(source)
    m.TOOL_CALLS.labels(m.bounded("tool_name", call.name)).inc()
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.id or None,
        "gen_ai.tool.type": "function",
        "tbd.tool.origin": origin,
    }
    if origin == "mcp":
        attrs["tbd.mcp.server.name"] = source.partition(":")[2]
    if capture_content:
        attrs["gen_ai.tool.call.arguments"] = clip(json.dumps(call.arguments, default=str))
    with span(f"execute_tool {call.name}", attrs) as current:
        yield ToolCallSignals(current, origin, capture_content)


@contextmanager
def retrieval(kind: str) -> Iterator[Span]:
    """A `knowledge_retrieval` / `memory_recall` span; `retrieved(...)` counts the results."""
    name = "knowledge_retrieval" if kind == "knowledge" else "memory_recall"
    with span(name, {"gen_ai.operation.name": "retrieval", "tbd.retrieval.type": kind}) as s:
        yield s


def retrieved(current: Span, kind: str, count: int) -> None:
    """Count one retrieval of `count` results (`semantic_retrieval_*{type=kind}`)."""
    m.RETRIEVAL_RESULTS.labels(kind).observe(count)
    if count:
        m.RETRIEVAL_HITS.labels(kind).inc()
    current.set_attribute("tbd.retrieval.results", count)


@contextmanager
def compaction(model: str) -> Iterator[Span]:
    """A `context_compaction` span around one compaction check (its summary call, if any, is a
    `chat` child span); `compacted(...)` counts the ones that changed the context."""
    with span("context_compaction", {"gen_ai.request.model": model}) as s:
        yield s


def compacted(current: Span, model: str, report: Any) -> None:
    """Count a compaction (`context_compactions_total`, `context_compaction_messages_dropped`)
    when it changed the context; describe it on the span either way."""
    current.set_attributes(
        {
            "tbd.compaction.changed": bool(report.changed),
            "tbd.compaction.before_tokens": int(report.before_tokens),
            "tbd.compaction.after_tokens": int(report.after_tokens),
        }
    )
    if report.changed:
        label = m.bounded("model", model)
        m.COMPACTIONS.labels(label).inc()
        dropped = report.summarised_messages + report.cleared_tool_results
        m.COMPACTION_DROPPED.labels(label).observe(dropped)


@contextmanager
def vector_search(backend: str, collection: str) -> Iterator[None]:
    """Time one nearest-neighbour search (`tbd_vector_search_duration_seconds{backend,kind}`;
    kind `knowledge` or `memory` from the collection, `other` for a name that is neither) in a
    `vector_search` span."""
    kind = (
        "memory" if "memor" in collection else "knowledge" if "knowledge" in collection else "other"
    )
    started = time.monotonic()
    attrs = {"db.system.name": backend, "db.collection.name": collection, "tbd.vector.kind": kind}
    try:
        with span("vector_search", attrs):
            yield
    finally:
        m.VECTOR_SEARCH_DURATION.labels(backend, kind).observe(time.monotonic() - started)


def guardrail_checked(stage: str, verdict: Any, current: Span) -> None:
    """Count one guardrail check (`tbd_guardrail_checks_total{stage,outcome}`) by its verdict:
    blocked, redacted, warned (flagged only) or passed; describe it on its span."""
    actions = {v.action.value for v in verdict.violations}
    if verdict.blocked:
        outcome = "blocked"
    elif "redact" in actions:
        outcome = "redacted"
    elif actions:
        outcome = "warned"
    else:
        outcome = "passed"
    m.GUARDRAIL_CHECKS.labels(stage, outcome).inc()
    current.set_attribute("tbd.guardrail.outcome", outcome)
    if verdict.violations:
        current.set_attribute(
            "tbd.guardrail.names", sorted({v.guardrail for v in verdict.violations})
        )
