"""The migration's report files: quarantined documents and warnings, as JSON lines.

Quarantine file (default `migration-quarantine.jsonl`), one line per document not migrated::

    {"run": "20250301T101500Z", "collection": "memories", "id": "65f0…", "reason": "duplicate key,
     superseded by 65f1…", "category": "duplicate key", "document": {<MongoDB canonical Extended JSON>}}

Warnings file (same name with `.warnings.jsonl`), one line per document migrated with a change::

    {"run": "...", "collection": "chat_messages", "id": "65f0…",
     "warning": "NUL characters removed (originals in extras[\"$exact\"]): content"}

Files are appended to (each line names its run), never truncated, so the report of an earlier run
or of the first part of an interrupted run is never lost. Lines are flushed to disk before the
batch they belong to commits; a run killed between the two may repeat some lines when resumed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from tbd_agents.tools.migration.batch import Rejection, Warning
from tbd_agents.tools.migration.bsonio import Undecodable
from tbd_agents.tools.migration.convert import extended_json

DEFAULT_QUARANTINE_FILE = Path("migration-quarantine.jsonl")


def warnings_path_for(quarantine: Path) -> Path:
    """Where the warnings go for a given quarantine file."""
    name = quarantine.name.removesuffix(".jsonl")
    return quarantine.with_name(f"{name}.warnings.jsonl")


class ReportLog:
    """Appends quarantine and warning lines for one run; files are opened on first use."""

    def __init__(self, quarantine: Path, *, run_id: str | None = None) -> None:
        self.quarantine_path = quarantine
        self.warnings_path = warnings_path_for(quarantine)
        self.run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._files: dict[Path, IO[str]] = {}

    def _file(self, path: Path) -> IO[str]:
        handle = self._files.get(path)
        if handle is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = self._files[path] = path.open("a", encoding="utf-8")
        return handle

    def rejected(self, collection: str, rejections: Iterable[Rejection]) -> None:
        """Record documents that will not be migrated."""
        out = None
        for item in rejections:
            out = out or self._file(self.quarantine_path)
            document = (
                json.dumps(item.document.as_document())
                if isinstance(item.document, Undecodable)
                else extended_json(item.document)
            )
            head = json.dumps(
                {
                    "run": self.run_id,
                    "collection": collection,
                    "id": item.id,
                    "reason": item.reason,
                    "category": item.category,
                },
                ensure_ascii=False,
            )
            out.write(head[:-1] + ', "document": ' + document + "}\n")

    def warned(self, collection: str, warnings: Iterable[Warning]) -> None:
        """Record documents migrated with a change (NUL removed, NaN as text; the originals are in
        the row's `extras["$exact"]`)."""
        out = None
        for item in warnings:
            out = out or self._file(self.warnings_path)
            line = {
                "run": self.run_id,
                "collection": collection,
                "id": item.id,
                "warning": item.message,
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")

    def sync(self) -> None:
        """Flush every line written so far to disk."""
        for handle in self._files.values():
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        self.sync()
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def read_report(path: Path, run_id: str | None = None) -> list[dict[str, object]]:
    """The lines of a quarantine or warnings file (of one run, if given), parsed."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [line for line in lines if run_id is None or line.get("run") == run_id]
