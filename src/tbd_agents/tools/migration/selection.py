"""Which collections a run migrates: the names it knows, their order, what the source holds.

Everything a run can migrate, in order: the 15 collections and our own entities (`transform`),
the GridFS files, our own non-entity collections (`tables`: usage, webhooks, run-time records,
after the runs, workflows and schedules they refer to), the memory vectors from the memories'
embeddings (without a Qdrant source) and the Qdrant collections (copied when a Qdrant source is
given). Anything else a source holds is reported as not migrated.
"""

from __future__ import annotations

from collections.abc import Sequence

from tbd_agents.errors import InvalidData
from tbd_agents.tools.migration.batch import classify
from tbd_agents.tools.migration.bsonio import SourceDocument
from tbd_agents.tools.migration.gridfs import CHUNKS, FILES
from tbd_agents.tools.migration.memvectors import STEP as MEMORY_VECTORS
from tbd_agents.tools.migration.sources import Source
from tbd_agents.tools.migration.tables import TABLE_SPECS
from tbd_agents.tools.migration.transform import LOAD_ORDER, CollectionSpec, UniqueKeyResolver
from tbd_agents.tools.migration.vectors import COLLECTION_NAMES as VECTOR_COLLECTIONS
from tbd_agents.tools.migration.worker import in_worker

ALL_COLLECTIONS: tuple[str, ...] = (
    *LOAD_ORDER,
    FILES,
    *TABLE_SPECS,
    MEMORY_VECTORS,
    *VECTOR_COLLECTIONS,
)


def wanted_collections(names: Sequence[str] | None) -> list[str]:
    """`names` (default: everything) in load order, the memory vectors with `memories`; unknown
    names raise."""
    if not names:
        return list(ALL_COLLECTIONS)
    unknown = sorted(set(names) - set(ALL_COLLECTIONS))
    if unknown:
        raise InvalidData(
            f"unknown collection {', '.join(unknown)}; the collections are: "
            f"{', '.join(sorted((*LOAD_ORDER, *TABLE_SPECS)))}, {FILES} (GridFS files), and "
            f"{', '.join(VECTOR_COLLECTIONS)} (vectors); {MEMORY_VECTORS} (the memory vectors "
            "from the memories' embeddings) comes with memories"
        )
    wanted = {*names, MEMORY_VECTORS} if "memories" in names else set(names)
    return [n for n in ALL_COLLECTIONS if n in wanted]


async def check_source(source: Source, names: Sequence[str], allow_empty: bool) -> list[str]:
    """Refuse a source that holds none of the wanted collections (unless `allow_empty`); return
    the source collections that are not migrated."""
    present = await source.collections()
    if not present & set(names) and not allow_empty:
        held = ", ".join(sorted(present)) or "no collections at all"
        raise InvalidData(
            f"{source.label} has none of the collections to migrate ({held}). Check MONGO_DB_NAME "
            "(the application's default is copilot_agent_hub) or the dump path; pass "
            "--allow-empty to accept an empty source."
        )
    ours = {*ALL_COLLECTIONS, CHUNKS}
    return sorted(n for n in present - ours if not n.startswith("system."))


async def find_superseded(source: Source, spec: CollectionSpec, batch_size: int) -> dict[str, str]:
    """For a collection with unique keys: losing id → winning id (newest wins)."""
    if not spec.unique_keys:
        return {}
    resolver = UniqueKeyResolver(spec)

    def offer(documents: list[SourceDocument]) -> None:
        for document in documents:
            converted = classify(spec, document, {})
            if converted.row is not None:
                resolver.offer(converted.row)

    async for documents in source.batches(spec.name, batch_size):
        await in_worker(offer, documents)
    return resolver.superseded()
