"""A span per SQL statement, inside traced work only.

The spans are opened around the engine's dialect methods that send a statement to the driver
(`do_execute`, `do_execute_no_params`, `do_executemany`, wrapped on the engine's own dialect
object), and by the direct asyncpg path of `storage/postgres/direct.py` through `start` / `end`.
No SQLAlchemy event listener is involved, and that is the point:

- a statement gets a span only when a recording span is current (a traced request, a run): the
  background loops' polling statements (scheduler, upkeep, webhooks, every second or so) would
  otherwise each start a trace of their own and drown the real ones;
- a statement outside traced work costs one context lookup. Connection event listeners (what
  opentelemetry-instrumentation-sqlalchemy's EngineTracer, which this replaced, and this module's
  first version used) switch every connection of the engine to SQLAlchemy's dispatching path and
  cost every statement of every untraced request (`benchmarks/RESULTS.md`, "Observability
  overhead").

Attributes follow the database semantic conventions: `db.system.name` (and the older
`db.system`) `postgresql`, `db.namespace`, `db.operation.name`, `db.query.text` (the statement
with placeholders, never the values), `server.address` / `server.port`; a failed statement has `error.type` (the exception's class)
and `db.response.status_code` (the SQLSTATE) and an error status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

#: Longest statement text kept on a span.
MAX_QUERY_CHARS = 2_000
#: The dialect methods that hand a statement to the DB-API cursor.
_SENDERS = ("do_execute", "do_execute_no_params", "do_executemany")


def _operation(statement: str) -> str:
    word = statement.lstrip(" (\n\t").split(None, 1)
    return word[0].upper() if word else "SQL"


class StatementSpans:
    """The statement spans of one (sync) engine; installing it wraps the engine's dialect."""

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
        dialect = sync_engine.dialect
        for name in _SENDERS:
            setattr(dialect, name, self._traced(getattr(dialect, name)))

    def start(self, statement: str) -> Span | None:
        """The statement's span, started, when traced work is current; else None."""
        if not trace.get_current_span().is_recording():
            return None
        operation = _operation(statement)
        return self.tracer.start_span(
            operation,
            kind=SpanKind.CLIENT,
            attributes={
                **self.attributes,
                "db.operation.name": operation,
                "db.query.text": statement[:MAX_QUERY_CHARS],
            },
        )

    @staticmethod
    def end(span: Span, failure: BaseException | None = None) -> None:
        """End `span`, marked as failed by `failure` (a cancellation is not a failure)."""
        if failure is not None and not isinstance(failure, asyncio.CancelledError):
            span.set_attribute("error.type", type(failure).__name__)
            sqlstate = getattr(failure, "sqlstate", None)
            if sqlstate:
                span.set_attribute("db.response.status_code", str(sqlstate))
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _traced(self, send: Callable[..., Any]) -> Callable[..., Any]:
        def traced(cursor: Any, statement: str, *rest: Any) -> Any:
            span = self.start(statement)
            if span is None:
                return send(cursor, statement, *rest)
            try:
                result = send(cursor, statement, *rest)
            except BaseException as exc:
                self.end(span, exc)
                raise
            self.end(span)
            return result

        return traced
