"""The `api_keys` table: derived from `tbd_agents.domain.auth.ApiKey` like the 15 entity tables.

Only the SHA-256 digest of a key is stored (UNIQUE, so authentication is one index lookup); the
owner column is indexed for "my keys" listings. Registered in `schema.TABLES` so the generic
PostgreSQL repository serves it like any other entity.
"""

from __future__ import annotations

from sqlalchemy import Index

from tbd_agents.domain.auth import ApiKey
from tbd_agents.storage.postgres.schema import TABLES, _table_for

api_keys = _table_for(ApiKey)
Index("idx_api_keys_owner", api_keys.c.owner)
TABLES[ApiKey.collection] = api_keys

__all__ = ["api_keys"]
