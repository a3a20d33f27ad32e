"""Export / import of bundles: GET /api/export, POST /api/import (see services/bundle.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import Caller, Ctx
from tbd_agents.domain.models import KnowledgeItem
from tbd_agents.services.bundle import (
    Bundle,
    ImportMode,
    ImportReport,
    export_bundle,
    import_bundle,
)
from tbd_agents.services.knowledge import KnowledgeServices

router = APIRouter(tags=["export/import"], responses=ERRORS)


@router.get("/api/export", response_model=Bundle, summary="Export your configuration as a bundle")
async def export(
    ctx: Ctx,
    caller: Caller,
    include_items: Annotated[
        bool, Query(description="Also export knowledge items (text).")
    ] = False,
) -> dict[str, Any]:
    async with ctx.store.unit_of_work() as repos:
        return await export_bundle(repos, caller, include_items=include_items)


@router.post(
    "/api/import",
    response_model=ImportReport,
    response_model_by_alias=True,
    summary="Import a bundle",
)
async def import_(
    bundle: Bundle,
    ctx: Ctx,
    caller: Caller,
    mode: Annotated[
        ImportMode, Query(description="On a name conflict: skip, rename or overwrite.")
    ] = ImportMode.SKIP,
    dry_run: Annotated[
        bool, Query(description="Report what would happen; change nothing.")
    ] = False,
) -> ImportReport:
    knowledge = ctx.services.get("knowledge")
    later: list[tuple[str, KnowledgeItem]] | None = None
    if isinstance(knowledge, KnowledgeServices) and not dry_run:
        later = []
    async with ctx.store.unit_of_work() as repos:
        report = await import_bundle(
            repos, caller, bundle, mode=mode, dry_run=dry_run, index_later=later,
            cipher=ctx.cipher,
        )  # fmt: skip
    if knowledge is not None and later:
        # Items become searchable like uploaded ones: chunked, embedded, indexed.
        items = report.id_map.setdefault(KnowledgeItem.collection, {})
        for old_id, item in later:
            indexed = await knowledge.ingestion.ingest_text(
                item.source_id,
                item.text_content or "",
                title=item.name,
                tags=item.tags,
                content_type=item.mime_type or "text/plain",
            )
            items[old_id] = indexed.id
    return report
