"""The import report: the existing `ImportResult` / `BundleImportResult` shapes and this hub's
extras (mode, dry run, conflicts, renames, missing tokens, id map)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tbd_agents.services.bundle.kinds import ImportMode, Kind


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
