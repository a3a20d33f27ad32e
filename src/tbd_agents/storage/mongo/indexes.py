"""The indexes TBD Agents needs in MongoDB, and `ensure_indexes`, which creates the missing ones.

This is MongoDB's analogue of a migration: run when the store opens, idempotent, and it never
drops or rebuilds anything. The plan mirrors the PostgreSQL schema so both backends serve the same
queries from an index:

* one unique index per `Entity.unique_keys` entry (`uq_<collection>_<fields>`);
* `(created_at, _id)` on every collection (`idx_<collection>_created_at`), the default sort and
  its keyset tie-break;
* one index per column `storage.postgres.schema` indexes with a B-tree or a GIN index
  (`idx_<collection>_<field>`; on an array field MongoDB builds a multikey index, which serves
  `$in` / `$all`), and its composite B-tree indexes (`idx_<collection>_<f1>_<f2>`). The lists
  are imported, not copied, so the two plans cannot drift.

An existing index on the same keys under another name (e.g. one created by an older version) is
accepted as it is. A clash that needs a decision — a non-unique index where a unique one is
needed, duplicates that prevent a unique index — stops with a `StorageError` naming the fix;
except on the collections in `DUPLICATES_TOLERATED`, where the existing TBD Agents had no unique
index, so an existing database may hold duplicates it wrote itself: there the unique index is
left out with a warning naming the duplicates and the fix, and the hub starts (an upsert then
updates one of the duplicates; the index is built at the first start after they are removed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from tbd_agents.domain.models import Entity, Memory
from tbd_agents.errors import StorageError
from tbd_agents.storage.postgres.schema import BTREE_INDEXES, COMPOSITE_INDEXES, GIN_INDEXES

_PERMISSION_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed

#: Collections whose unique key the existing TBD Agents did not enforce (see the module doc).
DUPLICATES_TOLERATED = frozenset({Memory.collection})

log = logging.getLogger(__name__)

Keys = tuple[tuple[str, Any], ...]  # (field, 1 | -1 | "text" | ...)


@dataclass(frozen=True, slots=True)
class IndexSpec:
    name: str
    keys: Keys
    unique: bool = False

    @property
    def fields(self) -> list[str]:
        return ["id" if k == "_id" else k for k, _ in self.keys]


def index_plan(model: type[Entity]) -> list[IndexSpec]:
    """Every index `model`'s collection should have."""
    coll = model.collection
    plan = [
        IndexSpec(f"uq_{coll}_{'_'.join(key)}", tuple((k, 1) for k in key), unique=True)
        for key in model.unique_keys
    ]
    plan.append(IndexSpec(f"idx_{coll}_created_at", (("created_at", 1), ("_id", 1))))
    singles = dict.fromkeys((*BTREE_INDEXES.get(coll, ()), *GIN_INDEXES.get(coll, ())))
    plan.extend(IndexSpec(f"idx_{coll}_{field}", ((field, 1),)) for field in singles)
    plan.extend(
        IndexSpec(f"idx_{coll}_{'_'.join(fields)}", tuple((f, 1) for f in fields))
        for fields in COMPOSITE_INDEXES.get(coll, ())
    )
    return plan


def index_fields(models: Iterable[type[Entity]]) -> dict[str, list[str]]:
    """Index name → fields, for naming the fields of a duplicate-key error."""
    return {spec.name: spec.fields for m in models for spec in index_plan(m) if spec.unique}


def _normalise(keys: Any) -> Keys:
    """Key pattern as (field, direction) pairs; legacy float directions (1.0) become ints."""
    return tuple(
        (str(name), direction if isinstance(direction, str) else int(direction))
        for name, direction in keys
    )


def _check_existing(coll: str, spec: IndexSpec, existing: Mapping[str, Mapping[str, Any]]) -> bool:
    """True if an index on the same keys already does the job; raise if it cannot."""
    for name, info in existing.items():
        if _normalise(info.get("key", ())) == spec.keys:
            if spec.unique and not info.get("unique", False):
                raise StorageError(
                    f"MongoDB collection {coll} has a non-unique index {name!r} on "
                    f"{', '.join(spec.fields)}, where TBD Agents needs a unique one: drop it "
                    f'(`db.{coll}.dropIndex("{name}")`) and start again so {spec.name} is built.'
                )
            return True
    if spec.name in existing:
        raise StorageError(
            f"MongoDB collection {coll} has an index named {spec.name!r} on other keys: drop it "
            f'(`db.{coll}.dropIndex("{spec.name}")`) and start again.'
        )
    return False


async def ensure_indexes(
    database: AsyncDatabase[dict[str, Any]], models: Iterable[type[Entity]]
) -> list[str]:
    """Create the planned indexes that are missing; return the names created."""
    return await ensure_collection_indexes(database, {m.collection: index_plan(m) for m in models})


async def ensure_collection_indexes(
    database: AsyncDatabase[dict[str, Any]], plan: Mapping[str, Iterable[IndexSpec]]
) -> list[str]:
    """Create the missing indexes of `plan` (collection → specs); return the names created."""
    created: list[str] = []
    for name, specs in plan.items():
        coll = database.get_collection(name)
        existing = await coll.index_information()
        for spec in specs:
            if _check_existing(name, spec, existing):
                continue
            try:
                await coll.create_index(list(spec.keys), name=spec.name, unique=spec.unique)
            except DuplicateKeyError as exc:
                if name in DUPLICATES_TOLERATED:
                    log.warning(
                        "MongoDB collection %s holds documents with the same %s (%s): the unique "
                        "index %s is left out until they are removed; until then an upsert "
                        "updates one of them. Remove the older duplicates to enforce the key.",
                        name,
                        ", ".join(spec.fields),
                        exc,
                        spec.name,
                    )
                    continue
                raise StorageError(
                    f"cannot create the unique index {spec.name} on MongoDB collection "
                    f"{name}: documents share the same {', '.join(spec.fields)} "
                    f"({exc}). Remove or rename the duplicates, then start again."
                ) from exc
            except OperationFailure as exc:
                if exc.code in _PERMISSION_CODES:
                    raise  # mapped to InsufficientPrivilege / credentials by the store
                raise StorageError(
                    f"cannot create index {spec.name} on MongoDB collection {name}: {exc}"
                ) from exc
            created.append(spec.name)
    return created
