"""Field types shared by the domain models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator


def new_id() -> str:
    """A fresh record id (UUID text, as PostgreSQL's `gen_random_uuid()::text` makes)."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """Now, timezone-aware UTC, in whole milliseconds: the precision every backend keeps (BSON
    dates hold milliseconds), so a record's default timestamps read back exactly as created."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def to_utc(value: datetime) -> datetime:
    """Timezone-aware UTC. A naive value is taken as UTC (how BSON and most stores write time)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _normalise_enum_input(value: Any) -> Any:
    # Matching is the enum's own (`LenientStrEnum._missing_`: any case, `-` or `_`), so a value
    # spelled with dashes (`x-api-key`) stays as written; only surrounding blanks go here.
    if isinstance(value, str) and not isinstance(value, StrEnum):
        return value.strip()
    return value


UtcDatetime = Annotated[datetime, AfterValidator(to_utc)]
"""A datetime that is always timezone-aware UTC after validation."""

LenientEnum = BeforeValidator(_normalise_enum_input)
"""Accept enum values with surrounding blanks (matching itself is the enum's `_missing_`)."""
