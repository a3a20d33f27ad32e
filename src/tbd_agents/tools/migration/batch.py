"""One batch of source documents → rows to load, documents to quarantine, warnings to report.

`classify` applies every document-level rule that does not need the target database (BSON
decoding, the domain model, newest-wins for unique keys); `prepare_batch` runs it over a batch and
encodes the accepted rows for COPY. Both are pure and CPU-bound: the runner calls `prepare_batch`
in a worker thread so it overlaps with the previous batch's database work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tbd_agents.tools.migration.bsonio import SourceDocument, Undecodable
from tbd_agents.tools.migration.copybin import BinaryRows, RowEncoder
from tbd_agents.tools.migration.transform import (
    CollectionSpec,
    Converted,
    Row,
    convert_document,
    to_record,
)

NUL_WARNING = 'NUL characters removed (originals in extras["$exact"])'
NONFINITE_WARNING = 'NaN/Infinity stored as text (originals in extras["$exact"])'


@dataclass(slots=True)
class Rejection:
    """A document that will not be migrated, and why."""

    id: str | None
    reason: str
    document: SourceDocument

    @property
    def category(self) -> str:
        return category_of(self.reason)


def category_of(reason: str | None) -> str:
    """A quarantine reason without its details: invalid, orphan, duplicate key, database, ..."""
    head = (reason or "not convertible").split(":", 1)[0]
    return head.split(",", 1)[0].strip()


@dataclass(slots=True)
class Warning:
    """A document migrated with a change the user should know about."""

    id: str
    message: str


@dataclass
class PreparedBatch:
    """A batch after conversion: what to load, what to quarantine, what to report."""

    read: int
    last_id: Any
    records: list[tuple[Any, ...]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    #: Parent id of each record, for collections with a parent link (else empty).
    parent_ids: list[str] = field(default_factory=list)
    #: The source document of each record (quarantined with it if the database refuses the row).
    documents: list[SourceDocument] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[Warning] = field(default_factory=list)
    extra_kept: Counter[str] = field(default_factory=Counter)
    extra_dropped: Counter[str] = field(default_factory=Counter)
    #: The records already encoded for a binary COPY (converter processes), `records` then empty.
    binary: BinaryRows | None = None
    #: For each record, the position of its document in the batch's input.
    positions: list[int] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        """How many rows there are to load (one id per record, whichever form they travel in)."""
        return len(self.ids)


def classify(
    spec: CollectionSpec, document: SourceDocument, superseded: Mapping[str, str]
) -> Converted:
    """Convert `document`; `problem` is set when it must be quarantined."""
    if isinstance(document, Undecodable):
        return Converted(id=None, problem=f"undecodable: not valid BSON ({document.error})")
    converted = convert_document(spec, document)
    if converted.row is not None and converted.id is not None and converted.id in superseded:
        converted.problem = f"duplicate key, superseded by {superseded[converted.id]}"
        converted.row = None
    return converted


def document_id(document: SourceDocument) -> Any:
    """The raw `_id` of a source document (None when it has none or cannot be decoded)."""
    return None if isinstance(document, Undecodable) else document.get("_id")


def prepare_batch(
    spec: CollectionSpec,
    documents: Sequence[SourceDocument],
    superseded: Mapping[str, str],
    encoder: RowEncoder | None = None,
) -> PreparedBatch:
    """Convert every document of a batch (see module docstring).

    With `encoder`, each row is encoded for a binary COPY as soon as it is converted and the batch
    keeps neither the records nor their documents (only `positions`), so `documents` may decode
    each one on access and memory holds one document at a time; raises `Unencodable` if a value
    does not fit its column."""
    batch = PreparedBatch(
        read=len(documents), last_id=document_id(documents[-1]) if documents else None
    )
    parent_column = spec.parent[0] if spec.parent else None
    encoded: list[bytes] = []
    for position, document in enumerate(documents):
        converted = classify(spec, document, superseded)
        if converted.extra:
            (batch.extra_kept if converted.extra_kept else batch.extra_dropped).update(
                converted.extra
            )
        if converted.row is None:
            reason = converted.problem or "not convertible"
            batch.rejected.append(Rejection(converted.id, reason, document))
            continue
        row: Row = converted.row
        if converted.nul:
            batch.warnings.append(
                Warning(row["id"], f"{NUL_WARNING}: {_fields_with_nul(document)}")
            )
        if converted.nonfinite:
            batch.warnings.append(Warning(row["id"], NONFINITE_WARNING))
        if encoder is not None:
            encoded.append(encoder.encode_row(row))
        else:
            batch.records.append(to_record(spec, row))
            batch.documents.append(document)
        batch.positions.append(position)
        batch.ids.append(row["id"])
        if parent_column is not None:
            batch.parent_ids.append(row[parent_column])
    if encoder is not None:
        batch.binary = BinaryRows.of(encoded)
    return batch


def _fields_with_nul(document: SourceDocument) -> str:
    names = [key for key, value in dict(document).items() if _has_nul(value)]  # type: ignore[arg-type]
    return ", ".join(names)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False
