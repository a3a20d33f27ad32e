"""Import: every item checked like a POST of the same record, references remapped through the
ids the bundle's records get here, name conflicts handled by the import mode."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tbd_agents.domain.models import Entity, KnowledgeItem, KnowledgeSource, Token
from tbd_agents.domain.types import new_id
from tbd_agents.errors import ConfigurationError, TbdError
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.services.access import Principal, owner_filters
from tbd_agents.services.bundle.kinds import KINDS, MATCH_KEYS, ImportMode, Kind, imported_fields
from tbd_agents.services.bundle.parse import ParsedBundle
from tbd_agents.services.bundle.report import BundleImportReport, ConflictOut, RenameOut
from tbd_agents.services.catalog import records_for
from tbd_agents.services.records import Records
from tbd_agents.services.resources import spec_of
from tbd_agents.storage.protocol import Filter, Query, Repositories, Sort, eq, in_, is_null

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
