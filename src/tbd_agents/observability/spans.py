"""Our own OpenTelemetry spans and the W3C trace context that links the API to the worker.

Only the OpenTelemetry *API* is used here: the SDK (exporters, sampling, resource) is set up by
`observability.tracing` at process start. Without an SDK every call below is the API's no-op,
so instrumented code costs next to nothing when tracing is off.

The span tree of a run is::

    <API request span>                     (FastAPI auto-instrumentation, in the API process)
      invoke_agent <agent>                 (the run: runtime/runner.py, in whichever process)
        chat <model>                       (one per model call: observability/model_calls.py)
        execute_tool <tool>                (one per tool call: engine/loop.py)
        knowledge_retrieval / memory_recall / guardrail <stage> / context_compaction …

The run span's parent is the `traceparent` stored on the run when it was created
(`TaskExecution.trace_parent`), so the run joins the trace of the request that started it even
when it runs in another process or was dispatched later by the upkeep loop. A run created by the
scheduler carries the scheduler's `schedule_fire` span, which starts a trace of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACER_NAME = "tbd_agents"
#: A proxy until the SDK installs a provider; then it delegates to the real tracer.
tracer = trace.get_tracer(TRACER_NAME)
_propagator = TraceContextTextMapPropagator()

#: Span attribute values must be primitives; longer text is cut to this many characters.
MAX_ATTRIBUTE_CHARS = 4096


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, or None when there is no valid span (no SDK,
    or no span in progress): what a run stores when it is created."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context whose remote parent is `traceparent`; None when absent or malformed (the
    propagator ignores a malformed header; then the run starts a trace of its own)."""
    if not traceparent:
        return None
    ctx = _propagator.extract({"traceparent": traceparent})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        log.warning("stored traceparent %r is not valid W3C trace context; ignored", traceparent)
        return None
    return ctx


def clip(text: str, limit: int = MAX_ATTRIBUTE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` without the None ones (OpenTelemetry refuses None attribute values)."""
    return {k: v for k, v in values.items() if v is not None}


def fail(span: Span, error_type: str, description: str | None = None) -> None:
    """Mark `span` failed per the semantic conventions: `error.type` and an ERROR status."""
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description))


@contextmanager
def span(
    name: str,
    attrs: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: otel_context.Context | None = None,
) -> Iterator[Span]:
    """A current span named `name`; an exception leaving the block marks it failed
    (`error.type` = the exception's class) and is re-raised. Cancellation is not a failure."""
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes(attrs or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if isinstance(exc, Exception):
                fail(current, type(exc).__name__, clip(str(exc), 300))
            raise


def tool_origin(source: str) -> str:
    """The origin of a tool (`builtin`, `mcp`, `custom`, `plugin`) from its `source` string
    (`builtin`, `mcp:<server>`, `custom:<name>`, `plugin:<name>`)."""
    head = source.partition(":")[0]
    return head if head in ("builtin", "mcp", "custom", "plugin") else "unknown"
