"""The pure parts of the migration: canonical row digests, exact JSON, BSON framing, resume
checks, newest-wins for unique keys, and the `_id` order filter of a live resume."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import bson
import mongomock
import pytest
from bson import ObjectId

from tbd_agents.errors import InvalidData
from tbd_agents.tools.migration.bsonio import FrameRange, frame_offsets, iter_frames, skip_frames
from tbd_agents.tools.migration.rows import json_text, parse_json, row_digest
from tbd_agents.tools.migration.sources import (
    Resume,
    _file_batches,
    _range_batches,
    after_id_filter,
)
from tbd_agents.tools.migration.transform import SPECS, UniqueKeyResolver, convert_document


def test_digest_equates_equal_values_and_separates_different_ones() -> None:
    at = datetime(2024, 1, 1, 12, tzinfo=UTC)
    base = {"n": 1, "f": 0.1, "d": at, "j": {"a": 1, "b": [1.5, "x"]}}
    same = {
        "j": {"b": [Decimal("1.50"), "x"], "a": Decimal("1.0")},
        "d": at.astimezone(timezone(timedelta(hours=5, minutes=30))),
        "f": Decimal("0.1"),
        "n": 1.0,
    }
    assert row_digest(base) == row_digest(same)
    for changed in (
        {**base, "n": 2},
        {**base, "f": 0.1000001},
        {**base, "d": at + timedelta(microseconds=1)},
        {**base, "j": {"a": 1, "b": ["x", 1.5]}},
        {**base, "j": {"a": "1", "b": [1.5, "x"]}},
        {**base, "extra": None},
        {**base, "n": True},
    ):
        assert row_digest(changed) != row_digest(base), changed
    assert row_digest({"v": float("nan")}) != row_digest({"v": "NaN"})
    assert row_digest({"v": -0.0}) == row_digest({"v": 0})


def test_json_text_keeps_every_digit_and_parses_back_exactly() -> None:
    value = {
        "price": Decimal("0.000123456789012345678901234567"),
        "big": 2**62,
        "l": [Decimal("1E+3"), "é"],
        "e": {},
    }
    text = json_text(value)
    assert (
        json.loads(text, parse_float=Decimal) == value or "0.000123456789012345678901234567" in text
    )
    assert parse_json(text)["price"] == Decimal("0.000123456789012345678901234567")
    assert json_text({}) == "{}" and json_text([]) == "[]" and json_text({"a": "é"}) == '{"a":"é"}'


def test_frames_are_the_same_whatever_the_read_chunk_and_truncation_is_an_error() -> None:
    docs = [bson.encode({"_id": i, "s": "x" * (i * 37 % 300)}) for i in range(200)]
    data = b"".join(docs)
    for chunk in (7, 64, 1 << 20):
        assert list(iter_frames(io.BytesIO(data), "t", chunk=chunk)) == docs
    stream = io.BytesIO(data)
    skip_frames(stream, 150, "t")
    assert list(iter_frames(stream, "t")) == docs[150:]
    with pytest.raises(InvalidData, match="truncated"):
        list(iter_frames(io.BytesIO(data[:-3]), "t"))
    with pytest.raises(InvalidData, match="not valid BSON"):
        list(iter_frames(io.BytesIO(b"\xff\xff\xff\x7f" + data), "t"))


def test_resuming_a_dump_that_changed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.bson"
    ids = [ObjectId() for _ in range(10)]
    path.write_bytes(b"".join(bson.encode({"_id": i}) for i in ids))
    resumed = [d["_id"] for batch in _file_batches(path, 3, Resume(4, ids[3])) for d in batch]  # type: ignore[index]
    assert resumed == ids[4:]
    with pytest.raises(
        InvalidData, match=r"document 4 is not the one the checkpoint recorded.*--restart"
    ):
        list(_file_batches(path, 3, Resume(4, ids[2])))


def test_frame_ranges_give_the_frames_iter_frames_gives(tmp_path: Path) -> None:
    """What converter processes read by position is what the streaming reader yields."""
    docs = [bson.encode({"_id": i, "s": "x" * (i * 37 % 3000)}) for i in range(200)]
    path = tmp_path / "c.bson"
    path.write_bytes(b"".join(docs))
    for chunk in (7, 64, 5000, 1 << 20):
        ranges = list(frame_offsets(path, 0, 30, "t", chunk=chunk))
        assert [len(r) - 1 for r in ranges] == [30] * 6 + [20]
        assert [f for r in ranges for f in FrameRange(str(path), r).read_all()] == docs
    whole = FrameRange(str(path), next(frame_offsets(path, 0, 1000, "t")))
    assert len(whole) == 200 and whole[5] == docs[5] and whole[-1] == docs[-1]
    assert whole[3:6] == docs[3:6]
    with pytest.raises(IndexError):
        whole[200]
    # Resuming: after the 4th document, checked against the checkpoint's id.
    resumed = [bson.decode(f)["_id"] for r in _range_batches(path, 7, Resume(4, 3)) for f in r]
    assert resumed == list(range(4, 200))
    with pytest.raises(InvalidData, match=r"document 4 is not the one the checkpoint recorded"):
        list(_range_batches(path, 7, Resume(4, 2)))
    # A truncated file or a bad length prefix: the messages of the streaming reader.
    path.write_bytes(b"".join(docs)[:-3])
    with pytest.raises(InvalidData, match="truncated: expected"):
        list(frame_offsets(path, 0, 30, "t"))
    path.write_bytes(b"".join(docs) + b"\x01\x00")
    with pytest.raises(InvalidData, match="truncated after its last complete document"):
        list(frame_offsets(path, 0, 30, "t"))
    path.write_bytes(b"".join(docs[:3]) + b"\xff\xff\xff\x7f" + b"".join(docs))
    with pytest.raises(InvalidData, match="not valid BSON"):
        list(frame_offsets(path, 0, 30, "t"))


def test_newest_duplicate_wins_by_updated_then_created_then_id() -> None:
    spec = SPECS["memories"]
    resolver = UniqueKeyResolver(spec)

    def row(i: str, updated: int, created: int, key: str = "k") -> dict[str, object]:
        doc = {
            "_id": i,
            "agent_id": "a",
            "key": key,
            "created_at": datetime(2024, 1, created),
            "updated_at": datetime(2024, 2, updated),
        }
        converted = convert_document(spec, doc)
        assert converted.row is not None
        return converted.row

    for r in (
        row("m1", 5, 1),
        row("m2", 9, 1),
        row("m3", 9, 2),
        row("m4", 9, 2),
        row("other", 1, 1, "k2"),
    ):
        resolver.offer(r)
    assert resolver.superseded() == {"m1": "m4", "m2": "m4", "m3": "m4"}


def test_live_resume_filter_follows_mongodb_id_order_across_types() -> None:
    collection = mongomock.MongoClient().db.c
    collection.insert_many(
        [{"_id": v} for v in ("b", "a", ObjectId(), ObjectId(), 5, 2.5, datetime(2024, 1, 1))]
    )
    ordered = [d["_id"] for d in collection.find().sort("_id", 1)]
    for i, last in enumerate(ordered):
        assert [d["_id"] for d in collection.find(after_id_filter(last)).sort("_id", 1)] == ordered[
            i + 1 :
        ]
