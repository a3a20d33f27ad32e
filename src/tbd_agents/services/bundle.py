"""Export and import of bundles: configuration moved between instances with ids remapped.

A bundle (format `tbd-agents-bundle`, version 1) holds agents, skills, MCP servers, custom tools,
guardrails, providers (token *names* only, never values), knowledge sources (and optionally their
items), workflows and scheduled agents — without owners, run history or server-managed state.

Import walks the collections parents-first. Every record gets a new id (or the id of the record
it is matched with), and every reference is rewritten through the id map, so references stay
intact across instances. A record matches an existing one of the importer by its natural key
(name; for workflows and schedules the name under the same parent). On a match, `mode` decides:
`skip` keeps the existing record, `rename` imports a copy under a free name, `overwrite` updates
the existing record. `dry_run` reads only and reports what would happen, conflicts included.
References that resolve neither inside the bundle nor to a visible record fail the import (422).
Records are created and overwritten through the same services as POST / PATCH, so an import
gets every check a save gets (bounds, guardrail patterns, the host-capability gates of stdio
MCP servers and custom tools, connection passwords moved into tokens) and belongs to the
importer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
from tbd_agents.errors import ConfigurationError, Conflict, InvalidData
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.services.access import Principal, owner_filters
from tbd_agents.services.catalog import records_for
from tbd_agents.services.records import Records
from tbd_agents.services.resources import spec_of
from tbd_agents.services.tokens import referenced_names
from tbd_agents.services.validation import Input
from tbd_agents.storage.protocol import Filter, Query, Repositories, Sort, eq, in_, is_null

BUNDLE_FORMAT = "tbd-agents-bundle"
BUNDLE_VERSION = 1

#: Collections in import order: every record comes after the records it references.
ORDER: tuple[type[Entity], ...] = (
    Provider,
    Skill,
    McpServer,
    CustomTool,
    Guardrail,
    KnowledgeSource,
    KnowledgeItem,
    Agent,
    Workflow,
    ScheduledAgent,
)
BY_COLLECTION = {m.collection: m for m in ORDER}

#: Natural key a bundle record is matched on (besides the importer as owner).
MATCH_KEYS: dict[type[Entity], tuple[str, ...]] = {
    Workflow: ("agent_id", "title"),
    ScheduledAgent: ("workflow_id", "name"),
    KnowledgeItem: ("source_id", "name", "file_name"),
}


class ImportMode(StrEnum):
    SKIP = "skip"
    RENAME = "rename"
    OVERWRITE = "overwrite"


class Bundle(Input):
    model_config = ConfigDict(extra="ignore")

    format: str = Field(default=BUNDLE_FORMAT, pattern=f"^{BUNDLE_FORMAT}$")
    version: int = Field(default=BUNDLE_VERSION, ge=1)
    exported_at: str | None = None
    tokens_required: list[str] = Field(default_factory=list)
    resources: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)


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


class ImportReport(BaseModel):
    dry_run: bool
    mode: ImportMode
    created: dict[str, int] = Field(default_factory=dict)
    skipped: dict[str, int] = Field(default_factory=dict)
    overwritten: dict[str, int] = Field(default_factory=dict)
    renamed: list[RenameOut] = Field(default_factory=list)
    conflicts: list[ConflictOut] = Field(default_factory=list)
    id_map: dict[str, dict[str, str]] = Field(default_factory=dict)
    missing_tokens: list[str] = Field(default_factory=list)


def _exported_fields(model: type[Entity]) -> set[str]:
    spec = spec_of(model)
    hidden = {"created_at", "updated_at", *spec.managed}
    if model.owner_field:
        hidden.add(model.owner_field)
    return set(model.model_fields) - hidden


async def export_bundle(
    repos: Repositories, principal: Principal, *, include_items: bool = False
) -> dict[str, Any]:
    """Every visible record of the bundle's collections (one query per collection)."""
    resources: dict[str, list[dict[str, Any]]] = {}
    tokens: set[str] = set()
    for model in ORDER:
        if model is KnowledgeItem and not include_items:
            continue
        filters: tuple[Filter, ...] = owner_filters(model, principal)
        if model is KnowledgeItem:
            ids = [r["id"] for r in resources.get(KnowledgeSource.collection, [])]
            filters = (in_("source_id", ids),)
        rows = [
            r
            async for r in repos.for_model(model).iterate(
                Query(filters=filters, sort=(Sort("created_at"),))
            )
        ]
        keep = _exported_fields(model)
        dumped = [r.model_dump(mode="json", include=keep) for r in rows]
        resources[model.collection] = dumped
        tokens |= referenced_names(dumped)
        if model is Provider:
            tokens |= {r["api_key_token_name"] for r in dumped if r.get("api_key_token_name")}
    return Bundle(
        exported_at=utcnow().isoformat(), tokens_required=sorted(tokens), resources=resources
    ).model_dump(mode="json")


def _no_cipher() -> TokenCipher:
    raise ConfigurationError("importing a connection password needs the token cipher")


@dataclass
class _Importer:
    repos: Repositories
    principal: Principal
    mode: ImportMode
    dry_run: bool
    report: ImportReport
    id_map: dict[str, dict[str, str]] = field(default_factory=dict)
    parent_outcome: dict[str, str] = field(default_factory=dict)  # source id → action
    index_later: list[tuple[str, KnowledgeItem]] | None = None  # (bundle id, item) to ingest
    cipher: Callable[[], TokenCipher] = _no_cipher

    def _count(self, bucket: dict[str, int], model: type[Entity]) -> None:
        bucket[model.collection] = bucket.get(model.collection, 0) + 1

    def _own(self, model: type[Entity]) -> tuple[Filter, ...]:
        owner = model.owner_field
        return (eq(owner, self.principal.identity),) if owner else ()

    async def _resolve(
        self, model: type[Entity], ref_field: str, target: type[Entity], value: str
    ) -> str:
        mapped = self.id_map.get(target.collection, {}).get(value)
        if mapped is not None:
            return mapped
        if target is Token:
            return value  # tokens are matched by name; missing ones are reported, not fatal
        found = await self.repos.for_model(target).find_one(
            eq("id", value) if 0 < len(value) <= 128 else eq("id", "-"),
            *owner_filters(target, self.principal),
        )
        if found is None:
            raise InvalidData(
                f"{model.collection}.{ref_field}: {target.collection} {value!r} is neither in the "
                "bundle nor on this instance",
                details={"field": f"resources.{model.collection}.{ref_field}", "missing": [value]},
            )
        return value

    async def _remap(self, model: type[Entity], record: dict[str, Any]) -> dict[str, Any]:
        spec = spec_of(model)
        refs = [*spec.references, *([spec.parent] if spec.parent else [])]
        for ref in refs:
            value = record.get(ref.field)
            if value is None or ref.by != "id":
                continue
            if ref.many:
                record[ref.field] = [
                    await self._resolve(model, ref.field, ref.target, v) for v in value
                ]
            else:
                record[ref.field] = await self._resolve(model, ref.field, ref.target, value)
        return record

    async def _match(self, model: type[Entity], record: dict[str, Any]) -> Entity | None:
        key = MATCH_KEYS.get(model, ("name",))
        filters = [eq(k, record[k]) if record.get(k) is not None else is_null(k) for k in key]
        found: Entity | None = await self.repos.for_model(model).find_one(
            *filters, *self._own(model)
        )
        return found

    async def _free_name(self, model: type[Entity], name: str) -> str:
        repo = self.repos.for_model(model)
        for n in range(1, 1000):
            candidate = f"{name} (imported)" if n == 1 else f"{name} (imported {n})"
            if await repo.find_one(eq("name", candidate)) is None:
                return candidate
        raise Conflict(f"no free name for {model.collection} {name!r}")

    async def _globally_taken(self, model: type[Entity], name: str) -> bool:
        if ("name",) not in model.unique_keys:
            return False
        return await self.repos.for_model(model).find_one(eq("name", name)) is not None

    async def run_one(self, model: type[Entity], raw: Mapping[str, Any]) -> None:
        keep = _exported_fields(model)
        record = {k: v for k, v in raw.items() if k in keep}
        old_id = str(raw.get("id") or new_id())
        record = await self._remap(model, record)
        if model is KnowledgeItem and self.parent_outcome.get(record["source_id"]) == "skip":
            self._count(self.report.skipped, model)
            return
        existing = await self._match(model, record)
        name = str(record.get("name") or "")
        if existing is not None and self.mode is ImportMode.SKIP:
            self._conflict(model, name, existing.id, "skipped")
            self._map(model, old_id, existing.id, "skip")
            self._count(self.report.skipped, model)
            return
        if existing is not None and self.mode is ImportMode.OVERWRITE:
            self._conflict(model, name, existing.id, "overwritten")
            service = self._service(model)
            changes = {
                k: v for k, v in record.items() if k != "id" and k not in service.spec.immutable
            }
            with self._located(model, old_id):
                if self.dry_run:
                    merged = service._validated({**existing.model_dump(), **changes})
                    if service.spec.gate is not None:
                        service.spec.gate(merged, self.principal)
                else:
                    await service.update(existing.id, changes)
            self._map(model, old_id, existing.id, "overwrite")
            self._count(self.report.overwritten, model)
            return
        if name and (existing is not None or await self._globally_taken(model, name)):
            if self.mode is not ImportMode.RENAME and existing is None:
                raise Conflict(
                    f"{model.collection} name {name!r} is taken by another user's record: import "
                    "with mode=rename",
                    details={"collection": model.collection, "name": name},
                )
            new_name = await self._free_name(model, name)
            if existing is not None:
                self._conflict(model, name, existing.id, "renamed")
            self.report.renamed.append(
                RenameOut(collection=model.collection, old_name=name, new_name=new_name)
            )
            record["name"] = new_name
        await self._create(model, old_id, record)

    def _conflict(self, model: type[Entity], name: str, existing_id: str, action: str) -> None:
        self.report.conflicts.append(
            ConflictOut(
                collection=model.collection, name=name, existing_id=existing_id, action=action
            )
        )

    def _map(self, model: type[Entity], old_id: str, new: str, outcome: str) -> None:
        self.id_map.setdefault(model.collection, {})[old_id] = new
        if model is KnowledgeSource:
            self.parent_outcome[new] = outcome

    def _service(self, model: type[Entity]) -> Records[Any]:
        service = records_for(model, self.repos, self.principal, self.cipher)
        # tokens are matched by name and reported in `missing_tokens`, never fatal
        service.unchecked = frozenset(r.field for r in service.spec.references if r.by != "id")
        return service

    @contextmanager
    def _located(self, model: type[Entity], old_id: str) -> Iterator[None]:
        """Errors of the services, located in the bundle (`resources.<collection>.<field>`)."""
        try:
            yield
        except InvalidData as exc:
            where = exc.details.get("field")
            details = dict(exc.details)
            if isinstance(where, str):
                details["field"] = f"resources.{model.collection}.{where}"
            raise InvalidData(
                f"{model.collection} record {old_id!r}: {exc.message}", details=details
            ) from None

    async def _create(self, model: type[Entity], old_id: str, record: dict[str, Any]) -> None:
        """Create through the resource's service, as POST would: owner = importer, references,
        bounds, cross-field checks (guardrail patterns), capability gates, and passwords in
        connection strings moved into tokens."""
        record["id"] = new_id()
        service = self._service(model)
        if model.owner_field:
            record[model.owner_field] = self.principal.identity
        with self._located(model, old_id):
            entity = service._validated(record)
            if service.spec.gate is not None:
                service.spec.gate(entity, self.principal)
            later = self.index_later is not None and isinstance(entity, KnowledgeItem)
            if later and isinstance(entity, KnowledgeItem) and (entity.text_content or "").strip():
                assert self.index_later is not None
                self.index_later.append((old_id, entity))
            elif not self.dry_run:
                entity = await service.create(record)
        self._map(model, old_id, entity.id, "create")
        self._count(self.report.created, model)


async def import_bundle(
    repos: Repositories,
    principal: Principal,
    bundle: Bundle,
    *,
    mode: ImportMode = ImportMode.SKIP,
    dry_run: bool = False,
    index_later: list[tuple[str, KnowledgeItem]] | None = None,
    cipher: Callable[[], TokenCipher] = _no_cipher,
) -> ImportReport:
    """Import `bundle` for `principal` (see the module docstring); all-or-nothing on PostgreSQL.

    With `index_later` (a list), knowledge items with text are not written here but appended to
    it, for the caller to ingest (chunk, embed, index) once the transaction has committed."""
    if bundle.version > BUNDLE_VERSION:
        raise InvalidData(
            f"bundle version {bundle.version} is newer than this server reads ({BUNDLE_VERSION}): "
            "upgrade TBD Agents",
            details={"field": "version"},
        )
    unknown = sorted(set(bundle.resources) - set(BY_COLLECTION))
    if unknown:
        raise InvalidData(
            f"bundle has unknown collections {unknown}; known: {sorted(BY_COLLECTION)}",
            details={"field": "resources"},
        )
    if not dry_run:
        principal.require_write()
    report = ImportReport(dry_run=dry_run, mode=mode)
    importer = _Importer(
        repos, principal, mode, dry_run, report, index_later=index_later, cipher=cipher
    )
    for model in ORDER:
        for raw in bundle.resources.get(model.collection, []):
            await importer.run_one(model, raw)
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
