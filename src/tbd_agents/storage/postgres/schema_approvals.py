"""The `tool_approvals` table: derived from `tbd_agents.domain.approvals.ToolApproval` like the
15 entity tables (one typed column per field, indexes from `schema.BTREE_INDEXES`). No foreign
key: a run's approvals go with it in code, as on MongoDB. Registered in `schema.TABLES` so the
generic PostgreSQL repository serves it like any other entity.
"""

from __future__ import annotations

from tbd_agents.domain.approvals import ToolApproval
from tbd_agents.storage.postgres.schema import TABLES, _table_for

tool_approvals = _table_for(ToolApproval)
TABLES[ToolApproval.collection] = tool_approvals

__all__ = ["tool_approvals"]
