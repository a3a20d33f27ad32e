"""A span per SQL statement, inside traced work only.

Listeners on an engine's `before_cursor_execute` / `after_cursor_execute` / `handle_error`
events (SQLAlchemy's statement path, and the direct asyncpg path of `storage/postgres/direct.py`,
which announces its statements with a stand-in execution context and ends their spans itself).

Unlike opentelemetry-instrumentation-sqlalchemy's EngineTracer, which this replaces:

- a statement gets a span only when a recording span is current (a traced request, a run): the
  background loops' polling statements (scheduler, upkeep, webhooks, every second or so) would
  otherwise each start a trace of their own and drown the real ones;
- no pool listeners and no work at all for a statement outside traced work — measured as
  ~0.02 ms per API request with the EngineTracer, more than the rest of the tracing gate.

Attributes follow the database semantic conventions: `db.system.name` (and the older
`db.system`) `postgresql`, `db.namespace`, `db.operation.name`, `db.query.text` (the statement
with placeholders, never the values), `server.address` / `server.port`.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from sqlalchemy import event

#: Longest statement text kept on a span.
MAX_QUERY_CHARS = 2_000


def _operation(statement: str) -> str:
    word = statement.lstrip(" (\n\t").split(None, 1)
    return word[0].upper() if word else "SQL"


class StatementSpans:
    """The listeners of one (sync) engine."""

    def __init__(self, tracer: Tracer, sync_engine: Any) -> None:
        url = sync_engine.url
        self.tracer = tracer
        self.attributes: dict[str, Any] = {
            "db.system.name": "postgresql",
            "db.system": "postgresql",
            "db.namespace": url.database or "",
            "server.address": url.host or "localhost",
        }
        if url.port:
            self.attributes["server.port"] = int(url.port)
        event.listen(sync_engine, "before_cursor_execute", self.before)
        event.listen(sync_engine, "after_cursor_execute", self.after)
        event.listen(sync_engine, "handle_error", self.failed)

    def before(
        self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if context is None or not trace.get_current_span().is_recording():
            return
        operation = _operation(statement)
        span = self.tracer.start_span(
            operation,
            kind=SpanKind.CLIENT,
            attributes={
                **self.attributes,
                "db.operation.name": operation,
                "db.query.text": statement[:MAX_QUERY_CHARS],
            },
        )
        context._otel_span = span

    def after(
        self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        span = getattr(context, "_otel_span", None)
        if span is not None:
            context._otel_span = None
            span.end()

    def failed(self, exception_context: Any) -> None:
        context = getattr(exception_context, "execution_context", None)
        span = getattr(context, "_otel_span", None)
        if context is None or span is None:
            return
        context._otel_span = None
        error = exception_context.original_exception
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR))
        span.end()
