"""Export / import in the existing bundle format (see services/bundle/).

* `GET /api/export`, `POST /api/import`: the full bundle.
* `GET /api/<resource>/export`, `GET /api/<resource>/{id}/export`, `POST /api/<resource>/import`
  for agents, skills, workflows, knowledge sources (the existing routes) and the other kinds a
  bundle carries. `resource_router` must be registered before the resource routers, or
  `/api/agents/{record_id}` would take `/api/agents/export`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tbd_agents.api.crud import ERRORS, outbound_allow_list
from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.api.schemas import create_schema
from tbd_agents.domain.models import Entity, KnowledgeItem
from tbd_agents.errors import InvalidData, TbdError
from tbd_agents.services.access import Principal
from tbd_agents.services.bundle import (
    BUNDLE_VERSION,
    ROUTED,
    BundleImportReport,
    ImportMode,
    Kind,
    ParsedBundle,
    ResourceImportReport,
    export_agent,
    export_bundle,
    export_kind,
    import_bundle,
    parse_bundle,
    resource_report,
)
from tbd_agents.services.catalog import check_saved_addresses
from tbd_agents.services.knowledge import KnowledgeServices

router = APIRouter(tags=["export/import"], responses=ERRORS)
resource_router = APIRouter(tags=["export/import"], responses=ERRORS)

Mode = Annotated[
    ImportMode,
    Query(
        description="create (default): always insert new records, as the existing system did; "
        "skip / rename / overwrite: on a record of yours with the same name, keep it, import a "
        "renamed copy, or update it."
    ),
]
DryRun = Annotated[bool, Query(description="Report what would happen; change nothing.")]
BundleBody = Annotated[
    dict[str, Any],
    Body(
        description="A bundle: the full one (`skills`, `agents`, `workflows`, "
        "`knowledge_sources`, ...), a per-resource one (`items` with `resource_type`), or one "
        "of an earlier version of this hub (`format`, `resources`)."
    ),
]
ItemsBody = Annotated[
    dict[str, Any], Body(description='`{"items": [...]}` (an exported per-resource bundle).')
]


class BundleOut(BaseModel):
    """The existing bundle envelope; the lists of records are the other keys."""

    model_config = ConfigDict(extra="allow")

    version: str = Field(examples=[BUNDLE_VERSION])
    exported_at: str
    resource_type: str = Field(description="`bundle`, or the kind of a per-resource bundle.")
    tokens_required: list[str] = Field(
        description="Names of the tokens the records use (values are never exported)."
    )
    redacted: list[str] = Field(
        description="Where a password was removed from a connection string (set it again "
        "after an import)."
    )


def _checker(ctx: ApiContext, caller: Principal) -> Any:
    allowed = outbound_allow_list(ctx)

    def check(model: type[Entity], record: dict[str, Any]) -> dict[str, Any]:
        try:
            body = create_schema(model).model_validate(record)
        except ValidationError as exc:  # never echo the value: it may hold a secret
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(item)"
            raise InvalidData(f"{where}: {err['msg']}", details={"field": where}) from None
        values: dict[str, Any] = body.model_dump(exclude_unset=False)
        check_saved_addresses(model, values, caller, allowed)
        return values

    return check


async def _import(
    ctx: ApiContext, caller: Principal, bundle: ParsedBundle, mode: ImportMode, dry_run: bool
) -> BundleImportReport:
    knowledge = ctx.services.get("knowledge")
    later: list[tuple[str | None, KnowledgeItem]] | None = None
    if isinstance(knowledge, KnowledgeServices) and not dry_run:
        later = []
    async with ctx.store.unit_of_work() as repos:
        report = await import_bundle(
            repos, caller, bundle, mode=mode, dry_run=dry_run, check=_checker(ctx, caller),
            index_later=later, cipher=ctx.cipher,
        )  # fmt: skip
    if isinstance(knowledge, KnowledgeServices) and later:
        # Items become searchable like uploaded ones: chunked, embedded, indexed.
        items = report.knowledge_items
        for index, (old_id, item) in enumerate(later):
            try:
                indexed = await knowledge.ingestion.ingest_text(
                    item.source_id,
                    item.text_content or "",
                    title=item.name,
                    tags=item.tags,
                    content_type=item.mime_type or "text/plain",
                )
            except TbdError as exc:
                if exc.http_status >= 500:
                    raise
                items.created -= 1
                items.errors.append(f"knowledge_items {old_id or index!r}: {exc.message}")
                continue
            items.ids.append(indexed.id)
            if old_id is not None:
                report.id_map.setdefault(KnowledgeItem.collection, {})[old_id] = indexed.id
    return report


@router.get(
    "/api/export", response_model=BundleOut, summary="Export your configuration as a bundle"
)
async def export(
    ctx: Ctx,
    caller: Caller,
    include_items: Annotated[
        bool, Query(description="Also export knowledge items (their text).")
    ] = False,
    agent_id: Annotated[
        str | None,
        Query(
            max_length=128,
            description="Export only this agent and what it uses (its provider, skills, MCP "
            "servers, custom tools, guardrails, knowledge sources; by id or by its tags).",
        ),
    ] = None,
) -> dict[str, Any]:
    async with ctx.store.unit_of_work(readonly=True) as repos:
        if agent_id is not None:
            return await export_agent(repos, caller, agent_id, include_items=include_items)
        return await export_bundle(repos, caller, include_items=include_items)


@router.post(
    "/api/import",
    response_model=BundleImportReport,
    response_model_by_alias=True,
    summary="Import a bundle (full, per resource, or of an earlier version of this hub)",
)
async def import_(
    body: BundleBody, ctx: Ctx, caller: Caller, mode: Mode = ImportMode.CREATE,
    dry_run: DryRun = False,
) -> BundleImportReport:  # fmt: skip
    return await _import(ctx, caller, parse_bundle(body), mode, dry_run)


RecordId = Annotated[str, Path(description="Record id.")]


def _add_routes(kind: Kind) -> None:
    base = f"/api/{kind.path}"
    label = kind.key.replace("_", " ")

    async def export_all(ctx: Ctx, caller: Caller) -> dict[str, Any]:
        async with ctx.store.unit_of_work(readonly=True) as repos:
            return await export_kind(repos, caller, kind)

    async def export_one(record_id: RecordId, ctx: Ctx, caller: Caller) -> dict[str, Any]:
        async with ctx.store.unit_of_work(readonly=True) as repos:
            return await export_kind(repos, caller, kind, record_id)

    async def import_items(
        body: ItemsBody, ctx: Ctx, caller: Caller, mode: Mode = ImportMode.CREATE,
        dry_run: DryRun = False,
    ) -> ResourceImportReport:  # fmt: skip
        report = await _import(ctx, caller, parse_bundle(body, kind), mode, dry_run)
        return resource_report(report, kind)

    resource_router.add_api_route(
        f"{base}/export", export_all, methods=["GET"], response_model=BundleOut,
        summary=f"Export your {label} (resource_type {kind.resource_type!r})",
    )  # fmt: skip
    resource_router.add_api_route(
        f"{base}/{{record_id}}/export", export_one, methods=["GET"], response_model=BundleOut,
        summary=f"Export one of {label}",
    )  # fmt: skip
    resource_router.add_api_route(
        f"{base}/import", import_items, methods=["POST"], response_model=ResourceImportReport,
        response_model_by_alias=True, summary=f"Import {label} from `{{\"items\": [...]}}`",
    )  # fmt: skip


for _kind in ROUTED:
    _add_routes(_kind)
