"""`tbd-agents migrate from-mongo` / `tbd-agents migrate verify` (and the guide's scripts).

`scripts/migrate_mongo_to_postgres.py` and `scripts/verify_migration.py` run these same commands,
so both spellings take the same flags. Connections come from the settings (MONGO_URI,
MONGO_DB_NAME, POSTGRES_URI; no POSTGRES_URI = the embedded PostgreSQL; EMBEDDING_* for the space
of the memory vectors copied from the memories' embeddings). Exit status: 0 done (verify: PASS),
1 failed (verify: FAIL), documents were quarantined or source fields not migrated without
`--accept-losses`, or memory vectors could not be copied (the summary says why).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console

from tbd_agents.cli.common import friendly_errors, settings
from tbd_agents.config import Settings
from tbd_agents.tools.migration.endpoints import (
    Target,
    close_vectors,
    connect,
    database_errors,
    open_memory_embeddings,
    open_source,
    open_vectors,
    prepare_schema,
    target_database,
)
from tbd_agents.tools.migration.memvectors import STEP as MEMORY_VECTORS
from tbd_agents.tools.migration.memvectors import MemoryEmbeddings
from tbd_agents.tools.migration.procpool import default_workers
from tbd_agents.tools.migration.render import RichReporter, migration_summary, verify_summary
from tbd_agents.tools.migration.report import DEFAULT_QUARANTINE_FILE, ReportLog
from tbd_agents.tools.migration.results import MigrationResult
from tbd_agents.tools.migration.runner import Migration, Options, wanted_collections
from tbd_agents.tools.migration.sources import Source
from tbd_agents.tools.migration.vectors import VectorSource
from tbd_agents.tools.migration.verify import Verifier, VerifyResult

app = typer.Typer(
    help="Move data from MongoDB (live, or a mongodump) into PostgreSQL, and verify it.",
    no_args_is_help=True,
)

CollectionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--collection",
        help="Only this collection (repeatable). Default: all of them (the 15, our own, GridFS, "
        "vectors; see docs/migration.md).",
        show_default=False,
    ),
]
DumpOpt = Annotated[
    Path | None,
    typer.Option(
        "--from-dump",
        help="Read a mongodump directory (<collection>.bson or .bson.gz files) "
        "instead of MONGO_URI.",
        show_default=False,
    ),
]
ArchiveOpt = Annotated[
    Path | None,
    typer.Option(
        "--archive",
        help="Read a `mongodump --archive` file (gzip or not) instead of MONGO_URI.",
        show_default=False,
    ),
]
AllowEmptyOpt = Annotated[
    bool,
    typer.Option("--allow-empty", help="Accept a source without any of the collections, or empty."),
]
QdrantPathOpt = Annotated[
    Path | None,
    typer.Option(
        "--qdrant-path",
        help="Copy vectors from Qdrant local-mode data in this directory (default: the server at "
        "QDRANT_URL, if set).",
        show_default=False,
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Print a line per batch (verify: the diffs).")
]


def _console() -> Console:
    return Console(highlight=False)


@app.command("from-mongo")
@friendly_errors
def from_mongo(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and convert everything; write nothing.")
    ] = False,
    collection: CollectionOpt = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", min=1, max=100_000, help="Documents per batch (one transaction each)."
        ),
    ] = 500,
    verbose: VerboseOpt = False,
    from_dump: DumpOpt = None,
    archive: ArchiveOpt = None,
    allow_empty: AllowEmptyOpt = False,
    accept_losses: Annotated[
        bool,
        typer.Option(
            "--accept-losses",
            help="Exit 0 even when documents were quarantined or source fields were not "
            "migrated (the summary lists them and why).",
        ),
    ] = False,
    accept_quarantine: Annotated[
        bool,
        typer.Option("--accept-quarantine", hidden=True, help="Older name of --accept-losses."),
    ] = False,
    quarantine_file: Annotated[
        Path,
        typer.Option(
            "--quarantine-file",
            help="JSON-lines report of the documents not migrated (appended to); "
            "warnings go next to it in <name>.warnings.jsonl.",
        ),
    ] = DEFAULT_QUARANTINE_FILE,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Ignore the checkpoints of an interrupted run and start every collection over.",
        ),
    ] = False,
    qdrant_path: QdrantPathOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            max=8,
            show_default="one per CPU, at most 4; 0 on a single CPU or outside Linux",
            help="Converter processes for a dump or archive (0: convert in a thread of the "
            "migration process).",
        ),
    ] = None,
) -> None:
    """Migrate the MongoDB data of TBD Agents into PostgreSQL.

    Idempotent and resumable: re-running rewrites nothing that is already identical, and an
    interrupted run continues after the last committed batch. Documents that cannot be migrated
    are written to the quarantine file with the reason, never skipped silently.
    """
    config = settings()
    console = _console()
    if workers is None:
        workers = default_workers()
    options = Options(collection, batch_size, dry_run, restart, allow_empty, workers)
    sources = SourceFlags(from_dump, archive, collection, qdrant_path)
    with target_database(config) as target:
        result = asyncio.run(
            _migrate(config, sources, target, options, quarantine_file, console, verbose)
        )
    migration_summary(console, result, dry_run=dry_run)
    quarantined = result.quarantined
    if quarantined:
        console.print(
            f"{quarantined:,} documents quarantined (why: see above): the documents are in "
            f"{quarantine_file}",
            markup=False,
        )
    if result.dropped:
        console.print(
            f"{result.dropped:,} source fields not migrated (which: see above)", markup=False
        )
    refused = result.losses and not (accept_losses or accept_quarantine)
    if refused:
        console.print(
            "Exit status 1: not everything of the source is in PostgreSQL (see above); pass "
            "--accept-losses to accept this.",
            markup=False,
        )
    if result.problems:
        console.print("Exit status 1: the migration needs attention (see above).")
    if refused or result.problems:
        raise typer.Exit(1)


@dataclass(frozen=True)
class SourceFlags:
    from_dump: Path | None
    archive: Path | None
    collections: list[str] | None
    qdrant_path: Path | None

    def vectors(self, config: Settings, console: Console, target: Target) -> VectorSource | None:
        vectors = open_vectors(config, target, self.qdrant_path)
        console.print(
            f"Vectors: {vectors.label}"
            if vectors
            else "Vectors: no Qdrant source: memory vectors come from the memories' embedding "
            "field (set QDRANT_URL or pass --qdrant-path to copy the knowledge chunk and memory "
            "vectors from Qdrant)"
        )
        return vectors

    async def memory_embeddings(
        self, config: Settings, console: Console, target: Target, vectors: VectorSource | None
    ) -> MemoryEmbeddings | None:
        """Without a Qdrant source, when memories are migrated: the embedder's space."""
        if vectors is not None or MEMORY_VECTORS not in wanted_collections(self.collections):
            return None
        embeddings = await open_memory_embeddings(config, target)
        console.print(
            f"Memory vectors: recorded as {embeddings.space.describe()}"
            if embeddings.unusable is None
            else f"Memory vectors: not copied: {embeddings.unusable} (see the summary)",
            markup=False,
        )
        return embeddings

    async def open(self, config: Settings, console: Console, target: Target) -> Source:
        source = await asyncio.to_thread(
            open_source,
            config,
            from_dump=self.from_dump,
            archive=self.archive,
            collections=self.collections,
        )
        console.print(f"Source: {source.label}")
        console.print(f"Target: {target.label}")
        return source


async def _migrate(
    config: Settings,
    flags: SourceFlags,
    target: Target,
    options: Options,
    quarantine_file: Path,
    console: Console,
    verbose: bool,
) -> MigrationResult:
    source = await flags.open(config, console, target)
    conn = vectors = embeddings = None
    log = ReportLog(quarantine_file)
    try:
        vectors = flags.vectors(config, console, target)
        embeddings = await flags.memory_embeddings(config, console, target, vectors)
        console.print(
            f"Batch size {options.batch_size}"
            + (" · DRY RUN: nothing will be written" if options.dry_run else "")
        )
        ready = await prepare_schema(target, dry_run=options.dry_run)
        if not ready:
            console.print(
                "Note: the target is not at the head revision; the dry run cannot compare with "
                "existing rows. The real run migrates the embedded server first, or refuses "
                "another server until `alembic upgrade head` is run."
            )
        conn = await connect(target) if ready else None
        with RichReporter(console, verbose=verbose) as reporter:
            async with database_errors(target):
                migration = Migration(source, conn, options, log, reporter, vectors, embeddings)
                return await migration.run()
    finally:
        log.close()
        if conn is not None:
            await conn.close()
        await close_vectors(vectors)
        if embeddings is not None:
            await embeddings.engine.dispose()
        await source.close()


@app.command()
@friendly_errors
def verify(
    collection: CollectionOpt = None,
    from_dump: DumpOpt = None,
    archive: ArchiveOpt = None,
    allow_empty: AllowEmptyOpt = False,
    verbose: VerboseOpt = False,
    qdrant_path: QdrantPathOpt = None,
) -> None:
    """Compare the source with PostgreSQL by content; print RESULT: PASS or FAIL (exit 0 / 1).

    Every source document is compared with the row of its id, field by field (the column of the
    same name, or the row's extras); counts per collection come first, then each failure naming
    collection, id and field. Documents the migration recorded as quarantined are expected to be
    absent and are counted with their reason.
    """
    config = settings()
    console = _console()
    # What the run says before the comparison (source, target) is printed after the counts,
    # which are the first lines of the output (as the guide describes the script).
    setup = Console(file=io.StringIO(), highlight=False, width=console.width)
    flags = SourceFlags(from_dump, archive, collection, qdrant_path)
    with target_database(config) as target:
        result = asyncio.run(_verify(config, flags, target, setup, allow_empty))
    context = cast(io.StringIO, setup.file).getvalue().splitlines()
    verify_summary(console, result, verbose=verbose, context=context)
    if not result.ok:
        raise typer.Exit(1)


async def _verify(
    config: Settings, flags: SourceFlags, target: Target, console: Console, allow_empty: bool
) -> VerifyResult:
    from tbd_agents.storage.postgres.migrate import ensure_at_head

    source = await flags.open(config, console, target)
    conn = reader = vectors = None
    try:
        vectors = flags.vectors(config, console, target)
        await ensure_at_head(target.url)
        conn = await connect(target)
        reader = await connect(target)
        verifier = Verifier(source, conn, reader, vectors=vectors)
        async with database_errors(target):
            return await verifier.run(flags.collections, allow_empty)
    finally:
        for connection in (conn, reader):
            if connection is not None:
                await connection.close()
        await close_vectors(vectors)
        await source.close()


def single_command(command: str) -> typer.Typer:
    """A one-command app for the guide's `python scripts/...py` entry points."""
    standalone = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    standalone.command()(from_mongo if command == "from-mongo" else verify)
    return standalone
