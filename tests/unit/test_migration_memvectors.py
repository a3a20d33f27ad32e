"""The rows of the memory vectors step, from migrated memory rows: the memory service's record,
and the memories that get no vector (counted or warned about, never written)."""

from __future__ import annotations

import math
from typing import Any

from tbd_agents.domain.enums import MemoryScope
from tbd_agents.domain.models import Memory
from tbd_agents.services.memory import MemoryService
from tbd_agents.tools.migration.memvectors import embedding_batch, vector_row
from tbd_agents.tools.migration.vectors import float32


def memory(**values: Any) -> dict[str, Any]:
    row = {
        "id": "m1",
        "agent_id": "a1",
        "scope": "session",
        "session_id": "s1",
        "created_by": "alice",
        "key": "topic",
        "value": "invoices",
        "embedding": [0.1, -0.2, 0.3],
    }
    return row | values


def test_the_row_is_the_memory_services_record() -> None:
    row, warning = vector_row(memory(), 3)
    assert warning is None
    record = MemoryService._vector_record(
        Memory(
            id="m1",
            agent_id="a1",
            scope=MemoryScope.SESSION,
            session_id="s1",
            created_by="alice",
            key="topic",
            value="invoices",
        ),
        [0.1, -0.2, 0.3],
    )
    assert row == {
        "id": record.id,
        "text": record.text,
        **record.payload,
        "embedding": float32(record.vector),
    }
    assert row is not None and row["text"] == "topic: invoices" and row["owner"] == "alice"


def test_memories_without_a_usable_embedding_get_no_row() -> None:
    rows = [
        memory(id="ok"),
        memory(id="null", embedding=None),
        memory(id="empty", embedding=[]),
        memory(id="wide", embedding=[0.0] * 4),
        memory(id="nan", embedding=[0.1, math.nan, 0.3]),
        memory(id="inf", embedding=[0.1, math.inf, 0.3]),
        memory(id="huge", embedding=[0.1, 1e39, 0.3]),
    ]
    batch = embedding_batch(rows, 3)
    assert [r["id"] for r in batch.rows] == ["ok"]
    assert batch.read == 7 and batch.no_embedding == 2
    warned = {w.id: w.message for w in batch.warnings}
    assert set(warned) == {"wide", "nan", "inf", "huge"}
    assert warned["wide"].startswith("embedding of another dimension: 4 dimensions, ")
    assert "memory_vectors holds 3" in warned["wide"]
    assert "`tbd-agents vectors reembed memories`" in warned["wide"]
    assert all(warned[i].startswith("embedding not storable:") for i in ("nan", "inf", "huge"))
