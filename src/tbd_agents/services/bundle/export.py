"""Export: the full bundle, a per-resource bundle, one agent with what it uses (secrets by
token name only, passwords removed from connection strings)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tbd_agents.domain.models import (
    Agent,
    CustomTool,
    Entity,
    Guardrail,
    KnowledgeItem,
    KnowledgeSource,
    McpServer,
    Provider,
    Skill,
    Workflow,
)
from tbd_agents.domain.types import utcnow
from tbd_agents.services.access import Principal, owner_filters
from tbd_agents.services.bundle.kinds import (
    BUNDLE_VERSION,
    KINDS,
    LEGACY_FORMAT,
    REFERENCE_KEYS,
    Kind,
    exported_fields,
)
from tbd_agents.services.catalog import SECRET_FIELDS
from tbd_agents.services.records import Records
from tbd_agents.services.tokens import is_connection_secret, referenced_names
from tbd_agents.storage.protocol import Query, Repositories, Sort, contains_any, in_


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
