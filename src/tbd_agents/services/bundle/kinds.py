"""The kinds of record a bundle carries, in import order, and what of each travels in one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tbd_agents.domain.models import (
    Agent,
    CustomTool,
    Entity,
    Guardrail,
    KnowledgeItem,
    KnowledgeSource,
    McpServer,
    Provider,
    ScheduledAgent,
    Skill,
    Workflow,
)
from tbd_agents.services.resources import spec_of

BUNDLE_VERSION = "1.0"
#: Versions this server reads (the existing system wrote "1.0" and never checked it).
READABLE_VERSIONS = frozenset({"1.0", "1"})
#: Marker of bundles written by earlier versions of this hub (`resources` map, integer version).
LEGACY_FORMAT = "tbd-agents-bundle"
LEGACY_VERSION = 1
#: `resource_type` of a full bundle (the existing server wrote "bundle", its SDK defaults "full").
FULL_TYPES = frozenset({"bundle", "full"})


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of record a bundle carries."""

    model: type[Entity]
    resource_type: str  # `resource_type` of its per-resource bundle
    path: str  # its segment under /api
    #: Fields left out of the export besides ids, owners, timestamps and server-managed state.
    not_exported: frozenset[str] = frozenset()
    #: Fields an import ignores (state that belongs to the records' runs).
    not_imported: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        """Its list in a full bundle (the collection name)."""
        return self.model.collection


#: Kinds in import order: every record comes after the records it references.
KINDS: tuple[Kind, ...] = (
    Kind(Provider, "provider", "providers"),
    Kind(Skill, "skill", "skills"),
    Kind(McpServer, "mcp_server", "mcps"),
    Kind(CustomTool, "custom_tool", "custom-tools"),
    Kind(Guardrail, "guardrail", "guardrails"),
    Kind(KnowledgeSource, "knowledge_source", "knowledge-sources"),
    Kind(KnowledgeItem, "knowledge_item", "knowledge-items"),
    Kind(Agent, "agent", "agents"),
    Kind(
        Workflow,
        "workflow",
        "workflows",
        not_exported=frozenset(
            {"status", "credential_overrides", "webhook_url", "error_webhook_url"}
        ),
        not_imported=frozenset({"status"}),
    ),
    Kind(
        ScheduledAgent,
        "scheduled_agent",
        "scheduled-agents",
        not_exported=frozenset({"enabled"}),
    ),
)
ORDER: tuple[type[Entity], ...] = tuple(k.model for k in KINDS)
KIND_OF: dict[type[Entity], Kind] = {k.model: k for k in KINDS}
BY_KEY: dict[str, Kind] = {k.key: k for k in KINDS}
BY_RESOURCE_TYPE: dict[str, Kind] = {k.resource_type: k for k in KINDS}
#: The four lists of the existing full bundle, in its order.
REFERENCE_KEYS = ("skills", "agents", "workflows", "knowledge_sources")
#: Kinds with per-resource export/import routes (`/api/<path>/export`, `/api/<path>/import`).
ROUTED: tuple[Kind, ...] = tuple(k for k in KINDS if k.model is not KnowledgeItem)

#: Natural key a bundle record is matched on (besides the importer as owner) in skip / rename /
#: overwrite mode.
MATCH_KEYS: dict[type[Entity], tuple[str, ...]] = {
    Workflow: ("agent_id", "title"),
    ScheduledAgent: ("workflow_id", "name"),
    KnowledgeItem: ("source_id", "name", "file_name"),
}

#: Kept by each instance for itself: never exported, never imported (an imported record starts
#: at version 1; an overwritten one gets the next version of the record it overwrites).
_SERVER_FIELDS = frozenset({"id", "created_at", "updated_at", "version", "extras"})


class ImportMode(StrEnum):
    CREATE = "create"
    SKIP = "skip"
    RENAME = "rename"
    OVERWRITE = "overwrite"


def _owned_fields(model: type[Entity]) -> set[str]:
    spec = spec_of(model)
    hidden = set(_SERVER_FIELDS) | set(spec.managed)
    if model.owner_field:
        hidden.add(model.owner_field)
    return set(model.model_fields) - hidden


def exported_fields(kind: Kind) -> set[str]:
    return _owned_fields(kind.model) - kind.not_exported


def imported_fields(kind: Kind) -> set[str]:
    return _owned_fields(kind.model) - kind.not_imported
