"""The domain models: defaults, enums read leniently, time always UTC, schema derived from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from tbd_agents.domain.enums import McpTransport, MemoryScope, TaskStatus
from tbd_agents.domain.models import (
    ENTITIES,
    Agent,
    McpServer,
    Memory,
    ScheduledAgent,
    TaskExecution,
)
from tbd_agents.storage.postgres.schema import TABLES
from tbd_agents.tools.model_reference import render

ROOT = Path(__file__).resolve().parents[2]


def test_fifteen_entities_each_with_its_own_table() -> None:
    names = [e.collection for e in ENTITIES]
    assert len(set(names)) == 15
    # Feature modules may register further entity tables (e.g. api_keys); the 15 are all there.
    assert set(names) <= set(TABLES)


@pytest.mark.parametrize("model", ENTITIES, ids=lambda m: m.collection)
def test_every_field_is_a_column_of_the_same_name(model) -> None:
    assert [c.name for c in TABLES[model.collection].columns] == list(model.model_fields)


def test_defaults_match_the_guide() -> None:
    agent = Agent(name="a")
    assert agent.system_prompt == "You are a helpful assistant."
    assert agent.description == ""
    assert agent.mcp_server_ids == [] and agent.tool_definitions == []
    assert len(agent.id) == 36 and agent.created_at.tzinfo is UTC


def test_enum_values_are_read_case_insensitively() -> None:
    server = McpServer(name="m", transport_type="Streamable-HTTP")
    assert server.transport_type is McpTransport.STREAMABLE_HTTP
    assert Memory(agent_id="a", key="k", scope="GLOBAL").scope is MemoryScope.GLOBAL
    assert TaskExecution(workflow_id="w", status="Completed").status is TaskStatus.COMPLETED


def test_unknown_enum_value_is_rejected_with_the_field_name() -> None:
    with pytest.raises(ValidationError) as err:
        TaskExecution(workflow_id="w", status="exploded")
    assert err.value.errors()[0]["loc"] == ("status",)


def test_naive_datetimes_are_utc_and_aware_ones_are_converted() -> None:
    naive = datetime(2024, 3, 1, 12, 0)
    ist = datetime(2024, 3, 1, 17, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    a = ScheduledAgent(workflow_id="w", start_at=naive, end_at=ist)
    assert a.start_at == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert a.end_at == a.start_at and a.end_at.tzinfo is UTC


def test_interval_value_below_one_is_rejected() -> None:
    with pytest.raises(ValidationError):
        ScheduledAgent(workflow_id="w", interval_value=0)


def test_data_model_reference_page_is_current() -> None:
    page = (ROOT / "docs" / "data-model.md").read_text(encoding="utf-8")
    assert page == render(), (
        "regenerate: python -m tbd_agents.tools.model_reference > docs/data-model.md"
    )
