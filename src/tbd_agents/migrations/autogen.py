"""How autogenerate and `alembic check` compare the metadata with a database.

Shared by `env.py` and `tbd_agents.storage.postgres.migrate.schema_differences`, so the tests
compare exactly as `alembic check` does.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from alembic.autogenerate.api import AutogenContext

_VOLATILE_DEFAULT = re.compile(r"gen_random_uuid|clock_timestamp|random\(")


def _normalise_default(sql: str) -> str:
    return re.sub(r"[\s()]", "", sql).lower()


def _compare_server_default(
    _context: Any,
    _inspected_column: Any,
    _metadata_column: Any,
    inspected_default: str | None,
    _metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Compare volatile defaults (gen_random_uuid()) by their text: Alembic's usual way of
    evaluating both expressions on the server gives two different UUIDs. None = usual way."""
    sides = (inspected_default or "", rendered_metadata_default or "")
    if any(_VOLATILE_DEFAULT.search(side) for side in sides):
        a, b = (_normalise_default(side.strip("'\"")) for side in sides)
        return a != b
    return None


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render pgvector column types (VECTOR, HALFVEC, ...) with their import in revisions."""
    if type_ == "type" and type(obj).__module__.startswith("pgvector.sqlalchemy"):
        autogen_context.imports.add("import pgvector.sqlalchemy")
        return f"pgvector.sqlalchemy.{obj!r}"
    return False


def _include_object(
    obj: Any, _name: str | None, type_: str, _reflected: bool, compare_to: Any
) -> bool:
    """Skip comparing generated (computed) columns that exist on both sides: Alembic's
    server-default comparison crashes on them (it reads `.arg` of the reflected `Computed`), and
    their expression is fixed by the revision that created them."""
    if type_ == "column" and compare_to is not None:
        return getattr(obj, "computed", None) is None and compare_to.computed is None
    return True


def _compare_type(
    _context: Any,
    inspected_column: Any,
    _metadata_column: Any,
    inspected_type: Any,
    metadata_type: Any,
) -> bool | None:
    """Embedding columns may hold any size: `tbd-agents vectors reembed` changes it (and switches
    to halfvec above 2000 dimensions) and records it in `vector_collections`. None = usual way."""
    vector_types = ("pgvector.sqlalchemy",)
    if (
        inspected_column.name == "embedding"
        and type(inspected_type).__module__.startswith(vector_types)
        and type(metadata_type).__module__.startswith(vector_types)
    ):
        return False
    return None


#: Keyword arguments for `context.configure` / `MigrationContext.configure(opts=...)`.
AUTOGENERATE_OPTIONS: dict[str, Any] = {
    "include_object": _include_object,
    "render_item": _render_item,
    "compare_type": _compare_type,
    "compare_server_default": _compare_server_default,
    # CHECK constraints (enum columns, ranges) are compared by name too, so a new enum column
    # whose revision forgot its CHECK fails `alembic check`.
    "autogenerate_plugins": ["alembic.autogenerate.*", "alembic.ext.checkconstraint_byname"],
}
