"""Per-collection transform: one MongoDB document → one row of its PostgreSQL table, or a reason.

Pure functions, no I/O. A document goes through the value rules of `convert`, then through the
domain model of its collection (`tbd_agents.domain.models`), which fills missing fields with the
model defaults, normalises enum spelling and refuses invalid values. Document-level rules:

* `_id` becomes `id` (ObjectId → 24-hex text). A document without a usable `_id` is quarantined.
* A missing (or null) `created_at` is taken from the ObjectId's timestamp, else 1970-01-01 UTC; a
  missing `updated_at` copies `created_at` — so a re-run produces identical rows.
* A null in a field that cannot be null but has a default takes the default (as a missing one).
* Unknown fields (keys no column names) are kept, under their own names, in the row's `extras`
  JSONB column, which every table has; they are counted by name in the summary.
* Values the value rules had to change (strings with NUL characters, NaN and infinities in JSON)
  keep their exact original in `extras["$exact"]`, by field path (`convert.exact_originals`);
  a source field named `$exact` is refused (quarantined).
* A document the model refuses (invalid enum value, `interval_value` < 1, missing required field,
  wrong type...) is quarantined with the validation message; no value is invented.
"""

from __future__ import annotations

import operator
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Union, get_args, get_origin

from bson import ObjectId
from pydantic import ValidationError
from sqlalchemy import Table

from tbd_agents.domain.approvals import ToolApproval
from tbd_agents.domain.auth import ApiKey
from tbd_agents.domain.models import ENTITIES, Entity
from tbd_agents.domain.versions import AgentVersion
from tbd_agents.storage.postgres.schema import enforced_parent
from tbd_agents.storage.postgres.tables import TABLES
from tbd_agents.tools.migration.convert import EXACT, Findings, exact_originals, id_text, plain
from tbd_agents.tools.migration.rows import json_text

#: Column holding the unknown fields of a document.
EXTRAS = "extras"
#: `created_at` of a document that has none and whose `_id` is not an ObjectId.
UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)

Row = dict[str, Any]


def _optional(annotation: Any) -> bool:
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


@dataclass(frozen=True)
class CollectionSpec:
    """Everything the migration needs to know about one collection and its table."""

    name: str
    model: type[Entity]
    table: Table
    columns: tuple[str, ...]
    json_columns: frozenset[str]
    #: (reference column, parent collection) enforced by a foreign key, if any: a document whose
    #: parent is not in PostgreSQL cannot be loaded (chat messages, knowledge items).
    parent: tuple[str, str] | None
    unique_keys: tuple[tuple[str, ...], ...]
    #: Non-nullable fields with a default: a null there takes the default.
    defaulted: frozenset[str]
    keeps_extra: bool
    #: Model fields a document may carry (all but `id`, which comes from `_id`).
    fields: frozenset[str]
    #: Positions of the JSONB columns in `columns`, and a getter of a row's values in order.
    json_indices: tuple[int, ...]
    getter: Callable[[Row], tuple[Any, ...]]
    #: Columns the target numbers itself (`Entity.numbering`: a chat message's `seq`, a
    #: session's `message_seq`), after the load (`numbering.number_rows`): an upsert never
    #: overwrites them, and verification does not compare them with the source.
    numbered: frozenset[str] = frozenset()
    #: The conflict key of the table's upserts (its primary key).
    key: tuple[str, ...] = ("id",)


def _numbered_columns(model: type[Entity]) -> frozenset[str]:
    """The numbered field of `model`, and the counters it keeps for numbered children."""
    own = {model.numbering.field} if model.numbering is not None else set()
    counters = {
        m.numbering.counter
        for m in ENTITIES
        if m.numbering is not None and m.numbering.parent == model.collection
    }
    return frozenset(own | counters)


def _spec(model: type[Entity]) -> CollectionSpec:
    from sqlalchemy.dialects.postgresql import JSONB

    table = TABLES[model.collection]
    defaulted = frozenset(
        name
        for name, info in model.model_fields.items()
        if not info.is_required() and not _optional(info.annotation)
    )
    columns = tuple(c.name for c in table.columns)
    json_columns = frozenset(c.name for c in table.columns if isinstance(c.type, JSONB))
    return CollectionSpec(
        name=model.collection,
        model=model,
        table=table,
        columns=columns,
        json_columns=json_columns,
        parent=enforced_parent(model.collection),
        unique_keys=model.unique_keys,
        defaulted=defaulted,
        keeps_extra=EXTRAS in model.model_fields,
        fields=frozenset(model.model_fields) - {"id", EXTRAS},
        json_indices=tuple(i for i, c in enumerate(columns) if c in json_columns),
        getter=operator.itemgetter(*columns),
        numbered=_numbered_columns(model),
    )


#: Entities our own backends store beside the 15 (`storage/mongo/repository.EXTRA_ENTITIES`),
#: each with its table derived from the model like theirs: migrated by the same rules.
OWN_ENTITIES: tuple[type[Entity], ...] = (ApiKey, AgentVersion, ToolApproval)

SPECS: dict[str, CollectionSpec] = {
    model.collection: _spec(model) for model in (*ENTITIES, *OWN_ENTITIES)
}

#: Collections in load order: every parent before its children (the guide's order otherwise).
LOAD_ORDER: tuple[str, ...] = tuple(sorted(SPECS, key=lambda name: SPECS[name].parent is not None))


def _check_depth() -> None:
    for name in LOAD_ORDER:
        link = SPECS[name].parent
        if link is not None and SPECS[link[1]].parent is not None:
            raise NotImplementedError("parent links deeper than one level need a topological sort")


_check_depth()


@dataclass(slots=True)
class Converted:
    """The outcome of converting one document."""

    id: str | None
    row: Row | None = None
    #: Why the document cannot be migrated (None: it can).
    problem: str | None = None
    nul: bool = False
    nonfinite: bool = False
    #: Unknown field names, and whether they were kept in `extras`.
    extra: tuple[str, ...] = ()
    extra_kept: bool = False


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "document"
        if err["type"] == "missing":
            parts.append(f"{loc}: {err['msg']}")
            continue
        shown = repr(err.get("input"))
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        parts.append(f"{loc}: {err['msg']} (got {shown})")
    return "invalid: " + "; ".join(parts)


def convert_document(spec: CollectionSpec, document: Mapping[str, Any]) -> Converted:
    """Convert one raw (BSON-decoded) document of `spec`'s collection."""
    raw_id = document.get("_id")
    doc_id = id_text(raw_id)
    if doc_id is None:
        reason = "document has no _id" if raw_id is None else f"unusable _id {raw_id!r}"
        return Converted(id=None, problem=reason)
    findings = Findings()
    fields = spec.fields
    defaulted = spec.defaulted
    data: dict[str, Any] = {"id": doc_id}
    extra: dict[str, Any] = {}
    for key, value in document.items():
        if key in fields:
            kind = type(value)
            # Fast paths for the common values (top-level datetimes are made UTC by the model);
            # everything else goes through `plain`.
            if kind is ObjectId:
                value = str(value)
            elif not (
                (kind is str and "\x00" not in value)
                or kind is int
                or kind is datetime
                or kind is bool
            ):
                if value is None:
                    if key in defaulted:
                        continue
                else:
                    value = plain(value, findings)
            data[key] = value
        elif key != "_id" and not (key == "id" and id_text(value) == doc_id):
            extra[key] = plain(value, findings, True)
    if EXACT in extra:
        return Converted(
            id=doc_id,
            problem=f"invalid: the field name {EXACT} is reserved for the exact originals of "
            "changed values (rename the field in the source)",
        )
    if isinstance(raw_id, str) and "\x00" in raw_id:
        findings.nul = True
    if findings.nul or findings.nonfinite:
        # Rare: record the exact originals of what the value rules changed (NULs, NaN...).
        skipped = frozenset({"id"}) if "id" in document and "id" not in extra else frozenset()
        extra[EXACT] = exact_originals(document, skipped)
    if data.get("created_at") is None:
        data["created_at"] = (
            raw_id.generation_time if isinstance(raw_id, ObjectId) else UNKNOWN_TIME
        )
    if data.get("updated_at") is None:
        data["updated_at"] = data["created_at"]
    result = Converted(id=doc_id, nul=findings.nul, nonfinite=findings.nonfinite)
    if extra:
        result.extra = tuple(k for k in extra if k != EXACT)
        if spec.keeps_extra:
            data[EXTRAS] = extra
            result.extra_kept = True
    try:
        model = spec.model.model_validate(data)
    except ValidationError as exc:
        result.problem = _validation_message(exc)
        return result
    # Enum members are `str` subclasses holding their value: stored and hashed as that text.
    # The model is not kept, so its field dict becomes the row as it is.
    result.row = model.__dict__
    return result


def to_record(spec: CollectionSpec, row: Row) -> tuple[Any, ...]:
    """`row` as a tuple in table-column order, JSONB values as JSON text (what COPY sends)."""
    record = list(spec.getter(row))
    for i in spec.json_indices:
        value = record[i]
        if value is not None:
            record[i] = json_text(value)
    return tuple(record)


def order_key(row: Row) -> tuple[datetime, datetime, str]:
    """Newest wins among duplicates: later `updated_at`, then later `created_at`, then larger id."""
    return (row["updated_at"], row["created_at"], row["id"])


class UniqueKeyResolver:
    """Finds, for a collection with unique keys, which documents a newer duplicate supersedes.

    Offer every convertible row of the collection (one pass, only keys and ids are kept); then
    `superseded()` maps each losing id to the id that wins its key."""

    def __init__(self, spec: CollectionSpec) -> None:
        self._keys = spec.unique_keys
        self._best: dict[tuple[Any, ...], tuple[tuple[datetime, datetime, str], str]] = {}
        self._losers: dict[str, tuple[Any, ...]] = {}

    def offer(self, row: Row) -> None:
        rank = order_key(row)
        for columns in self._keys:
            key = (columns, *(row[c] for c in columns))
            current = self._best.get(key)
            if current is None:
                self._best[key] = (rank, row["id"])
            elif rank > current[0]:
                self._losers[current[1]] = key
                self._best[key] = (rank, row["id"])
            else:
                self._losers[row["id"]] = key

    def superseded(self) -> dict[str, str]:
        """Losing id → winning id, for every duplicate offered."""
        return {loser: self._best[key][1] for loser, key in self._losers.items()}
