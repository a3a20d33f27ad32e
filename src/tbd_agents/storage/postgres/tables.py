"""Every table of the PostgreSQL schema, gathered on one metadata (what Alembic compares against).

The 15 entity tables come from `schema`; tables that only some features need (API keys, run
events, knowledge chunks, migration checkpoints…) live in their own modules and are imported here.
"""

from tbd_agents.storage.postgres import (
    schema_approvals,  # noqa: F401  (registers its tables)
    schema_auth,  # noqa: F401  (registers its tables)
    schema_migration,  # noqa: F401  (registers its tables)
    schema_runtime,  # noqa: F401  (registers its tables)
    schema_usage,  # noqa: F401  (registers its tables)
    schema_vectors,  # noqa: F401  (registers its tables)
    schema_versions,  # noqa: F401  (registers its tables)
)
from tbd_agents.storage.postgres.schema import TABLES, metadata

__all__ = ["TABLES", "metadata"]
