"""What a migration run reports: per-collection results, progress events, the run's outcome."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from tbd_agents.observability.metrics import MIGRATION_PROGRESS, MIGRATION_RECORDS
from tbd_agents.tools.migration.loader import BatchOutcome


@dataclass
class CollectionResult:
    """What happened to one collection in this run (counts of this run unless noted)."""

    name: str
    mode: str = "upsert"
    total: int | None = None
    resumed_from: int = 0
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    #: Dry run only: rows that would be written, split by whether their id already exists.
    would_insert: int = 0
    would_overwrite: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    #: Quarantined before this run resumed (from the checkpoint).
    quarantined_before: int = 0
    warnings: Counter[str] = field(default_factory=Counter)
    extra_kept: Counter[str] = field(default_factory=Counter)
    extra_dropped: Counter[str] = field(default_factory=Counter)
    #: Rows read but left out on purpose, by reason (memory vectors: "no embedding").
    skipped: Counter[str] = field(default_factory=Counter)
    #: Rows numbered after the load (chat messages' `seq`, in created_at then _id order).
    numbered: int = 0
    seconds: float = 0.0

    @property
    def quarantined_total(self) -> int:
        return self.quarantined_before + sum(self.quarantined.values())


@dataclass
class MigrationResult:
    collections: list[CollectionResult] = field(default_factory=list)
    #: Source collections that are not TBD Agents' (reported, not migrated).
    ignored: list[str] = field(default_factory=list)
    #: What needs the user's attention beyond quarantined documents (each says how to fix it);
    #: the command exits 1 when there is any.
    problems: list[str] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return sum(c.quarantined_total for c in self.collections)

    @property
    def read(self) -> int:
        return sum(c.read + c.resumed_from for c in self.collections)

    @property
    def dropped(self) -> int:
        """Source fields not migrated (with how many documents had each), over every collection."""
        return sum(sum(c.extra_dropped.values()) for c in self.collections)

    @property
    def losses(self) -> bool:
        """Whether anything of the source is not in the target: a quarantined document or a
        dropped field (the command then exits 1 unless --accept-losses)."""
        return bool(self.quarantined or self.dropped)


class Reporter(Protocol):
    """Receives progress events (the CLI draws progress bars from them)."""

    def collection_started(self, result: CollectionResult) -> None: ...

    def batch_done(self, result: CollectionResult, step: BatchStep) -> None: ...

    def collection_done(self, result: CollectionResult) -> None: ...


@dataclass(frozen=True)
class BatchStep:
    """One batch dealt with: documents read, how many can be loaded / were quarantined, and,
    unless this is a dry run, what the committed transaction did."""

    read: int
    convertible: int
    quarantined: int
    outcome: BatchOutcome | None = None


class SilentReporter:
    def collection_started(self, result: CollectionResult) -> None:
        return None

    def batch_done(self, result: CollectionResult, step: BatchStep) -> None:
        return None

    def collection_done(self, result: CollectionResult) -> None:
        return None


class MeteredReporter:
    """A `Reporter` that also counts the migration's progress in Prometheus
    (`tbd_migration_records_total{entity}`: rows written by committed batches;
    `tbd_migration_progress_ratio{entity}`: documents read of the source's count) before it
    passes each event on. Dry runs write nothing, so they count no records."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner

    def collection_started(self, result: CollectionResult) -> None:
        MIGRATION_PROGRESS.labels(result.name).set(_ratio(result))
        self.inner.collection_started(result)

    def batch_done(self, result: CollectionResult, step: BatchStep) -> None:
        outcome = step.outcome
        if outcome is not None:  # committed: what the target holds now (refused rows are not)
            written = outcome.inserted + outcome.updated + outcome.unchanged
            MIGRATION_RECORDS.labels(result.name).inc(written)
        MIGRATION_PROGRESS.labels(result.name).set(_ratio(result))
        self.inner.batch_done(result, step)

    def collection_done(self, result: CollectionResult) -> None:
        MIGRATION_PROGRESS.labels(result.name).set(_ratio(result, done=True))
        self.inner.collection_done(result)


def _ratio(result: CollectionResult, *, done: bool = False) -> float:
    if done:
        return 1.0
    if not result.total:
        return 0.0
    return min(1.0, (result.resumed_from + result.read) / result.total)
