"""The `agent_versions` table: derived from `tbd_agents.domain.versions.AgentVersion` like the
15 entity tables. UNIQUE (agent_id, number) (one snapshot per agent record version) also serves
"this agent's versions, newest first". No foreign key: the agent's delete removes its versions in
code (`services/agent_versions.py`), as on MongoDB. Registered in `schema.TABLES` so the generic
PostgreSQL repository serves it like any other entity.
"""

from __future__ import annotations

from tbd_agents.domain.versions import AgentVersion
from tbd_agents.storage.postgres.schema import TABLES, _table_for

agent_versions = _table_for(AgentVersion)
TABLES[AgentVersion.collection] = agent_versions

__all__ = ["agent_versions"]
