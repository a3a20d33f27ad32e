"""Server-sent events, read line by line (the WHATWG event-stream rules the API follows)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class SSEMessage:
    """One dispatched event: its joined `data` lines, `event` name, `id` and `retry`."""

    data: str
    event: str | None = None
    event_id: str | None = None
    retry: int | None = None


class _Pending:
    def __init__(self) -> None:
        self.data: list[str] = []
        self.event: str | None = None
        self.event_id: str | None = None
        self.retry: int | None = None

    def empty(self) -> bool:
        return not self.data and self.event is None and self.event_id is None and self.retry is None

    def take(self) -> SSEMessage:
        message = SSEMessage("\n".join(self.data), self.event, self.event_id, self.retry)
        self.__init__()  # type: ignore[misc]
        return message


def iter_sse_messages(lines: Iterable[str]) -> Iterator[SSEMessage]:
    """Group `lines` (without their line ends) into events; comments (`: keepalive`) skipped."""
    pending = _Pending()
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if not pending.empty():
                yield pending.take()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            pending.data.append(value)
        elif name == "event":
            pending.event = value
        elif name == "id":
            pending.event_id = value
        elif name == "retry" and value.isdigit():
            pending.retry = int(value)
    if not pending.empty():
        yield pending.take()
