"""Options a revision reads while it runs.

`documents_only()`: the database is a documents-only one (a PostgreSQL server without pgvector,
e.g. an external server used to hold the 15 document tables): the revisions that need pgvector
(the extension and the vector tables) do nothing there, every other revision runs as usual. Set
with `alembic -x documents_only=true upgrade head`, `tbd-agents db upgrade --documents-only`, or
`migrate.upgrade_to_head(url, documents_only=True)`. The application refuses such a database at
start (it needs the vectors); the mode exists so the document tables can be kept at the current
schema on servers without pgvector, which is how the contract suite runs on PostgreSQL 15.
"""

from __future__ import annotations

from alembic import context

ATTRIBUTE = "documents_only"


def documents_only() -> bool:
    """True when the running migration skips the pgvector revisions (see the module docstring)."""
    if context.config.attributes.get(ATTRIBUTE):
        return True
    value = context.get_x_argument(as_dictionary=True).get(ATTRIBUTE, "")
    return str(value).strip().lower() in ("1", "true", "yes", "on")
