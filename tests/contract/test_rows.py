"""Rows → models without re-validation (`storage/postgres/rows.py`) give the same records as
`model_validate`: same values, same Python types (enum members, UTC-aware datetimes), same set
fields; rows that are not exact (legacy enum text) still go through validation."""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from typing import Any, get_args, get_origin

from pydantic.fields import FieldInfo
from sqlalchemy import select, text

from tbd_agents.domain.enums import OutputFormat
from tbd_agents.domain.models import ENTITIES, Agent, Entity
from tbd_agents.storage.postgres.query import db_value
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.postgres.rows import row_builder
from tbd_agents.storage.postgres.tables import TABLES

WHEN = datetime(2024, 2, 29, 23, 59, 58, 123000, tzinfo=timezone(timedelta(hours=5)))


def _sample(name: str, info: FieldInfo) -> Any:
    """A value of the field's type that is not its default."""
    annotation = info.annotation
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return list(annotation)[-1]
    if annotation is datetime:
        return WHEN
    if annotation is bool:
        return not info.default if isinstance(info.default, bool) else True
    if annotation is int:
        return 20  # within every int field's bounds (ge 0/1/16, le 3600/65536)
    if annotation is float:
        return 1.5
    if annotation is str:  # at least as long as the field's min_length (an API key's hash)
        least = max((getattr(m, "min_length", 0) or 0 for m in info.metadata), default=0)
        return f"{name}-välue".ljust(least, "x")
    if origin is list:
        (item,) = get_args(annotation)
        if item is str:
            return ["b", "a"]
        if item is float:
            return [0.25, -1.5]
        return [{"k": [1, {"d": None}]}, {}]
    if origin is dict:
        return {"k": "v"} if get_args(annotation)[1] is str else {"n": [1, 2.5, "x"], "z": {}}
    raise AssertionError(f"no sample for {name}: {annotation!r}")


def full_record(model: type[Entity]) -> Entity:
    return model.model_validate(
        {name: _sample(name, info) for name, info in model.model_fields.items()}
    )


async def test_every_entity_has_a_fast_builder() -> None:
    assert all(row_builder(model) is not None for model in ENTITIES)


async def test_built_records_equal_validated_ones(pg_store: PostgresStore) -> None:
    async with pg_store.engine.connect() as conn:
        await conn.execute(text("SET session_replication_role = replica"))  # no FK checks
        for model in ENTITIES:
            record = full_record(model)
            row_values = {n: getattr(record, n) for n in model.model_fields}
            table = TABLES[model.collection]
            await conn.execute(
                table.insert().values({k: db_value(v) for k, v in row_values.items()})
            )
            row = (await conn.execute(select(table))).one()
            build = row_builder(model)
            assert build is not None
            built = build(row._mapping)
            validated = model.model_validate(dict(row._mapping))
            assert built == validated == record, model.__name__
            assert built.model_fields_set == validated.model_fields_set
            for name in model.model_fields:
                value, expected = getattr(built, name), getattr(validated, name)
                assert type(value) is type(expected), (model.__name__, name)
                if isinstance(value, datetime):
                    assert value.utcoffset() == timedelta(0) and value.tzinfo == UTC
            assert built.model_dump_json() == validated.model_dump_json()
        await conn.rollback()


async def test_repository_reads_give_the_same_records(pg_store: PostgresStore) -> None:
    agent = full_record(Agent)
    async with pg_store.unit_of_work() as repos:
        await repos.agents.create(agent)
    async with pg_store.unit_of_work(readonly=True) as repos:
        got = await repos.agents.get(agent.id)
        listed = (await repos.agents.list()).items
    assert got == agent and listed == [agent]
    assert isinstance(got.output_format, OutputFormat)


async def test_inexact_enum_text_is_left_to_validation() -> None:
    """The tables' CHECK constraints refuse such text; a row from elsewhere is not built fast."""
    row = {n: getattr(Agent(name="legacy"), n) for n in Agent.model_fields}
    row["output_format"] = " Markdown"
    build = row_builder(Agent)
    assert build is not None
    assert build(row) is None
    assert Agent.model_validate(row).output_format is OutputFormat.MARKDOWN
    row["output_format"] = "markdown"
    built = build(row)
    assert built is not None and built.output_format is OutputFormat.MARKDOWN  # type: ignore[attr-defined]


async def test_out_of_bounds_values_are_left_to_validation() -> None:
    row = {n: getattr(Agent(name="x", temperature=1.0), n) for n in Agent.model_fields}
    build = row_builder(Agent)
    assert build is not None and build(row) is not None
    for field, bad in (("temperature", 2.5), ("max_turns", 0)):
        assert build({**row, field: bad}) is None, field
