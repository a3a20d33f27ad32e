"""The PostgreSQL schema: one SQLAlchemy metadata, derived from the domain models.

Each of the 15 tables has one typed column per model field (TEXT, INTEGER, BOOLEAN,
DOUBLE PRECISION, TIMESTAMPTZ, TEXT[], DOUBLE PRECISION[], JSONB), so the model is the single
definition of a record. What a model cannot say is stated here, per table: indexes, GIN indexes
for array containment, and the parent→child links (two of them enforced by PostgreSQL with
cascading foreign keys, the others cascaded in code). Enum-valued columns get CHECK constraints
built from the enums; unique keys come from the models' `unique_keys`.

Alembic revisions are generated from this metadata (`alembic revision --autogenerate`), and a test
runs `alembic check` so the two cannot drift.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from enum import StrEnum
from typing import Any, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP
from sqlalchemy.types import TypeEngine

from tbd_agents.domain.models import ENTITIES, Entity

NAMING_CONVENTION = {
    "ix": "idx_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: B-tree indexes (one column each, named idx_<table>_<column>): every reference column and every
#: column the services filter or sort by. `created_at` is indexed on every table (default sort).
BTREE_INDEXES: dict[str, tuple[str, ...]] = {
    "agents": ("name", "provider_id", "created_by"),
    "chat_sessions": ("agent_id", "github_user", "updated_at"),
    "chat_messages": ("session_id",),
    "memories": ("agent_id", "scope", "session_id", "ttl", "created_by"),
    "skills": ("name", "created_by"),
    "tokens": ("created_by",),
    "providers": ("provider_type", "created_by"),
    "knowledge_items": ("source_id", "status", "file_id"),
    "knowledge_sources": ("name", "source_type", "status", "created_by"),
    "custom_tools": ("name", "created_by"),
    "guardrails": ("name", "guardrail_type", "created_by"),
    "workflows": ("agent_id", "status", "github_user"),
    "task_executions": (
        "workflow_id",
        "agent_id",
        "scheduled_agent_id",
        "status",
        "celery_task_id",
        "parent_task_id",
        "root_task_id",
        "finished_at",  # retention: runs that ended before a cut-off
    ),
    "scheduled_agents": ("workflow_id", "enabled", "next_run_at", "github_user"),
    "mcp_servers": ("name", "status", "transport_type", "created_by"),
    "tool_approvals": ("task_id", "workflow_id", "owner", "status", "expires_at"),
}

#: B-tree indexes on several columns (named idx_<table>_<col1>_<col2>…): a session's messages in
#: their order (`ChatMessage.seq`) are read from one index range.
COMPOSITE_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "chat_messages": (("session_id", "seq"),),
}

#: GIN indexes on TEXT[] columns queried with containment (tags and tag-based selection).
GIN_INDEXES: dict[str, tuple[str, ...]] = {
    "agents": ("tags", "mcp_server_tags", "knowledge_tags", "skill_tags", "agent_tool_ids"),
    "skills": ("tags",),
    "knowledge_items": ("tags",),
    "knowledge_sources": ("tags",),
    "custom_tools": ("tags",),
    "guardrails": ("tags",),
    "workflows": ("tags",),
    "mcp_servers": ("tags",),
}

#: Child → parent links: deleting the parent deletes its children, on every backend.
CASCADES: dict[str, tuple[tuple[str, str], ...]] = {
    "chat_messages": (("session_id", "chat_sessions"),),
    "knowledge_items": (("source_id", "knowledge_sources"),),
    "task_executions": (("workflow_id", "workflows"),),
    "scheduled_agents": (("workflow_id", "workflows"),),
}

#: The children whose link PostgreSQL enforces with a cascading foreign key: a row cannot exist
#: without its parent. The other links of `CASCADES` are cascaded in code by the repositories
#: (as on MongoDB), because existing deployments hold task executions and schedules whose
#: workflow was deleted (the existing system never cascaded those deletes) and they are kept.
FOREIGN_KEYS: frozenset[str] = frozenset({"chat_messages", "knowledge_items"})


def enforced_parent(table: str) -> tuple[str, str] | None:
    """(reference column, parent table) of `table`'s foreign key, if it has one."""
    links = CASCADES.get(table, ()) if table in FOREIGN_KEYS else ()
    return links[0] if links else None


def code_cascades(parent: str) -> tuple[tuple[str, str], ...]:
    """(child table, reference column) of the children of `parent` deleted in code."""
    return tuple(
        (child, column)
        for child, links in CASCADES.items()
        if child not in FOREIGN_KEYS
        for column, linked in links
        if linked == parent
    )


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """Return (inner type, is_optional) for `X | None`."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _sql_type(annotation: Any) -> TypeEngine[Any]:
    annotation = _strip_annotated(annotation)
    origin = get_origin(annotation)
    if origin is list:
        (item,) = get_args(annotation)
        item = _strip_annotated(item)
        if item is str:
            return ARRAY(Text)
        if item is float:
            return ARRAY(Double)
        return JSONB(none_as_null=True)
    if origin is dict:
        # none_as_null: a Python None is SQL NULL (is_null finds it), not the JSON value null.
        return JSONB(none_as_null=True)
    if isinstance(annotation, type):
        if issubclass(annotation, StrEnum) or annotation is str:
            return Text()
        if annotation is bool:
            return Boolean()
        if annotation is int:
            return Integer()
        if annotation is float:
            return Double()
        if annotation is datetime:
            return TIMESTAMP(timezone=True)
    raise TypeError(f"no PostgreSQL type for field annotation {annotation!r}")


def _server_default(name: str, field: FieldInfo, sql_type: TypeEngine[Any]) -> Any:
    if name == "id":
        return text("gen_random_uuid()::text")
    if name in ("created_at", "updated_at"):
        return text("now()")
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined or field.default is None:
        return None
    else:
        value = field.default
    if isinstance(sql_type, ARRAY):
        if value:
            raise ValueError(f"non-empty array default for {name} is not supported")
        return text("'{}'")
    if isinstance(sql_type, JSONB):
        import json

        literal = json.dumps(value, separators=(",", ":")).replace("'", "''")
        return text(f"'{literal}'::jsonb")
    if isinstance(value, bool):
        return text("true" if value else "false")
    if isinstance(value, StrEnum):
        return text("'" + value.value.replace("'", "''") + "'")
    if isinstance(value, int | float):
        return text(str(value))
    if isinstance(value, str):
        return text("'" + value.replace("'", "''") + "'")
    raise TypeError(f"unsupported default {value!r} for {name}")


def _enum_of(annotation: Any) -> type[StrEnum] | None:
    inner = _strip_annotated(_unwrap_optional(_strip_annotated(annotation))[0])
    if isinstance(inner, type) and issubclass(inner, StrEnum):
        return inner
    return None


def _columns(model: type[Entity]) -> list[Column[Any]]:
    cols: list[Column[Any]] = []
    for name, field in model.model_fields.items():
        inner, optional = _unwrap_optional(_strip_annotated(field.annotation))
        sql_type = _sql_type(inner)
        cols.append(
            Column(
                name,
                sql_type,
                primary_key=(name == "id"),
                nullable=optional,
                server_default=_server_default(name, field, sql_type),
            )
        )
    return cols


def _table_for(model: type[Entity]) -> Table:
    name = model.collection
    extras: list[Any] = []
    for field_name, field in model.model_fields.items():
        enum = _enum_of(field.annotation)
        if enum is not None:
            values = ", ".join("'" + v.value + "'" for v in enum)
            extras.append(CheckConstraint(f"{field_name} IN ({values})", name=field_name))
        bounds = [
            f"{field_name} {op} {getattr(meta, attr)}"
            for meta in field.metadata
            for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
            if getattr(meta, attr, None) is not None
        ]
        if bounds:
            extras.append(CheckConstraint(" AND ".join(bounds), name=f"{field_name}_range"))
    for key in model.unique_keys:
        extras.append(UniqueConstraint(*key))
    for column, parent in CASCADES.get(name, ()) if name in FOREIGN_KEYS else ():
        extras.append(ForeignKeyConstraint([column], [f"{parent}.id"], ondelete="CASCADE"))
    table = Table(name, metadata, *_columns(model), *extras)
    for column in ("created_at", *BTREE_INDEXES.get(name, ())):
        Index(f"idx_{name}_{column}", table.c[column])
    for columns in COMPOSITE_INDEXES.get(name, ()):
        Index(f"idx_{name}_{'_'.join(columns)}", *(table.c[c] for c in columns))
    for column in GIN_INDEXES.get(name, ()):
        Index(f"idx_{name}_{column}", table.c[column], postgresql_using="gin")
    return table


TABLES: dict[str, Table] = {model.collection: _table_for(model) for model in ENTITIES}
