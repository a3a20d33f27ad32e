"""What the migration and verification commands print: progress bars, batch lines, summaries."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from tbd_agents.tools.migration.results import BatchStep, CollectionResult, MigrationResult
from tbd_agents.tools.migration.verify import CollectionCheck, VerifyResult


class RateColumn(ProgressColumn):
    """Documents per second of a task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} docs/s", style="cyan")


class RichReporter:
    """A progress bar per collection (docs/s, ETA); with `verbose`, a line per batch."""

    def __init__(self, console: Console, *, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.progress = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def collection_started(self, result: CollectionResult) -> None:
        note = f" (resuming after {result.resumed_from:,})" if result.resumed_from else ""
        self._tasks[result.name] = self.progress.add_task(
            result.name + note, total=result.total, completed=result.resumed_from
        )

    def batch_done(self, result: CollectionResult, step: BatchStep) -> None:
        self.progress.advance(self._tasks[result.name], step.read)
        if not self.verbose:
            return
        outcome = step.outcome
        if outcome is None:
            line = (
                f"{result.name}: batch of {step.read} (up to #{result.resumed_from + result.read}): "
                f"{step.convertible} convertible, {step.quarantined} to quarantine"
            )
        else:
            line = (
                f"{result.name}: batch of {step.read} (up to #{outcome.position}) committed: "
                f"{outcome.inserted} inserted, {outcome.updated} updated, {outcome.unchanged} "
                f"unchanged, {step.quarantined} quarantined"
            )
        self.progress.console.print(line, highlight=False)

    def collection_done(self, result: CollectionResult) -> None:
        task = self._tasks[result.name]
        done = result.resumed_from + result.read
        self.progress.update(
            task, total=max(done, 1) if result.total is None else result.total, completed=done
        )


def migration_summary(console: Console, result: MigrationResult, *, dry_run: bool) -> None:
    """The per-collection table and the notes (extra fields, warnings, ignored collections)."""
    table = Table(title="Dry run: nothing was written" if dry_run else "Migration summary")
    table.add_column("collection")
    heads = (
        ("read", "would insert", "would overwrite")
        if dry_run
        else ("read", "inserted", "updated", "unchanged")
    )
    for head in (*heads, "quarantined", "warnings", "seconds", "docs/s"):
        table.add_column(head, justify="right")
    for c in result.collections:
        counts = (
            (c.would_insert, c.would_overwrite) if dry_run else (c.inserted, c.updated, c.unchanged)
        )
        rate = f"{c.read / c.seconds:,.0f}" if c.seconds > 0 and c.read else "-"
        quarantined = f"{c.quarantined_total:,}" + (
            f" ({c.quarantined_before:,} earlier)" if c.quarantined_before else ""
        )
        table.add_row(
            c.name,
            f"{c.read:,}",
            *(f"{n:,}" for n in counts),
            quarantined,
            f"{sum(c.warnings.values()):,}",
            f"{c.seconds:.1f}",
            rate,
        )
    console.print(table)
    for c in result.collections:
        for category, n in c.quarantined.most_common():
            console.print(
                f"  {c.name}: quarantined {n:,} {category}: {why_quarantined(c.name, category)}",
                highlight=False,
                markup=False,
            )
        if c.warnings:
            console.print(
                f"  {c.name}: " + ", ".join(f"{n:,} x {k}" for k, n in c.warnings.most_common()),
                highlight=False,
            )
        if c.skipped:
            reasons = ", ".join(f"{n:,} {k}" for k, n in c.skipped.most_common())
            console.print(f"  {c.name}: left out {reasons}", highlight=False)
        if c.numbered:
            console.print(
                f"  {c.name}: numbered {c.numbered:,} rows in their original order "
                "(created_at, then _id)",
                highlight=False,
            )
        if c.extra_kept:
            fields = ", ".join(f"{k} ({n:,})" for k, n in c.extra_kept.most_common())
            console.print(
                f"  {c.name}: unknown fields kept in the extras column: {fields}",
                highlight=False,
            )
        if c.extra_dropped:
            fields = ", ".join(f"{k} ({n:,})" for k, n in c.extra_dropped.most_common())
            console.print(
                f"  {c.name}: fields NOT migrated (no column holds them): {fields}",
                highlight=False,
                markup=False,
            )
    if result.ignored:
        console.print(
            f"  Not migrated (not TBD Agents collections): {', '.join(result.ignored)}",
            highlight=False,
        )
    for problem in result.problems:
        console.print(f"Needs attention: {problem}", highlight=False, markup=False)


#: Parent of each child collection whose documents cannot exist without it.
_PARENTS = {
    "chat_messages": "chat session",
    "knowledge_items": "knowledge source",
    "qdrant:knowledge_chunks": "knowledge item",
    "qdrant:memories": "memory",
}


def why_quarantined(collection: str, category: str) -> str:
    """What a quarantine category means, in a sentence, for the summaries."""
    if category == "orphan":
        if collection == "fs.files":
            return (
                "no migrated knowledge item owns the file (the application reaches files only "
                "through their item)"
            )
        parent = _PARENTS.get(collection, "parent record")
        return (
            f"their {parent} is not in the source or was quarantined itself; the application "
            "cannot reach them without it (the existing system deleted them with it)"
        )
    return {
        "duplicate key": "a newer document has the same unique key; the newest one is migrated",
        "invalid": "the data model refuses a value (the quarantine file names the field)",
        "database": "PostgreSQL refused the row (its message is in the quarantine file)",
        "undecodable": "not valid BSON (the raw bytes are in the quarantine file)",
        "incomplete GridFS file": "a chunk of the file is missing, duplicated or of the wrong size",
        "corrupt GridFS file": "the bytes do not match the recorded SHA-256 or MD5",
    }.get(category, "see the reason in the quarantine file")


def verify_summary(
    console: Console,
    result: VerifyResult,
    *,
    verbose: bool = False,
    context: Sequence[str] = (),
) -> None:
    """The per-collection counts (first), then `context` (source and target), what was expected
    to be absent and why, each failure naming collection, id and field, and the RESULT line."""
    table = Table(title="Verification by content")
    table.add_column("collection")
    heads = ("source", "quarantined", "expected", "target", "missing", "extra", "differing", "")
    for head in heads:
        table.add_column(head, justify="right")
    for c in result.collections:
        table.add_row(
            c.name,
            f"{c.source_documents:,}",
            f"{sum(c.excluded.values()):,}",
            f"{c.expected:,}",
            f"{c.target_rows:,}",
            f"{c.missing:,}",
            f"{c.extra:,}",
            f"{c.differing:,}",
            "[green]OK[/green]" if c.ok else "[red]FAIL[/red]",
        )
    console.print(table)
    for line in context:
        console.print(line, highlight=False, markup=False)
    for c in result.collections:
        _verify_details(console, c, verbose)
    console.print("RESULT: PASS" if result.ok else "RESULT: FAIL", highlight=False, markup=False)


def _verify_details(console: Console, c: CollectionCheck, verbose: bool) -> None:
    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False)

    for category, n in c.excluded.most_common():
        reason = c.reasons.get(category)
        if reason is not None:
            say(f"  {c.name}: {n:,} {category}, {c.excluded_note}; e.g. {reason}")
        else:
            say(f"  {c.name}: {n:,} {category}, {c.excluded_note}")
    if c.duplicate_ids:
        say(f"  FAIL {c.name}: {c.duplicate_ids:,} ids occur more than once in the source")
    for doc_id in c.missing_ids:
        say(
            f"  FAIL {c.name} {doc_id}: missing row (not in the table, not recorded as quarantined)"
        )
    for doc_id in c.extra_ids:
        say(f"  FAIL {c.name} {doc_id}: extra row (no source document has this id)")
    for doc_id in c.differing_ids:
        differences = c.differences.get(doc_id)
        if differences is None:
            say(f"  FAIL {c.name} {doc_id}: differs (the digest of its content)")
            continue
        shown = differences if verbose else differences[:5]
        for d in shown:
            say(f"  FAIL {c.name} {doc_id}: {d.field}: source {d.source} · target {d.target}")
        if len(differences) > len(shown):
            say(f"  FAIL {c.name} {doc_id}: … {len(differences) - len(shown)} more fields differ")
    for label, total, listed in (
        ("missing", c.missing, c.missing_ids),
        ("extra", c.extra, c.extra_ids),
        ("differing", c.differing, c.differing_ids),
    ):
        if total > len(listed):
            say(f"  FAIL {c.name}: {total - len(listed):,} more {label} rows not listed")
