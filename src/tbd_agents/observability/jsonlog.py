"""JSON-lines log records (`LOG_FORMAT=json`), for log shippers (Loki, Elasticsearch, …).

One object per line: `timestamp` (ISO-8601 UTC, milliseconds), `level`, `logger`, `message`,
`exception` / `stack` when the record has them, `trace_id` / `span_id` of the OpenTelemetry span
recording when the record was made (so a log line leads to its trace), and the context fields
bound with `observability.logctx` (user, run_id, task_id, agent_id, workflow_id).

Secrets are masked before a record reaches any formatter: `logs.install_redaction` scrubs the
message, arguments and exception text when the record is created; this formatter only lays out
what is already clean.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from tbd_agents.logs import redact
from tbd_agents.observability import logctx

#: Context fields a record made inside `logctx.bind(...)` carries (the order of the output).
CONTEXT_FIELDS = ("user", "run_id", "task_id", "agent_id", "workflow_id")


def _span_ids() -> dict[str, str]:
    try:
        from opentelemetry import trace
    except ImportError:  # the SDK is a dependency; without it there are no spans either
        return {}
    span = trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid or not span.is_recording():
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:  # a record made before redaction was on
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        entry.update(_span_ids())
        entry.update(logctx.current())
        return json.dumps(entry, ensure_ascii=False, default=str)
