"""What a log record is about: the request's user, the run, the task, the agent, the workflow.

Entry points bind the values they know (`bind(user="alice")` in the API's authentication,
`bind(run_id=…, task_id=…, agent_id=…, workflow_id=…)` around a run) and the JSON log formatter
(`observability/jsonlog.py`) adds `current()` to every record made inside. The values live in a
`contextvars.ContextVar`, so they follow asyncio tasks and do not leak between concurrent requests.
Only ids and names go here, never a secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_fields: ContextVar[dict[str, str]] = ContextVar("tbd_log_fields", default={})  # noqa: B039


def current() -> dict[str, str]:
    """The fields bound in this context (a copy)."""
    return dict(_fields.get())


@contextmanager
def bind(**values: str | None) -> Iterator[None]:
    """Add `values` (None values are skipped) to the context for the `with` block."""
    merged = {**_fields.get(), **{k: str(v) for k, v in values.items() if v is not None}}
    token = _fields.set(merged)
    try:
        yield
    finally:
        _fields.reset(token)


def bind_here(**values: str | None) -> None:
    """Add `values` to the current context until it ends (an asyncio task, a request): for code
    that cannot wrap the rest of its work in `bind()`."""
    _fields.set({**_fields.get(), **{k: str(v) for k, v in values.items() if v is not None}})
