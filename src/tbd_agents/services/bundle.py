"""Export and import of bundles in the existing TBD Agents format, with ids remapped.

The wire format is the existing system's (reference §4.17):

* full: `{"version": "1.0", "exported_at", "resource_type": "bundle", "skills": [...],
  "agents": [...], "workflows": [...], "knowledge_sources": [...]}`;
* per resource: `{"version": "1.0", "exported_at", "resource_type": "agent", "items": [...]}`.

What this hub adds are extra keys an existing reader ignores (its models allow extra keys):
every exported item carries its `id` (so an import can point references at the records it
creates), the full bundle also lists `providers`, `mcp_servers`, `custom_tools`, `guardrails`,
`scheduled_agents` (and `knowledge_items` on request), `tokens_required` names the tokens the
records use (values are never exported) and `redacted` says where a password was removed from a
connection string.

Import walks the kinds parents-first and always creates new records by default (`mode=create`,
as the existing system did); `skip`, `rename` and `overwrite` match a record of the importer by
its natural key instead. A reference is rewritten through the id map when it names a record of
the bundle, kept when it names a record the importer can see, and otherwise the item is not
imported and the reason is in its kind's `errors` (never a silently dangling id). Every item is
checked like a POST of the same record (through `check`, the API's request schema, and the
resource's service); an item that fails is reported and the others are imported.

Bundles written by earlier versions of this hub (`{"format": "tbd-agents-bundle", "version": 1,
"resources": {...}}`) are read too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field

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
    Token,
    Workflow,
)
from tbd_agents.domain.types import new_id, utcnow
from tbd_agents.errors import ConfigurationError, InvalidData, TbdError
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.services.access import Principal, owner_filters
from tbd_agents.services.catalog import SECRET_FIELDS, records_for
from tbd_agents.services.records import Records
from tbd_agents.services.resources import spec_of
from tbd_agents.services.tokens import is_connection_secret, referenced_names
from tbd_agents.storage.protocol import (
    Filter,
    Query,
    Repositories,
    Sort,
    contains_any,
    eq,
    in_,
    is_null,
)

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


# --- export ------------------------------------------------------------------------------


def _without_password(url: str) -> str:
    """`url` with the password of its user-info removed (`scheme://user@host/...`)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    netloc = f"{user}@{host}" if user else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _redact(tree: Any, path: str, found: list[str]) -> Any:
    if isinstance(tree, Mapping):
        return {k: _redact(v, f"{path}.{k}", found) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_redact(v, f"{path}.{i}", found) for i, v in enumerate(tree)]
    if isinstance(tree, str) and is_connection_secret(tree):
        found.append(path)
        return _without_password(tree)
    return tree


def _export_record(kind: Kind, record: Entity, where: str, redacted: list[str]) -> dict[str, Any]:
    item: dict[str, Any] = {"id": record.id}
    item.update(record.model_dump(mode="json", include=exported_fields(kind)))
    for name in SECRET_FIELDS.get(kind.model, ()):
        if item.get(name) is not None:
            item[name] = _redact(item[name], f"{where}.{name}", redacted)
    return item


@dataclass
class _Exported:
    lists: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    redacted: list[str] = field(default_factory=list)

    def add(self, kind: Kind, records: Sequence[Entity], where: Callable[[int], str]) -> None:
        if kind.model is Agent:
            records = delegates_first(records)
        rows = [_export_record(kind, r, where(i), self.redacted) for i, r in enumerate(records)]
        self.lists[kind.key] = rows
        self.tokens |= referenced_names(rows)
        if kind.model is Provider:
            self.tokens |= {r["api_key_token_name"] for r in rows if r.get("api_key_token_name")}
        if kind.model is Workflow:
            self.tokens |= {r["repo_token_name"] for r in rows if r.get("repo_token_name")}

    def envelope(self, resource_type: str) -> dict[str, Any]:
        return {"version": BUNDLE_VERSION, "exported_at": utcnow().isoformat(),
                "resource_type": resource_type}  # fmt: skip

    def extras(self) -> dict[str, Any]:
        return {"tokens_required": sorted(self.tokens), "redacted": self.redacted}


def delegates_first(agents: Sequence[Entity]) -> list[Entity]:
    """`agents` with every agent after the agents of the list it calls as tools
    (`agent_tool_ids`), otherwise in their order: an import creates them in this order, and an
    agent's agent tools must exist when it is created. A cycle (not savable, but data can hold
    one) is broken where it closes."""
    by_id = {a.id: a for a in agents}
    placed: dict[str, Entity] = {}
    visiting: set[str] = set()

    def place(agent: Entity) -> None:
        if agent.id in placed or agent.id in visiting:
            return
        visiting.add(agent.id)
        for target in getattr(agent, "agent_tool_ids", []):
            if target in by_id:
                place(by_id[target])
        visiting.discard(agent.id)
        placed[agent.id] = agent

    for agent in agents:
        place(agent)
    return list(placed.values())


async def _delegates(repos: Repositories, principal: Principal, agent: Agent) -> list[Entity]:
    """The agents `agent` calls as tools, theirs, and so on (those the caller can see)."""
    found: dict[str, Entity] = {agent.id: agent}
    wanted = [i for i in agent.agent_tool_ids if i not in found]
    while wanted:
        query = Query(filters=(in_("id", wanted), *owner_filters(Agent, principal)))
        batch = [r async for r in repos.agents.iterate(query)]
        for record in batch:
            found.setdefault(record.id, record)
        wanted = sorted({t for r in batch for t in r.agent_tool_ids if t not in found})
    return list(found.values())


async def _visible(repos: Repositories, principal: Principal, kind: Kind) -> list[Entity]:
    query = Query(filters=owner_filters(kind.model, principal), sort=(Sort("created_at"),))
    return [r async for r in repos.for_model(kind.model).iterate(query)]


async def export_bundle(
    repos: Repositories, principal: Principal, *, include_items: bool = False
) -> dict[str, Any]:
    """The full bundle of every record the caller can see (one query per kind)."""
    out = _Exported()
    for kind in KINDS:
        if kind.model is KnowledgeItem:
            if not include_items:
                continue
            ids = [r["id"] for r in out.lists.get(KnowledgeSource.collection, [])]
            query = Query(filters=(in_("source_id", ids),), sort=(Sort("created_at"),))
            records: list[Entity] = [r async for r in repos.for_model(KnowledgeItem).iterate(query)]
        else:
            records = await _visible(repos, principal, kind)
        out.add(kind, records, lambda i, key=kind.key: f"{key}.{i}")  # type: ignore[misc]
    body = out.envelope("bundle")
    body["format"] = LEGACY_FORMAT
    for key in REFERENCE_KEYS:  # the existing lists first, in the existing order
        body[key] = out.lists.pop(key)
    body.update(out.lists)
    body.update(out.extras())
    return body


async def export_kind(
    repos: Repositories, principal: Principal, kind: Kind, record_id: str | None = None
) -> dict[str, Any]:
    """The per-resource bundle of `kind`: every visible record, or the one `record_id`."""
    if record_id is None:
        records = await _visible(repos, principal, kind)
    else:
        service: Records[Any] = Records(repos, principal, kind.model)
        records = [await service.get(record_id)]
    out = _Exported()
    out.add(kind, records, lambda i: f"items.{i}")
    body = out.envelope(kind.resource_type)
    body["items"] = out.lists[kind.key]
    body.update(out.extras())
    return body


#: What an agent uses, per kind: (field of ids, field of tags selecting records by tag or None).
AGENT_DEPENDENCIES: tuple[tuple[type[Entity], str, str | None], ...] = (
    (Provider, "provider_id", None),
    (Skill, "skill_ids", "skill_tags"),
    (McpServer, "mcp_server_ids", "mcp_server_tags"),
    (CustomTool, "custom_tool_ids", None),
    (Guardrail, "guardrail_ids", None),
    (KnowledgeSource, "knowledge_source_ids", "knowledge_tags"),
)


async def _used_by(
    repos: Repositories, principal: Principal, model: type[Entity], ids: list[str],
    tags: list[str],
) -> list[Entity]:  # fmt: skip
    """The records of `model` the caller can see, named by id or carrying one of the tags."""
    repo = repos.for_model(model)
    own = owner_filters(model, principal)
    found: dict[str, Entity] = {}
    for group in ([in_("id", ids)] if ids else []) + ([contains_any("tags", tags)] if tags else []):
        query = Query(filters=(group, *own), sort=(Sort("created_at"),))
        found.update({r.id: r async for r in repo.iterate(query) if r.id not in found})
    return sorted(found.values(), key=lambda r: (r.created_at, r.id))


async def export_agent(
    repos: Repositories, principal: Principal, agent_id: str, *, include_items: bool = False
) -> dict[str, Any]:
    """A full bundle of one agent and what it uses: the agents it calls as tools (and theirs,
    placed before it), its and their provider, skills, MCP servers, custom tools, guardrails
    and knowledge sources (named by id, or selected by the agents' tags), and
    on request the sources' knowledge items. Secrets as in every export: tokens by name only,
    passwords removed from connection strings. Records the caller cannot see are left out (an
    import then reports the agent's reference to them)."""
    agent: Agent = await Records(repos, principal, Agent).get(agent_id)
    agents = await _delegates(repos, principal, agent)  # the agents it calls as tools, too
    picked: dict[type[Entity], list[Entity]] = {Agent: agents}
    for model, ids_field, tags_field in AGENT_DEPENDENCIES:
        ids, tags = [], []
        for one in agents:
            raw = getattr(one, ids_field)
            ids += [raw] if isinstance(raw, str) else list(raw or [])
            tags += list(getattr(one, tags_field)) if tags_field else []
        picked[model] = await _used_by(
            repos, principal, model, list(dict.fromkeys(ids)), list(dict.fromkeys(tags))
        )
    if include_items:
        source_ids = [r.id for r in picked[KnowledgeSource]]
        query = Query(filters=(in_("source_id", source_ids),), sort=(Sort("created_at"),))
        picked[KnowledgeItem] = [r async for r in repos.for_model(KnowledgeItem).iterate(query)]
    out = _Exported()
    for kind in KINDS:
        if kind.model in picked:
            out.add(kind, picked[kind.model], lambda i, key=kind.key: f"{key}.{i}")  # type: ignore[misc]
    body = out.envelope("bundle")
    body["format"] = LEGACY_FORMAT
    for key in REFERENCE_KEYS:
        body[key] = out.lists.pop(key, [])
    body.update(out.lists)
    body.update(out.extras())
    return body


# --- reading a bundle --------------------------------------------------------------------


@dataclass
class ParsedBundle:
    lists: dict[str, list[Any]]
    tokens_required: list[str]


def _refuse(message: str, where: str) -> InvalidData:
    return InvalidData(message, details={"field": where})


def _check_version(body: Mapping[str, Any]) -> None:
    if "version" not in body or body["version"] is None:
        return
    raw = body["version"]
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise _refuse('version must be a string such as "1.0"', "version")
    text = f"{float(raw):.1f}" if isinstance(raw, (int, float)) else raw.strip()
    if text not in READABLE_VERSIONS:
        raise _refuse(
            f"unsupported bundle version {raw!r}: this server reads version {BUNDLE_VERSION} "
            "bundles (export the bundle again from a matching TBD Agents)",
            "version",
        )


def _list_of(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body[key]
    if not isinstance(value, list):
        raise _refuse(f"{key} must be a list of records, not {type(value).__name__}", key)
    return value


def _tokens_required(body: Mapping[str, Any]) -> list[str]:
    raw = body.get("tokens_required") or []
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise _refuse("tokens_required must be a list of token names", "tokens_required")
    return sorted(set(raw))


def _parse_legacy(body: Mapping[str, Any]) -> ParsedBundle:
    """A bundle of an earlier version of this hub: `{format, version: 1, resources: {...}}`."""
    version = body.get("version", LEGACY_VERSION)
    if version != LEGACY_VERSION:
        raise _refuse(
            f"unsupported bundle version {version!r} of format {LEGACY_FORMAT!r}: this server "
            f'reads version {LEGACY_VERSION} (and "{BUNDLE_VERSION}" bundles without `format`)',
            "version",
        )
    resources = body.get("resources")
    if not isinstance(resources, Mapping) or not resources:
        raise _refuse("the bundle has no `resources` with records to import", "resources")
    unknown = sorted(set(resources) - set(BY_KEY))
    if unknown:
        raise _refuse(
            f"bundle has unknown collections {unknown}; known: {sorted(BY_KEY)}", "resources"
        )
    lists = {key: _list_of(resources, key) for key in resources}
    return ParsedBundle(lists, _tokens_required(body))


def parse_bundle(body: Any, expected: Kind | None = None) -> ParsedBundle:
    """The lists of records in `body`, by kind key; InvalidData (422) saying what to fix for a
    body that is not a bundle this server reads. `expected`: the kind of a per-resource route."""
    if not isinstance(body, Mapping):
        raise _refuse("a bundle is a JSON object", "body")
    fmt = body.get("format")
    if fmt is not None and fmt != LEGACY_FORMAT:
        raise _refuse(f"unknown bundle format {fmt!r}: expected {LEGACY_FORMAT!r}", "format")
    if "resources" in body:
        if expected is not None:
            raise _refuse(
                f"this is a full bundle: POST it to /api/import (this route takes "
                f'{{"items": [...]}} of {expected.key})',
                "items",
            )
        return _parse_legacy(body)
    _check_version(body)
    kind_name = body.get("resource_type")
    if kind_name is not None and (
        not isinstance(kind_name, str)
        or (kind_name not in FULL_TYPES and kind_name not in BY_RESOURCE_TYPE)
    ):
        raise _refuse(
            f"unknown resource_type {kind_name!r}: expected one of "
            f"{sorted(FULL_TYPES | set(BY_RESOURCE_TYPE))}",
            "resource_type",
        )
    if "items" in body:
        kind = expected
        named = BY_RESOURCE_TYPE.get(kind_name) if isinstance(kind_name, str) else None
        if kind_name in FULL_TYPES:
            raise _refuse("a bundle with resource_type 'bundle' has no `items`", "items")
        if kind is not None and named is not None and named is not kind:
            raise _refuse(
                f"this bundle holds {named.key} (resource_type {kind_name!r}): POST it to "
                f"/api/{named.path}/import",
                "resource_type",
            )
        kind = kind or named
        if kind is None:
            raise _refuse(
                "a bundle of `items` needs its resource_type (agent, skill, workflow, "
                "knowledge_source, ...), or POST it to /api/<resource>/import",
                "resource_type",
            )
        return ParsedBundle({kind.key: _list_of(body, "items")}, _tokens_required(body))
    if expected is not None:
        raise _refuse(
            f'the body has no `items`: this route takes {{"items": [...]}} of {expected.key}',
            "items",
        )
    if kind_name in BY_RESOURCE_TYPE:
        raise _refuse(f"a bundle with resource_type {kind_name!r} needs `items`", "items")
    lists = {key: _list_of(body, key) for key in BY_KEY if key in body}
    if not lists:
        raise _refuse(
            "the body has none of the lists of a bundle (" + ", ".join(REFERENCE_KEYS) + ", …): "
            "nothing to import",
            "body",
        )
    return ParsedBundle(lists, _tokens_required(body))


# --- the import report -------------------------------------------------------------------


class ImportResult(BaseModel):
    """The existing `ImportResult {created, errors, ids}`, plus the counts of the other modes."""

    created: int = Field(default=0, description="Records created (or that would be, dry run).")
    errors: list[str] = Field(
        default_factory=list, description="One message per item not imported, naming the item."
    )
    ids: list[str] = Field(default_factory=list, description="Ids of the records created.")
    skipped: int = Field(default=0, description="Items matching an existing record (mode=skip).")
    overwritten: int = Field(default=0, description="Existing records updated (mode=overwrite).")


class ConflictOut(BaseModel):
    collection: str
    name: str
    existing_id: str
    action: str


class RenameOut(BaseModel):
    collection: str
    old_name: str = Field(serialization_alias="from", validation_alias="from")
    new_name: str = Field(serialization_alias="to", validation_alias="to")

    model_config = {"populate_by_name": True}


class ImportExtras(BaseModel):
    dry_run: bool = False
    mode: ImportMode = ImportMode.CREATE
    conflicts: list[ConflictOut] = Field(default_factory=list)
    renamed: list[RenameOut] = Field(default_factory=list)
    missing_tokens: list[str] = Field(
        default_factory=list, description="Token names the records use that you do not have."
    )


class BundleImportReport(ImportExtras):
    """The existing `BundleImportResult` (one ImportResult per kind) and this hub's extras."""

    skills: ImportResult = Field(default_factory=ImportResult)
    agents: ImportResult = Field(default_factory=ImportResult)
    workflows: ImportResult = Field(default_factory=ImportResult)
    knowledge_sources: ImportResult = Field(default_factory=ImportResult)
    providers: ImportResult = Field(default_factory=ImportResult)
    mcp_servers: ImportResult = Field(default_factory=ImportResult)
    custom_tools: ImportResult = Field(default_factory=ImportResult)
    guardrails: ImportResult = Field(default_factory=ImportResult)
    knowledge_items: ImportResult = Field(default_factory=ImportResult)
    scheduled_agents: ImportResult = Field(default_factory=ImportResult)
    id_map: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Per collection: bundle id → id on this instance."
    )

    def of(self, kind: Kind) -> ImportResult:
        result: ImportResult = getattr(self, kind.key)
        return result


class ResourceImportReport(ImportResult, ImportExtras):
    """A per-resource import: the existing `ImportResult` and this hub's extras."""

    id_map: dict[str, str] = Field(
        default_factory=dict, description="Bundle id → id on this instance."
    )


def resource_report(report: BundleImportReport, kind: Kind) -> ResourceImportReport:
    return ResourceImportReport(
        **report.of(kind).model_dump(),
        dry_run=report.dry_run,
        mode=report.mode,
        conflicts=[c for c in report.conflicts if c.collection == kind.key],
        renamed=[r for r in report.renamed if r.collection == kind.key],
        missing_tokens=report.missing_tokens,
        id_map=report.id_map.get(kind.key, {}),
    )


# --- import ------------------------------------------------------------------------------

#: Checks one record as a create request would (the API's request schema, outbound rules):
#: returns the values to create, or raises InvalidData naming the field.
Check = Callable[[type[Entity], dict[str, Any]], dict[str, Any]]


def _no_check(model: type[Entity], values: dict[str, Any]) -> dict[str, Any]:
    return values


def _no_cipher() -> TokenCipher:
    raise ConfigurationError("importing a connection password needs the token cipher")


class _ItemFailed(Exception):
    """One item is not imported; `message` says why (recorded in its kind's `errors`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _label_field(model: type[Entity]) -> str | None:
    """The field a user tells records of `model` apart by: `name`, or a workflow's `title`."""
    if "name" in model.model_fields:
        return "name"
    return "title" if "title" in model.model_fields else None


def _scope(model: type[Entity], label: str, values: Mapping[str, Any]) -> tuple[Any, ...]:
    """Where a name must be free: the collection, and the parent of a workflow's title or a
    schedule's name (the other fields of its match key)."""
    return (model.collection, *(values.get(k) for k in MATCH_KEYS.get(model, ()) if k != label))


def _user_error(exc: TbdError) -> bool:
    return 400 <= exc.http_status < 500


@dataclass
class _Importer:
    repos: Repositories
    principal: Principal
    mode: ImportMode
    dry_run: bool
    report: BundleImportReport
    check: Check
    cipher: Callable[[], TokenCipher]
    index_later: list[tuple[str | None, KnowledgeItem]] | None
    #: Ids of the bundle, per collection: the id each was given (or matched) here.
    id_map: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Bundle ids (per collection) of items that were not imported.
    failed: dict[str, set[str]] = field(default_factory=dict)
    #: Ids found on this instance (per collection), so each is looked up once.
    seen: dict[str, set[str]] = field(default_factory=dict)
    parent_outcome: dict[str, str] = field(default_factory=dict)  # source id → action
    #: Names (titles) given to the items of this import so far, per collection: a rename never
    #: picks one twice, even in a dry run (which writes nothing to look up).
    reserved: dict[tuple[Any, ...], set[str]] = field(default_factory=dict)

    async def run(self, kind: Kind, index: int, raw: Any) -> None:
        result = self.report.of(kind)
        name = raw.get("name") or raw.get("title") if isinstance(raw, Mapping) else None
        label = f"{kind.key}[{index}]" + (f" {name!r}" if isinstance(name, str) and name else "")
        old_id = raw.get("id") if isinstance(raw, Mapping) else None
        try:
            if not isinstance(raw, Mapping):
                raise _ItemFailed(f"an item is a JSON object, not {type(raw).__name__}")
            await self._one(kind, raw, str(old_id) if isinstance(old_id, str) else None)
        except _ItemFailed as exc:
            result.errors.append(f"{label}: {exc.message}")
        except TbdError as exc:
            if not _user_error(exc):
                raise
            result.errors.append(f"{label}: {exc.message}")
        else:
            return
        if isinstance(old_id, str):
            self.failed.setdefault(kind.key, set()).add(old_id)

    # --- references ---
    async def _exists(self, target: type[Entity], value: str) -> bool:
        known = self.seen.setdefault(target.collection, set())
        if value in known:
            return True
        if not 0 < len(value) <= 128:
            return False
        found = await self.repos.for_model(target).find_one(
            eq("id", value), *owner_filters(target, self.principal)
        )
        if found is not None:
            known.add(value)
        return found is not None

    async def _resolve(self, ref_field: str, target: type[Entity], value: Any) -> Any:
        if not isinstance(value, str):
            return value  # the request schema names the wrong type
        mapped = self.id_map.get(target.collection, {}).get(value)
        if mapped is not None:
            return mapped
        if value in self.failed.get(target.collection, set()):
            raise _ItemFailed(
                f"{ref_field}: {target.collection} {value!r} of this bundle was not imported "
                f"(see the errors of {target.collection})"
            )
        if await self._exists(target, value):
            return value
        raise _ItemFailed(
            f"{ref_field}: {target.collection} {value!r} is neither in the bundle nor a record "
            "you can see on this instance"
        )

    async def _remap(self, kind: Kind, record: dict[str, Any]) -> None:
        spec = spec_of(kind.model)
        for ref in (*spec.references, *([spec.parent] if spec.parent else [])):
            value = record.get(ref.field)
            if value is None or ref.by != "id":
                continue
            if ref.many and isinstance(value, list):
                record[ref.field] = [await self._resolve(ref.field, ref.target, v) for v in value]
            elif not ref.many:
                record[ref.field] = await self._resolve(ref.field, ref.target, value)

    # --- one item ---
    async def _one(self, kind: Kind, raw: Mapping[str, Any], old_id: str | None) -> None:
        model = kind.model
        keep = imported_fields(kind)
        record = {k: v for k, v in raw.items() if k in keep}
        await self._remap(kind, record)
        if model is KnowledgeItem and self.parent_outcome.get(record.get("source_id", "")) == (
            "skip"
        ):
            self.report.of(kind).skipped += 1
            return
        values = self.check(model, record)
        existing = None if self.mode is ImportMode.CREATE else await self._match(model, values)
        name = str(values.get("name") or values.get("title") or "")
        if existing is not None and self.mode is ImportMode.SKIP:
            self._conflict(model, name, existing.id, "skipped")
            self._map(kind, old_id, existing.id, "skip")
            self.report.of(kind).skipped += 1
            return
        if existing is not None and self.mode is ImportMode.OVERWRITE:
            await self._overwrite(kind, existing, values)
            self._conflict(model, name, existing.id, "overwritten")
            self._map(kind, old_id, existing.id, "overwrite")
            self.report.of(kind).overwritten += 1
            return
        label = _label_field(model)
        if label is not None and isinstance(values.get(label), str):
            wanted = values[label]
            taken = (
                existing is not None
                or wanted in self.reserved.get(_scope(model, label, values), set())
                or await self._name_taken(model, wanted)
            )
            if (
                taken
                and self.mode is not ImportMode.RENAME
                and (existing is not None or (label == "name" and ("name",) in model.unique_keys))
            ):
                raise _ItemFailed(
                    f"{model.collection} names are unique and {name!r} is taken: import with "
                    "mode=rename (a copy under a free name), mode=skip or mode=overwrite"
                )
            if taken and self.mode is ImportMode.RENAME:
                new_name = await self._free_name(model, label, wanted, values)
                if existing is not None:
                    self._conflict(model, name, existing.id, "renamed")
                self.report.renamed.append(
                    RenameOut(collection=model.collection, old_name=wanted, new_name=new_name)
                )
                values[label] = new_name
            self.reserved.setdefault(_scope(model, label, values), set()).add(values[label])
        await self._create(kind, old_id, values)

    async def _match(self, model: type[Entity], record: Mapping[str, Any]) -> Entity | None:
        key = MATCH_KEYS.get(model, ("name",))
        filters = [eq(k, record[k]) if record.get(k) is not None else is_null(k) for k in key]
        owner = model.owner_field
        own = (eq(owner, self.principal.identity),) if owner else ()
        found: Entity | None = await self.repos.for_model(model).find_one(*filters, *own)
        return found

    async def _name_taken(self, model: type[Entity], name: str) -> bool:
        """True if `name` is taken where names are unique (across every owner)."""
        if ("name",) not in model.unique_keys:
            return False
        return await self.repos.for_model(model).find_one(eq("name", name)) is not None

    async def _free_name(
        self, model: type[Entity], label: str, name: str, values: Mapping[str, Any]
    ) -> str:
        """`name (2)`, `name (3)`, ...: the first that no record (where names are unique: of
        anyone; else of the importer, under the same parent for a workflow's title or a
        schedule's name) nor an earlier item of this import has."""
        repo = self.repos.for_model(model)
        scope: list[Filter] = []
        if ("name",) not in model.unique_keys and model.owner_field:
            scope.append(eq(model.owner_field, self.principal.identity))
        for key in MATCH_KEYS.get(model, ()):
            if key != label and key in values:
                scope.append(eq(key, values[key]) if values[key] is not None else is_null(key))
        reserved = self.reserved.get(_scope(model, label, values), set())
        stem = re.sub(r" \(\d+\)$", "", name) or name
        for n in range(2, 1000):
            candidate = f"{stem} ({n})"
            if candidate in reserved:
                continue
            if await repo.find_one(eq(label, candidate), *scope) is None:
                return candidate
        raise _ItemFailed(f"no free name for {model.collection} {name!r}")

    def _service(self, model: type[Entity]) -> Records[Any]:
        service = records_for(model, self.repos, self.principal, self.cipher)
        # Id references were resolved by `_remap` (against the bundle, or records the importer
        # can see: the same rule) and are not looked up again; tokens are matched by name and
        # reported in `missing_tokens`, never fatal.
        service.unchecked = frozenset(r.field for r in service.spec.references)
        return service

    async def _overwrite(self, kind: Kind, existing: Entity, values: Mapping[str, Any]) -> None:
        service = self._service(kind.model)
        changes = {k: v for k, v in values.items() if k not in service.spec.immutable}
        merged = service._validated({**existing.model_dump(), **changes})
        if service.spec.gate is not None:
            service.spec.gate(merged, self.principal)
        if not self.dry_run:
            await service.update(existing.id, changes)

    async def _create(self, kind: Kind, old_id: str | None, values: dict[str, Any]) -> None:
        """Create through the resource's service, as POST would (owner = importer, bounds,
        cross-field checks, capability gates, connection passwords moved into tokens); every
        check runs before the first write, so a refused item leaves nothing behind."""
        model = kind.model
        service = self._service(model)
        values["id"] = new_id()
        if model.owner_field:
            values[model.owner_field] = self.principal.identity
        # references were resolved by `_remap` (to records of the bundle, dry runs included, or
        # to records the importer can see)
        entity = service._validated(values)
        if service.spec.gate is not None:
            service.spec.gate(entity, self.principal)
        result = self.report.of(kind)
        if (
            self.index_later is not None
            and isinstance(entity, KnowledgeItem)
            and (entity.text_content or "").strip()
        ):
            self.index_later.append((old_id, entity))  # ingested after the commit
        elif not self.dry_run:
            entity = await service.create(values)
            result.ids.append(entity.id)
        result.created += 1
        self._map(kind, old_id, entity.id, "create")

    def _conflict(self, model: type[Entity], name: str, existing_id: str, action: str) -> None:
        self.report.conflicts.append(
            ConflictOut(
                collection=model.collection, name=name, existing_id=existing_id, action=action
            )
        )

    def _map(self, kind: Kind, old_id: str | None, new: str, outcome: str) -> None:
        if old_id is not None:
            self.id_map.setdefault(kind.key, {})[old_id] = new
        self.seen.setdefault(kind.key, set()).add(new)
        if kind.model is KnowledgeSource:
            self.parent_outcome[new] = outcome


async def import_bundle(
    repos: Repositories,
    principal: Principal,
    bundle: ParsedBundle,
    *,
    mode: ImportMode = ImportMode.CREATE,
    dry_run: bool = False,
    check: Check = _no_check,
    index_later: list[tuple[str | None, KnowledgeItem]] | None = None,
    cipher: Callable[[], TokenCipher] = _no_cipher,
) -> BundleImportReport:
    """Import `bundle` for `principal` (see the module docstring). Items that fail are reported
    in their kind's `errors`; the others are written in this unit of work.

    With `index_later` (a list), knowledge items with text are not written here but appended to
    it as (bundle id, item), for the caller to ingest (chunk, embed, index) after the commit."""
    if not dry_run:
        principal.require_write()
    report = BundleImportReport(dry_run=dry_run, mode=mode)
    importer = _Importer(
        repos, principal, mode, dry_run, report, check, cipher, index_later
    )  # fmt: skip
    for kind in KINDS:
        for index, raw in enumerate(bundle.lists.get(kind.key, [])):
            await importer.run(kind, index, raw)
    report.id_map = importer.id_map
    if bundle.tokens_required:
        have = await repos.for_model(Token).list(
            Query(
                filters=(in_("name", bundle.tokens_required), *owner_filters(Token, principal)),
                sort=(Sort("id"),),
            )
        )
        report.missing_tokens = sorted(set(bundle.tokens_required) - {t.name for t in have.items})
    return report


__all__ = [
    "BUNDLE_VERSION",
    "KINDS",
    "ORDER",
    "ROUTED",
    "BundleImportReport",
    "ImportMode",
    "ImportResult",
    "Kind",
    "ParsedBundle",
    "ResourceImportReport",
    "export_agent",
    "export_bundle",
    "export_kind",
    "import_bundle",
    "parse_bundle",
    "resource_report",
]
