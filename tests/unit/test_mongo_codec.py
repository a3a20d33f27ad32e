"""The MongoDB document codec, on documents that went through real BSON."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import bson
import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from bson.codec_options import CodecOptions
from pydantic import ValidationError

from tbd_agents.domain.enums import McpTransport, MemoryScope, TaskStatus, WorkflowStatus
from tbd_agents.domain.models import Agent, McpServer, Memory, TaskExecution, Workflow
from tbd_agents.errors import InvalidData
from tbd_agents.storage.mongo.codec import (
    ceil_ms,
    floor_ms,
    from_document,
    id_forms,
    id_text,
    plain_value,
    storage_id,
    to_document,
)

NAIVE = CodecOptions(tz_aware=False)
AWARE = CodecOptions(tz_aware=True, tzinfo=UTC)
OID = ObjectId("65a1b2c3d4e5f60718293a4b")
REF = ObjectId("65a1b2c3d4e5f60718293a4c")


def wire(doc: dict, options: CodecOptions = NAIVE) -> dict:
    """`doc` as the driver hands it back after a round trip through BSON."""
    return bson.decode(bson.encode(doc), codec_options=options)


def legacy_workflow() -> dict:
    return {
        "_id": OID,
        "agent_id": REF,
        "name": "nightly",
        "status": "MAX_TURNS_REACHED",
        "max_turns": Int64(12),
        "messages": [
            {"role": "user", "content": "hi", "tokens": Int64(2**40), "cost": Decimal128("0.25")},
            {"role": "tool", "refs": [REF, [Int64(1), Decimal128("3")]]},
        ],
        "logs": [{"at": datetime(2024, 5, 1, 12, 0, 0, 123000), "ok": True}],
        "github_user": "octocat",
        "created_at": datetime(2024, 5, 1, 12, 0, 0, 123000),
        "updated_at": datetime(2024, 5, 2, 8, 30),
        "revision_id": None,
        "some_old_field": {"nested": [1, 2]},
    }


@pytest.mark.parametrize("options", [NAIVE, AWARE], ids=["naive-client", "tz-aware-client"])
def test_legacy_document_reads_through_bson(options: CodecOptions) -> None:
    wf = from_document(Workflow, wire(legacy_workflow(), options))

    assert wf.id == str(OID)
    assert wf.agent_id == str(REF)
    assert wf.status is WorkflowStatus.MAX_TURNS_REACHED
    assert wf.max_turns == 12 and type(wf.max_turns) is int
    assert wf.created_at == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert wf.updated_at.tzinfo is not None and wf.updated_at.utcoffset() == timedelta(0)
    first, second = wf.messages
    assert type(first["tokens"]) is int and first["tokens"] == 2**40
    assert first["cost"] == 0.25
    assert second["refs"] == [str(REF), [1, 3]]
    assert wf.logs[0]["at"] == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert not hasattr(wf, "some_old_field")


def test_string_references_and_string_id_stay_strings() -> None:
    doc = wire({"_id": "my-memory", "agent_id": "agent-7", "key": "k", "scope": "GLOBAL"})
    mem = from_document(Memory, doc)
    assert (mem.id, mem.agent_id, mem.scope) == ("my-memory", "agent-7", MemoryScope.GLOBAL)


def test_reference_lists_may_mix_objectids_and_strings() -> None:
    doc = wire({"_id": OID, "name": "a", "mcp_server_ids": [REF, "srv-2"], "tags": ["x"]})
    assert from_document(Agent, doc).mcp_server_ids == [str(REF), "srv-2"]


def test_upper_case_and_dashed_enum_values_are_read() -> None:
    doc = wire({"_id": "m1", "name": "srv", "transport_type": "STREAMABLE-HTTP"})
    assert from_document(McpServer, doc).transport_type is McpTransport.STREAMABLE_HTTP


def test_other_id_types_are_exposed_as_text() -> None:
    assert from_document(Agent, wire({"_id": Int64(42), "name": "n"})).id == "42"
    raw = uuid.UUID("12345678-1234-5678-1234-567812345678")
    binary_id = wire({"_id": Binary.from_uuid(raw), "name": "n"})
    assert from_document(Agent, binary_id).id == str(raw)
    assert id_text(OID) == str(OID)


def test_missing_timestamps_come_from_the_objectid() -> None:
    agent = from_document(Agent, wire({"_id": OID, "name": "old"}))
    assert agent.created_at == OID.generation_time
    assert agent.updated_at == agent.created_at


def test_null_in_a_field_with_a_default_reads_as_the_default() -> None:
    agent = from_document(Agent, wire({"_id": OID, "name": "n", "description": None, "tags": None}))
    assert agent.description == "" and agent.tags == []


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (Decimal128("3"), 3),
        (Decimal128("-1E+2"), -100),
        (Decimal128("0.1"), 0.1),
        (Decimal128("2.5"), 2.5),
        (
            Decimal128("0.1000000000000000000000000000000001"),
            "0.1000000000000000000000000000000001",
        ),
        (Decimal128("NaN"), "NaN"),
        (Decimal128("Infinity"), "Infinity"),
        (Int64(-5), -5),
    ],
)
def test_numbers_inside_nested_values(stored: object, expected: object) -> None:
    got = plain_value(wire({"v": stored})["v"])
    assert got == expected and type(got) is type(expected)


def test_a_document_that_does_not_fit_names_the_record_and_field() -> None:
    doc = wire({"_id": OID, "status": "running"})  # workflow_id is required
    with pytest.raises(InvalidData, match=r"task_executions document '65a1b2.*workflow_id"):
        from_document(TaskExecution, doc)
    with pytest.raises(InvalidData, match="no _id"):
        from_document(TaskExecution, {"workflow_id": "w"})


def test_new_record_document_shape() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=5)))
    hex_id = str(ObjectId())
    task = TaskExecution(
        id=hex_id,
        workflow_id=str(REF),
        status=TaskStatus.RUNNING,
        started_at=when,
        usage={"when": when, "tokens": 3},
    )
    doc = to_document(task)
    assert next(iter(doc)) == "_id" and doc["_id"] == ObjectId(hex_id)
    assert "id" not in doc
    assert doc["workflow_id"] == str(REF)  # references are written as strings
    assert doc["status"] == "running" and type(doc["status"]) is str
    expected = datetime(2024, 1, 1, 22, 4, 5, 678000, tzinfo=UTC)
    assert doc["started_at"] == expected and doc["usage"]["when"] == expected
    # `extras` is never a stored key: the record's extras are top-level keys (none here).
    assert set(doc) == {
        "_id",
        *(f for f in TaskExecution.model_fields if f not in ("id", "extras")),
    }

    back = from_document(TaskExecution, wire(doc, AWARE))
    stored = {
        "started_at": expected,
        "usage": doc["usage"],
        "created_at": floor_ms(task.created_at),
        "updated_at": floor_ms(task.updated_at),
    }
    assert back == task.model_copy(update=stored)


def test_uuid_ids_are_stored_as_strings() -> None:
    agent = Agent(name="a")
    assert to_document(agent)["_id"] == agent.id
    assert storage_id("65A1B2C3D4E5F60718293A4B") == "65A1B2C3D4E5F60718293A4B"  # not canonical
    assert storage_id(str(OID)) == OID


def test_round_trip_of_every_field_through_a_bson_file(tmp_path: Path) -> None:
    """Write models as a mongodump-style .bson file, read them back as models."""
    records = [
        Agent(name="ünïcødé ✓", tags=["a", "b"], tool_definitions=[{"x": [1, {"y": None}]}]),
        Agent(id=str(ObjectId()), name="hex", temperature=0.7, max_turns=3),
        Memory(agent_id=str(OID), key="k", embedding=[0.5, -1.25], ttl=datetime.now(UTC)),
    ]
    dump = tmp_path / "dump.bson"
    dump.write_bytes(b"".join(bson.encode(to_document(r)) for r in records))
    with dump.open("rb") as fh:
        docs = list(bson.decode_file_iter(fh, codec_options=AWARE))
    for record, doc in zip(records, docs, strict=True):
        back = from_document(type(record), doc)
        assert back.model_dump(exclude={"created_at", "updated_at", "ttl"}) == (
            record.model_dump(exclude={"created_at", "updated_at", "ttl"})
        )
        assert back.created_at == floor_ms(record.created_at)


def test_id_forms() -> None:
    assert id_forms(str(OID)) == [str(OID), OID]
    assert id_forms("abc") == ["abc"]
    assert id_forms("42") == ["42"]
    assert id_forms("42", include_int=True) == ["42", 42]
    assert id_forms("042", include_int=True) == ["042"]
    assert id_forms(str(2**64), include_int=True) == [str(2**64)]


def test_millisecond_rounding() -> None:
    t = datetime(2024, 1, 1, 0, 0, 0, 1500, tzinfo=UTC)
    assert floor_ms(t).microsecond == 1000
    assert ceil_ms(t).microsecond == 2000
    exact = datetime(2024, 1, 1, 0, 0, 0, 2000, tzinfo=UTC)
    assert ceil_ms(exact) == exact == floor_ms(exact)
    assert floor_ms(datetime(2024, 1, 1, 5)).tzinfo is UTC  # naive taken as UTC


def test_extras_are_top_level_keys_and_read_back_as_extras() -> None:
    stored = {
        "_id": OID,
        "name": "legacy",
        "legacy_flag": True,
        "nested": {"ref": REF, "when": datetime(2024, 1, 2, 3, 4, 5)},
    }
    agent = from_document(Agent, stored)
    assert agent.extras == {
        "legacy_flag": True,
        "nested": {"ref": str(REF), "when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)},
    }
    doc = to_document(agent)
    assert "extras" not in doc
    assert doc["legacy_flag"] is True and doc["nested"]["ref"] == str(REF)
    assert list(doc)[-2:] == ["legacy_flag", "nested"]


def test_extras_may_not_shadow_a_field() -> None:
    with pytest.raises(ValidationError, match=r"extras may not hold keys.*\['name'\]"):
        Agent(name="a", extras={"name": "b"})


def test_extras_of_bson_types_without_a_json_form_read_as_extended_json() -> None:
    from bson import Regex, Timestamp

    stored = {
        "_id": OID,
        "name": "legacy",
        "blob": Binary(b"\xff\x00"),
        "nested": {"rx": Regex("^a", "i"), "at": [Timestamp(1, 2)]},
    }
    agent = from_document(Agent, stored)
    assert agent.extras == {
        "blob": {"$binary": {"base64": "/wA=", "subType": "00"}},
        "nested": {
            "rx": {"$regularExpression": {"pattern": "^a", "options": "i"}},
            "at": [{"$timestamp": {"t": 1, "i": 2}}],
        },
    }
    assert '"blob":{"$binary"' in agent.model_dump_json()  # a record can always be returned
