"""Agent versions: a full snapshot of an agent at each save, for the builder's history.

Not one of the guide's 15 collections: an extra table (`agent_versions`) in PostgreSQL and an
extra collection in MongoDB, stored through the same repository protocol as API keys. A version's
`number` is the agent record's own `version` (its ETag) right after the write that produced the
snapshot: the storage layer raises it atomically with every change, so two concurrent saves can
never take the same number, and (agent_id, number) is unique. Writes that do not go through the
API (a raw SQL change, a migration) record no version: numbers may have gaps.
"""

from __future__ import annotations

from pydantic import Field

from tbd_agents.domain.models import Entity, Json, StrList


class AgentVersion(Entity):
    collection = "agent_versions"
    unique_keys = (("agent_id", "number"),)
    #: Whoever may read the agent may read its versions (checked on the agent).
    owner_field = None

    agent_id: str = Field(min_length=1, max_length=128)
    #: The agent's record version this snapshot is (1 at creation).
    number: int = Field(ge=1)
    #: The agent as presented by the API after the save (every field of the PUT body).
    snapshot: Json = Field(default_factory=dict)
    #: The fields this save changed (all of them for the first version).
    changed_fields: StrList = Field(default_factory=list)
    #: Who saved it (the caller's identity).
    github_user: str | None = None
    #: `created`, `updated`, or `restored from N`.
    summary: str = ""
