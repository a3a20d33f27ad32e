"""Agent versions: every create and update of an agent through the API records a snapshot
(`domain/versions.py`); the builder lists them, shows one, and restores one.

`AgentRecords` is the service of agents (`services/catalog.records_for`): the plain `Records`
plus, in the same unit of work as the write, the version row. Its number is the agent's record
version after the write, which the storage layer raises atomically, so concurrent saves get
distinct numbers without a counter. Deleting an agent deletes its versions (a deleted agent has
nothing to restore to; its id is not reused).

A restore writes the snapshot's fields over the agent (conditional on the version the caller
names in `If-Match`, or read-modify-write retried on a concurrent change without one), which is
a save like any other: it records a new version, `restored from N`.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping
from functools import cached_property
from typing import Any

from tbd_agents.domain.models import Agent
from tbd_agents.domain.versions import AgentVersion
from tbd_agents.errors import NotFound, VersionConflict
from tbd_agents.services.access import Principal
from tbd_agents.services.records import MODIFY_ATTEMPTS, Records
from tbd_agents.storage.protocol import Query, Repositories, Repository, Sort, eq

#: Agent fields that are not part of a snapshot (server-managed, or the owner).
NOT_SNAPSHOT = frozenset({"id", "created_at", "updated_at", "version", "extras", "created_by"})


def snapshot_of(agent: Agent) -> dict[str, Any]:
    """The agent's editable fields as JSON values (what a PUT body holds)."""
    return agent.model_dump(mode="json", exclude=set(NOT_SNAPSHOT))


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """The fields whose value differs (every field when there is no `before`)."""
    if before is None:
        return sorted(after)
    return sorted(k for k in after if before.get(k) != after[k])


class AgentRecords(Records[Agent]):
    """Agents, with a version recorded at every create and update, deleted with the agent."""

    def __init__(self, repos: Repositories, principal: Principal) -> None:
        super().__init__(repos, principal, Agent)

    @cached_property
    def versions(self) -> Repository[AgentVersion]:
        """The versions' repository, looked up by the writes that need it (not by every read)."""
        return self.repos.for_model(AgentVersion)

    async def _record(
        self, agent: Agent, before: Mapping[str, Any] | None, summary: str
    ) -> AgentVersion:
        after = snapshot_of(agent)
        changed = changed_fields(before, after)
        created: AgentVersion = await self.versions.create(
            AgentVersion(
                agent_id=agent.id, number=max(agent.version, 1), snapshot=after,
                changed_fields=changed, github_user=self.principal.identity, summary=summary,
            )
        )  # fmt: skip
        return created

    async def create(self, data: Mapping[str, Any]) -> Agent:
        agent = await super().create(data)
        await self._record(agent, None, "created")
        return agent

    async def update(
        self,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        expected_versions: Collection[int] | None = None,
        summary: str = "updated",
    ) -> Agent:
        before = await self.get(record_id)
        agent = await super().update(record_id, changes, expected_versions=expected_versions)
        if agent.version != before.version:  # an empty change writes nothing
            await self._record(agent, snapshot_of(before), summary)
        return agent

    async def delete(
        self, record_id: str, *, expected_versions: Collection[int] | None = None
    ) -> Agent:
        agent = await super().delete(record_id, expected_versions=expected_versions)
        await self.versions.delete_where(eq("agent_id", agent.id))
        return agent

    # --- versions ----------------------------------------------------------------------------
    async def list_versions(self, agent_id: str) -> builtins.list[AgentVersion]:
        """The agent's versions, newest first (NotFound when the caller may not see it)."""
        agent = await self.get(agent_id)
        page = await self.versions.list(
            Query(filters=(eq("agent_id", agent.id),), sort=(Sort("number", True),))
        )
        return page.items

    async def get_version(self, agent_id: str, number: int) -> AgentVersion:
        agent = await self.get(agent_id)
        found = await self.versions.find_one(eq("agent_id", agent.id), eq("number", number))
        if found is None:
            raise NotFound("agent_versions", f"{agent_id} version {number}")
        return found

    async def restore(
        self, agent_id: str, number: int, *, expected_versions: Collection[int] | None = None
    ) -> Agent:
        """Write version `number`'s snapshot over the agent: a new version."""
        old = await self.get_version(agent_id, number)
        fields = set(Agent.model_fields) - NOT_SNAPSHOT
        changes = {k: v for k, v in old.snapshot.items() if k in fields}
        summary = f"restored from {number}"
        for attempt in range(1, MODIFY_ATTEMPTS + 1):
            current = await self.get(agent_id)
            wanted = expected_versions if expected_versions is not None else {current.version}
            try:
                return await self.update(
                    agent_id, changes, expected_versions=wanted, summary=summary
                )
            except VersionConflict:  # another save came first: restore over it (no If-Match)
                if expected_versions is not None or attempt == MODIFY_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["AgentRecords", "changed_fields", "snapshot_of"]
