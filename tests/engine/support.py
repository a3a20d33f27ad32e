"""Helpers of the engine scenario tests: an event recorder, a halt switch, spec builders."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from tbd_agents.runtime.contracts import EventType


class Recorder:
    """An EventSink that keeps every event in order."""

    def __init__(self) -> None:
        self.events: list[tuple[EventType, dict[str, Any]]] = []

    async def emit(self, event_type: EventType, data: Mapping[str, Any]) -> None:
        self.events.append((event_type, dict(data)))

    def of(self, kind: EventType) -> list[dict[str, Any]]:
        return [d for t, d in self.events if t is kind]


class Switch:
    """A HaltSignal the test flips."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


def pairs_ok(conversation: list[dict[str, Any]]) -> bool:
    """Every tool result in a recorded request answers a call made just before it."""
    pending: set[str] = set()
    for entry in conversation:
        for call_id, _ in entry["tool_results"]:
            if call_id not in pending:
                return False
            pending.discard(call_id)
        if entry["tool_calls"]:
            if pending:
                return False
            pending = {c[0] for c in entry["tool_calls"]}
    return not pending
