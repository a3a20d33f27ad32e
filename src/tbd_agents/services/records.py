"""Generic use cases on one resource: list, get, create, update, delete — with ownership,
reference checks and delete rules applied the same way for every resource.

Services never commit: they run inside the unit of work the request edge opened, so a request's
changes are committed together or not at all.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from tbd_agents.domain.models import Entity
from tbd_agents.errors import Conflict, InvalidData, NotFound, VersionConflict
from tbd_agents.services.access import Principal, ensure_visible, owner_filters
from tbd_agents.services.resources import Dependant, OnDelete, Reference, ResourceSpec, spec_of
from tbd_agents.storage.protocol import (
    Filter,
    JsonPage,
    Page,
    Query,
    Repositories,
    Sort,
    contains_any,
    eq,
    in_,
)

E = TypeVar("E", bound=Entity)


def expected_version(record: Entity, allowed: Collection[int] | None) -> int | None:
    """The version a conditional write of `record` (just read) must find: None without a
    precondition (`allowed` None), else `record.version` if it is one of `allowed` (the
    versions an `If-Match` names); VersionConflict if it is not.

    The early answer spares the work of a write that cannot succeed; the write itself checks
    the version again, atomically, since the record may change after this read."""
    if allowed is None:
        return None
    if record.version not in allowed:
        raise VersionConflict(type(record).__name__, record.id, record.version, sorted(allowed))
    return record.version


#: How many dependants a 409 lists per kind (the message says when there are more).
DEPENDANTS_SHOWN = 20
#: How often `Records.modify` reads and writes again when other writers keep getting in between.
MODIFY_ATTEMPTS = 20
#: Integer fields are stored as 32-bit integers (PostgreSQL `integer`).
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


class Records(Generic[E]):
    """Records of one entity type as one caller may see and change them."""

    def __init__(self, repos: Repositories, principal: Principal, model: type[E]) -> None:
        self.repos = repos
        self.principal = principal
        self.model = model
        self.spec: ResourceSpec = spec_of(model)
        self.repo = repos.for_model(model)
        #: Reference fields left unchecked (an import reports missing tokens instead of failing).
        self.unchecked: frozenset[str] = frozenset()

    # --- reading -------------------------------------------------------------------------
    async def get(self, record_id: str) -> E:
        """The record, or NotFound if it does not exist or the caller may not see it."""
        if "\x00" in record_id:
            raise NotFound(self.model.collection, record_id)
        record: E = await self.repo.get(record_id)
        await self._ensure_visible(record)
        return record

    async def list(
        self,
        filters: Sequence[Filter] = (),
        *,
        limit: int | None,
        cursor: str | None = None,
        sort: tuple[Sort, ...] = (Sort("created_at", True),),
    ) -> Page[E]:
        """One page of visible records matching `filters`; constant statements per call."""
        scope = await self._visibility_filters(filters)
        if scope is None:
            return Page(items=[], next_cursor=None)
        query = Query(filters=(*filters, *scope), sort=sort, limit=limit, cursor=cursor)
        page: Page[E] = await self.repo.list(query)
        return page

    async def list_json(
        self,
        filters: Sequence[Filter] = (),
        *,
        limit: int | None,
        cursor: str | None = None,
        sort: tuple[Sort, ...] = (Sort("created_at", True),),
        omit: frozenset[str] = frozenset(),
    ) -> JsonPage:
        """The page `list` returns, as JSON (fields in `omit` left out), for sending as is."""
        scope = await self._visibility_filters(filters)
        if scope is None:
            return JsonPage(b"[]", None)
        query = Query(filters=(*filters, *scope), sort=sort, limit=limit, cursor=cursor)
        return await self.repo.list_json(query, omit)

    async def _visibility_filters(self, filters: Sequence[Filter]) -> tuple[Filter, ...] | None:
        if self.principal.is_admin:
            return ()
        parent = self.spec.parent
        if parent is None:
            return owner_filters(self.model, self.principal)
        other = self.spec.other_parent
        by_other = (
            None
            if other is None
            else next((f for f in filters if f.field == other.field and f.op == "eq"), None)
        )
        if other is not None and by_other is not None:
            found = await self.repos.for_model(other.target).find_one(
                eq("id", by_other.value), *owner_filters(other.target, self.principal)
            )
            return () if found is not None else None
        given = next((f for f in filters if f.field == parent.field and f.op == "eq"), None)
        if given is not None:
            parent_record = await self.repos.for_model(parent.target).find_one(
                eq("id", given.value), *owner_filters(parent.target, self.principal)
            )
            return () if parent_record is not None else None
        owned = await self.repos.for_model(parent.target).list(
            Query(filters=owner_filters(parent.target, self.principal), sort=(Sort("id"),))
        )
        return (in_(parent.field, [p.id for p in owned.items]),)

    async def _ensure_visible(self, record: Entity) -> None:
        parent = self.spec.parent
        if parent is None:
            ensure_visible(record, self.principal)
            return
        if self.principal.is_admin:
            return
        parent_id = getattr(record, parent.field)
        found = await self.repos.for_model(parent.target).find_one(
            eq("id", parent_id), *owner_filters(parent.target, self.principal)
        )
        other = self.spec.other_parent
        if found is None and other is not None and getattr(record, other.field):
            found = await self.repos.for_model(other.target).find_one(
                eq("id", getattr(record, other.field)), *owner_filters(other.target, self.principal)
            )
        if found is None:
            raise NotFound(self.model.collection, record.id)

    # --- writing -------------------------------------------------------------------------
    async def create(self, data: Mapping[str, Any]) -> E:
        """Create a record owned by the caller (or by the caller's parent record)."""
        self.principal.require_write()
        values = dict(data)
        owner = self.model.owner_field
        if owner is not None:
            values[owner] = self.principal.identity
        if self.spec.parent is not None:
            await self._check_parent(values.get(self.spec.parent.field))
        await self.check_references(values)
        record = self._validated(values)
        if self.spec.gate is not None:
            self.spec.gate(record, self.principal)
        if self.spec.verify is not None:
            await self.spec.verify(self.repos, record)
        if self.spec.derive is not None:
            record = record.model_copy(update=self.spec.derive(None, record))
        created: E = await self.repo.create(record)
        return created

    def _validated(self, values: Mapping[str, Any]) -> E:
        """`values` as a record, checked by the model and the resource's cross-field rules."""
        try:
            record = self.model.model_validate(values)
        except ValidationError as exc:  # never echo the input: it may hold a secret
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InvalidData(
                f"invalid {self.spec.label}: {where}: {err['msg']}", details={"field": where}
            ) from None
        for name, value in record:
            if type(value) is int and not INT_MIN <= value <= INT_MAX:
                raise InvalidData(
                    f"invalid {self.spec.label}: {name}: must be between {INT_MIN} and {INT_MAX}",
                    details={"field": name},
                )
        if self.spec.check is not None:
            self.spec.check(record)
        return record

    async def update(
        self,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        expected_versions: Collection[int] | None = None,
    ) -> E:
        """Apply a partial update (only the given fields; None clears a nullable field).

        With `expected_versions` (what the API's `If-Match` names), only if the record is at
        one of them when it is written: VersionConflict otherwise (also for an empty change)."""
        self.principal.require_write()
        current = await self.get(record_id)
        expected = expected_version(current, expected_versions)
        # Immutable fields may come back unchanged (a record sent back as it was read).
        fixed = sorted(
            f for f in set(changes) & self.spec.immutable if changes[f] != getattr(current, f)
        )
        if fixed:
            raise InvalidData(
                f"{fixed[0]} of a {self.spec.label} cannot be changed after creation",
                details={"field": fixed[0]},
            )
        changes = {k: v for k, v in changes.items() if k not in self.spec.immutable}
        await self.check_references(changes)
        if not changes:
            return current
        merged = self._validated({**current.model_dump(), **changes})
        if self.spec.gate is not None:
            self.spec.gate(merged, self.principal)
        if self.spec.verify is not None:
            await self.spec.verify(self.repos, merged)
        if self.spec.derive is not None:
            changes = {**changes, **self.spec.derive(current, merged)}
        updated: E = await self.repo.update(record_id, dict(changes), expected_version=expected)
        return updated

    async def modify(
        self,
        record_id: str,
        change: Callable[[E], Mapping[str, Any]],
        *,
        expected_versions: Collection[int] | None = None,
    ) -> E:
        """Read-modify-write without lost updates: `change` computes the changes from the record
        as read (it may raise to refuse), and the write is conditional on the version read.

        When another writer changed the record in between, the record is read again and
        `change` applied to it anew (up to MODIFY_ATTEMPTS times; every conflict means another
        writer succeeded). With `expected_versions` (the caller's `If-Match`) there is no retry:
        the caller's view is stale, VersionConflict."""
        for attempt in range(1, MODIFY_ATTEMPTS + 1):
            current = await self.get(record_id)
            expected_version(current, expected_versions)
            try:
                return await self.update(
                    record_id, change(current), expected_versions={current.version}
                )
            except VersionConflict:
                if expected_versions is not None or attempt == MODIFY_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def delete(
        self, record_id: str, *, expected_versions: Collection[int] | None = None
    ) -> E:
        """Delete after the resource's rules: refuse (409) while dependants exist, else cascade.

        With `expected_versions`, only if the record is at one of them when it is deleted
        (VersionConflict otherwise): the record goes first, its dependants after it, so on a
        backend without transactions a refused delete has removed nothing."""
        self.principal.require_write()
        record = await self.get(record_id)
        expected = expected_version(record, expected_versions)
        blocking: dict[str, builtins.list[str]] = {}
        for dep in self.spec.dependants:
            if dep.on_delete is OnDelete.REFUSE:
                ids = await self._dependant_ids(dep, record)
                if ids:
                    blocking[dep.model.collection] = ids
        if blocking:
            listing = "; ".join(f"{k}: {', '.join(v)}" for k, v in blocking.items())
            raise Conflict(
                f"this {self.spec.label} is still used ({listing}): delete or change those first",
                details={"dependants": blocking},
            )
        await self.repo.delete(record.id, expected_version=expected)
        for dep in self.spec.dependants:
            if dep.on_delete is OnDelete.CASCADE:
                await self.repos.for_model(dep.model).delete_where(
                    self._dependant_filter(dep, record)
                )
        return record

    def _dependant_filter(self, dep: Dependant, record: Entity) -> Filter:
        value = getattr(record, dep.by)
        return contains_any(dep.field, [value]) if dep.many else eq(dep.field, value)

    async def _dependant_ids(self, dep: Dependant, record: Entity) -> builtins.list[str]:
        page = await self.repos.for_model(dep.model).list(
            Query(
                filters=(self._dependant_filter(dep, record),),
                sort=(Sort("id"),),
                limit=DEPENDANTS_SHOWN,
            )
        )
        return [r.id for r in page.items]

    async def _check_parent(self, parent_id: Any) -> None:
        parent = self.spec.parent
        assert parent is not None
        if not isinstance(parent_id, str):
            raise InvalidData(f"{parent.field} is required", details={"field": parent.field})
        found = await self.repos.for_model(parent.target).find_one(
            eq("id", parent_id) if len(parent_id) <= 128 else eq("id", ""),
            *owner_filters(parent.target, self.principal),
        )
        if found is None:
            raise InvalidData(
                f"{parent.field}: no {parent.target.collection} record {parent_id!r}",
                details={"field": parent.field, "missing": [parent_id]},
            )

    async def check_references(self, values: Mapping[str, Any]) -> None:
        """InvalidData naming the field if a reference names an unknown or invisible record."""
        for ref in self.spec.references:
            if ref.field not in values or values[ref.field] is None or ref.field in self.unchecked:
                continue
            raw = values[ref.field]
            wanted = [v for v in (raw if ref.many else [raw]) if isinstance(v, str)]
            if wanted:
                await self._check_reference(ref, wanted)

    async def _check_reference(self, ref: Reference, wanted: builtins.list[str]) -> None:
        unique: builtins.list[str] = sorted(set(wanted))
        valid = [v for v in unique if 0 < len(v) <= 512]
        found: set[str] = set()
        if valid:
            page = await self.repos.for_model(ref.target).list(
                Query(
                    filters=(in_(ref.by, valid), *owner_filters(ref.target, self.principal)),
                    sort=(Sort("id"),),
                )
            )
            found = {getattr(r, ref.by) for r in page.items}
        missing = [v for v in unique if v not in found]
        if missing:
            raise InvalidData(
                f"{ref.field}: no {ref.target.collection} record with {ref.by} "
                + ", ".join(repr(m) for m in missing),
                details={"field": ref.field, "missing": missing},
            )
