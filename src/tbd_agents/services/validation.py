"""Base class of every request body: unknown fields refused, NUL characters refused.

PostgreSQL text and JSONB cannot hold U+0000, so a NUL anywhere in a body is refused with 422
(naming where it is) on every backend alike, instead of failing deep in the database.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def find_nul(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (key or value) holding U+0000, or None."""
    if isinstance(value, str):
        return path or "(value)" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return where
            found = find_nul(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_nul(item, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        where = find_nul(data)
        if where is not None:
            raise ValueError(f"{where}: text may not contain the NUL character (U+0000)")
        return data
