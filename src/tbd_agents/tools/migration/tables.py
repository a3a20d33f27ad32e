"""TBD Agents' own collections that are not entities: one MongoDB document → one row of its table.

Our MongoDB backend stores the usage ledger and budgets (`observability/usage/mongo.py`), the
webhook secrets, deliveries and attempts (`runtime/mongo_webhooks.py`) and the run events, halts
and schedule occurrences (`runtime/mongo_store.py`) in collections named and shaped like their
PostgreSQL tables (`storage/postgres/schema_usage.py`, `schema_runtime.py`). A `TableSpec` says
how a document of one of them becomes a row; `convert_row` applies it (pure, no I/O):

* a field goes to the column of its name (or of `renamed`), converted to the column's type
  (`_coerce`); `_id` fills `id_column` when the table keeps it (a budget's id, a webhook secret's
  workflow id), else it is the document's identity only (quarantine, checkpoints);
* `derived` columns are computed from the document (a cost stored as integer picodollars
  becomes the NUMERIC dollars PostgreSQL stores), `ignored` fields are MongoDB bookkeeping with no
  column (a call's `day`, `daily_applied`);
* a missing field takes `defaults`, else NULL when the column allows it; a value that does not fit
  its column quarantines the document (category `invalid`) with the reason; fields no column
  names are reported as dropped (these tables have no `extras` column);
* `parents` are the foreign keys: a row whose parent is not in PostgreSQL is quarantined as an
  orphan, as for the 15 collections; `cleared` references (ON DELETE SET NULL) are set to NULL
  with a warning instead.

Rows are keyed by `key` (the table's primary key): a re-run updates a row in place, only if its
content differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any

from bson import Decimal128, Int64, ObjectId
from sqlalchemy import Boolean, Date, Double, Integer, Numeric, Table, Text
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

from tbd_agents.domain.types import to_utc
from tbd_agents.observability.usage.mongo import BUDGETS, CALLS, DAILY
from tbd_agents.storage.mongo.runtime_schema import (
    RUN_EVENTS,
    RUN_HALTS,
    SCHEDULE_OCCURRENCES,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_SECRETS,
)
from tbd_agents.storage.postgres.tables import metadata
from tbd_agents.tools.migration.convert import Findings, id_text, plain
from tbd_agents.tools.migration.rows import json_text

Row = dict[str, Any]

_PICO = Decimal(10) ** 12
_MISSING = object()


class _Refused(ValueError):
    """A value that does not fit its column."""


@dataclass(frozen=True)
class TableSpec:
    """How the documents of one collection become rows of the table of the same name."""

    name: str
    key: tuple[str, ...]
    #: The column `_id` fills (None: `_id` is only the document's identity).
    id_column: str | None = None
    renamed: Mapping[str, str] = field(default_factory=dict)
    derived: Mapping[str, Callable[[Mapping[str, Any]], Any]] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: (column, parent table) of each foreign key that refuses a row without its parent.
    parents: tuple[tuple[str, str], ...] = ()
    #: (column, parent table) of each ON DELETE SET NULL reference: NULL when the parent is gone.
    cleared: tuple[tuple[str, str], ...] = ()
    #: A warning about a document that is migrated as it is (None: nothing to say).
    warn: Callable[[Mapping[str, Any]], str | None] | None = None
    #: What the loader asks of a spec it has no use for here (see `loader.TableLoader`).
    numbered: frozenset[str] = frozenset()
    parent: None = None

    @cached_property
    def table(self) -> Table:
        return metadata.tables[self.name]

    @cached_property
    def columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.table.columns)

    @cached_property
    def json_columns(self) -> frozenset[str]:
        return frozenset(c.name for c in self.table.columns if isinstance(c.type, JSONB))

    def key_text(self, row: Mapping[str, Any]) -> str:
        """The row's key as one text (verification's identity of a row)."""
        return "\x1f".join(_text_of(row[c]) for c in self.key)


def _text_of(value: Any) -> str:
    if isinstance(value, datetime):
        return to_utc(value).isoformat()
    return str(value)


def _dollars(document: Mapping[str, Any]) -> Any:
    pico = document.get("cost_pico", _MISSING)
    if pico is _MISSING:
        return _MISSING
    return (_decimal(pico) / _PICO).quantize(Decimal("1e-12"))


def _unapplied(document: Mapping[str, Any]) -> str | None:
    if document.get("daily_applied") is False:
        return (
            "call not in usage_daily on the source (daily_applied false): its write stopped "
            "between the call and its day's totals; migrated as it is"
        )
    return None


_DIMENSIONS = ("user_id", "agent_id", "workflow_id", "schedule_id", "provider_id", "model")

#: In load order: every parent before its children.
TABLE_SPECS: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(BUDGETS, key=("id",), id_column="id", renamed={"limit": "limit_value"}),
        TableSpec(
            CALLS,
            key=("id",),
            id_column="id",
            derived={"cost_usd": _dollars},
            ignored=frozenset({"cost_pico", "day", "daily_applied"}),
            warn=_unapplied,
        ),
        TableSpec(
            DAILY,
            key=("day", *_DIMENSIONS),
            derived={"cost_usd": _dollars},
            ignored=frozenset({"cost_pico"}),
            defaults=dict.fromkeys(_DIMENSIONS, ""),
        ),
        TableSpec(
            WEBHOOK_SECRETS,
            key=("workflow_id",),
            id_column="workflow_id",
            parents=(("workflow_id", "workflows"),),
        ),
        TableSpec(
            WEBHOOK_DELIVERIES,
            key=("id",),
            id_column="id",
            parents=(("task_id", "task_executions"), ("workflow_id", "workflows")),
        ),
        TableSpec(
            WEBHOOK_ATTEMPTS,
            key=("delivery_id", "attempt"),
            parents=(("delivery_id", WEBHOOK_DELIVERIES),),
        ),
        TableSpec(
            RUN_EVENTS,
            key=("task_id", "seq"),
            defaults={"data": {}},
            parents=(("task_id", "task_executions"),),
        ),
        TableSpec(
            RUN_HALTS,
            key=("task_id",),
            id_column="task_id",
            parents=(("task_id", "task_executions"),),
        ),
        TableSpec(
            SCHEDULE_OCCURRENCES,
            key=("scheduled_agent_id", "occurrence_at"),
            defaults={"missed": 0},
            parents=(("scheduled_agent_id", "scheduled_agents"),),
            cleared=(("task_id", "task_executions"),),
        ),
    )
}

#: The tables the rows of `TABLE_SPECS` refer to (a dry run remembers the ids it would write).
TABLE_PARENTS: frozenset[str] = frozenset(
    parent for spec in TABLE_SPECS.values() for _, parent in (*spec.parents, *spec.cleared)
)


@dataclass(slots=True)
class ConvertedRow:
    """The outcome of converting one document of a `TableSpec` collection."""

    id: str | None
    row: Row | None = None
    problem: str | None = None
    dropped: tuple[str, ...] = ()
    warning: str | None = None


def convert_row(spec: TableSpec, document: Mapping[str, Any]) -> ConvertedRow:
    """Convert one raw (BSON-decoded) document of `spec`'s collection (see module docstring)."""
    raw_id = document.get("_id")
    doc_id = id_text(raw_id)
    if doc_id is None:
        reason = "document has no _id" if raw_id is None else f"unusable _id {raw_id!r}"
        return ConvertedRow(id=None, problem=reason)
    source_of = {column: name for name, column in spec.renamed.items()}
    row: Row = {}
    problems: list[str] = []
    for column in spec.table.columns:
        name = column.name
        if name == spec.id_column:
            value: Any = raw_id
        elif name in spec.derived:
            try:
                value = spec.derived[name](document)
            except (TypeError, ValueError, InvalidOperation) as exc:
                problems.append(f"{name}: cannot be computed ({exc})")
                continue
        else:
            value = document.get(source_of.get(name, name), _MISSING)
        if value is _MISSING or (value is None and not column.nullable):
            if name in spec.defaults:
                value = spec.defaults[name]
            elif column.nullable:
                value = None
            else:
                problems.append(f"{name}: field required")
                continue
        try:
            row[name] = None if value is None else _coerce(column.type, value)
        except _Refused as exc:
            problems.append(f"{name}: {exc} (got {_shown(value)})")
    known = {*spec.columns, *spec.renamed, *spec.ignored, "_id"}
    dropped = tuple(k for k in document if k not in known)
    if problems:
        return ConvertedRow(id=doc_id, problem="invalid: " + "; ".join(problems), dropped=dropped)
    warning = spec.warn(document) if spec.warn is not None else None
    return ConvertedRow(id=doc_id, row=row, dropped=dropped, warning=warning)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _coerce(kind: Any, value: Any) -> Any:
    """`value` as the Python value asyncpg writes into a column of type `kind`."""
    if isinstance(kind, JSONB):
        findings = Findings()
        converted = plain(value, findings, True)
        if findings.nul or findings.nonfinite:
            raise _Refused("holds NUL characters or NaN/Infinity, which JSONB cannot store")
        return converted
    if isinstance(kind, Text):
        if isinstance(value, ObjectId):
            return str(value)
        if isinstance(value, str) and "\x00" not in value:
            return str(value)
        raise _Refused("not a text without NUL characters")
    if isinstance(kind, Boolean):
        if isinstance(value, bool):
            return value
        raise _Refused("not a boolean")
    if isinstance(kind, Integer):  # Integer and BigInteger
        if isinstance(value, int | Int64) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Refused("not an integer")
    if isinstance(kind, Double):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _Refused("not a number")
    if isinstance(kind, Numeric):
        return _decimal(value)
    if isinstance(kind, TIMESTAMP):
        if isinstance(value, datetime):
            return to_utc(value)
        raise _Refused("not a date and time")
    if isinstance(kind, Date):
        if isinstance(value, datetime):
            return value.astimezone(UTC).date() if value.tzinfo else value.date()
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise _Refused("not an ISO date (YYYY-MM-DD)") from None
        raise _Refused("not a date")
    raise NotImplementedError(f"no conversion to {kind!r}")


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise _Refused("not a number")
    try:
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise _Refused("not a number") from None
    if not number.is_finite():
        raise _Refused("not a finite number")
    return number


def to_record(spec: TableSpec, row: Row) -> tuple[Any, ...]:
    """`row` in column order, JSONB values as JSON text (what COPY sends)."""
    json_columns = spec.json_columns
    return tuple(
        json_text(row[c]) if c in json_columns and row[c] is not None else row[c]
        for c in spec.columns
    )
