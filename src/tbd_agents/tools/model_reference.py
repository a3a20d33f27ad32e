"""Render the data-model reference (`docs/data-model.md`) from the domain models.

The page is generated so it cannot drift from the code: a test compares the committed file with
`render()`. Regenerate it with `python -m tbd_agents.tools.model_reference > docs/data-model.md`.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticUndefined
from sqlalchemy.dialects import postgresql

from tbd_agents.domain.models import ENTITIES, Entity
from tbd_agents.storage.postgres.schema import CASCADES, TABLES


def _default(table: str, name: str, field: Any) -> str:
    server_default = TABLES[table].c[name].server_default
    if server_default is not None:
        return f"`{getattr(server_default, 'arg', server_default)}`"
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    return "—"


_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _sql_type(table: str, column: str) -> str:
    return str(TABLES[table].c[column].type.compile(dialect=_DIALECT))


def _enum_values(table: str, column: str) -> str:
    for constraint in TABLES[table].constraints:
        name = str(getattr(constraint, "name", "") or "")
        if name == f"ck_{table}_{column}":
            sqltext = str(getattr(constraint, "sqltext", ""))
            return sqltext.split(" IN ", 1)[1] if " IN " in sqltext else ""
    return ""


def _entity_section(model: type[Entity]) -> list[str]:
    table = model.collection
    lines = [f"## `{table}` ({model.__name__})", ""]
    notes = []
    if model.unique_keys:
        keys = "; ".join("(" + ", ".join(k) + ")" for k in model.unique_keys)
        notes.append(f"Unique: {keys}.")
    owner = model.owner_field or "the parent record's owner"
    notes.append(f"Owner: `{owner}`." if model.owner_field else f"Owner: {owner}.")
    for ref, parent in CASCADES.get(table, ()):
        notes.append(f"`{ref}` → `{parent}.id`, deleted with its parent.")
    lines += [" ".join(notes), "", "| field | PostgreSQL type | null | default | values |"]
    lines.append("|---|---|---|---|---|")
    for name, field in model.model_fields.items():
        column = TABLES[table].c[name]
        lines.append(
            f"| `{name}` | {_sql_type(table, name)} | {'yes' if column.nullable else 'no'} "
            f"| {_default(table, name, field)} | {_enum_values(table, name)} |"
        )
    return [*lines, ""]


def render() -> str:
    out = [
        "# Data model",
        "",
        "Generated from `src/tbd_agents/domain/models.py` by "
        "`python -m tbd_agents.tools.model_reference`; do not edit by hand.",
        "",
        "Every record has `id` (text: a UUID, or the 24-hex ObjectId of a record that came from "
        "MongoDB), `created_at` and `updated_at` (timezone-aware UTC). In MongoDB the same fields "
        "are the keys of the document, with `_id` for `id`. Enum values are lower-case; input is "
        "matched case-insensitively.",
        "",
    ]
    for model in ENTITIES:
        out += _entity_section(model)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
