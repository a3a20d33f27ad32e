"""The migration's progress series, from a real MongoDB → PostgreSQL migration run in this
process (a `mongodump` of the edge-case dataset into a migrated database): the records counted
per entity are the rows the run wrote, and every collection ends at a progress ratio of 1."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.tools.migration.report import ReportLog
from tbd_agents.tools.migration.runner import Migration, Options
from tbd_agents.tools.migration.sources import DumpSource
from tests.observability.conftest import Deltas
from tests.support import pg
from tests.support.dumps import edge_case_dataset, write_dump

DB = "copilot_agent_hub"


async def test_migration_records_and_progress_are_counted_per_entity(
    pg18_server: str, tmp_path: Path
) -> None:
    dump = write_dump(tmp_path / "dump", edge_case_dataset(log_entries=50, big=2_000))
    url = pg.create_migrated_database(pg18_server, "sigmig")
    log = ReportLog(tmp_path / "quarantine.jsonl")
    conn = await asyncpg.connect(libpq_url(url))
    try:
        deltas = Deltas()
        result = await Migration(DumpSource(dump, DB), conn, Options(batch_size=7), log).run()
        d = deltas.take()
    finally:
        log.close()
        await conn.close()
        pg.drop_database(url)
    written = {c.name: c.inserted + c.updated + c.unchanged for c in result.collections}
    assert sum(written.values()) > 0
    for name, rows in written.items():
        assert d("tbd_migration_records_total", entity=name) == rows, name
        assert d.after[("tbd_migration_progress_ratio", (("entity", name),))] == 1.0, name
