"""Supervision of the embedded PostgreSQL by the process that serves the API.

A thread checks the postmaster every EMBEDDED_PG_WATCH_INTERVAL seconds (its pid in
`postmaster.pid`, alive and not a zombie). When it is gone — killed, stopped by someone, or
ended after a PANIC — the supervisor starts it again on the same socket, so the application's
connection URL stays valid: the first attempt at once, then after 1, 2, 4 … seconds, up to
EMBEDDED_PG_RESTART_MAX_BACKOFF, for as long as it takes (and at once when a full disk has room
again). PostgreSQL replays its write-ahead log on start (crash recovery); nothing is lost that it
had confirmed.

It also watches the disk: when the volume of the data directory has (almost) no space left, or
the server's log says "No space left on device", the situation says "disk full" and what to free.
The situation is what `GET /health/ready` shows, and it is put in front of the 503 answers given
while the database cannot serve (`explain`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from tbd_agents.errors import DatabaseUnreachable, DiskFull, StorageError
from tbd_agents.storage.postgres.embedded import EmbeddedPostgres

_log = logging.getLogger("tbd_agents.storage.postgres.supervisor")

#: Below this many free bytes on the data directory's volume, the disk counts as full
#: (PostgreSQL extends tables 8 kB to 1 MB at a time and writes WAL in 16 MB segments).
DISK_FULL_BYTES = 1024 * 1024
#: Log lines that mean a write failed for lack of space.
_ENOSPC_MARKERS = ("No space left on device", "could not extend file")
#: With this much free space or more, an old "No space left on device" no longer counts.
ROOM_BYTES = 64 * DISK_FULL_BYTES
#: How long a "No space left on device" in the log counts (seconds).
_ENOSPC_MEMORY = 60.0
#: Bytes of new server log read per check (the end of it, if more was written).
_LOG_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Situation:
    """What the supervisor knows about the embedded server now."""

    running: bool
    pid: int | None
    restarts: int
    #: Why the server is not running or cannot write ("" when all is well).
    problem: str
    #: Set when the disk of the data directory is full: what to do about it.
    disk_full: str

    def describe(self) -> str:
        if self.running and not self.disk_full:
            return f"running (pid {self.pid}, restarted {self.restarts} times)"
        parts = [self.disk_full] if self.disk_full else []
        if not self.running:
            parts.append(self.problem or "not running")
        return "; ".join(parts)


class EmbeddedSupervisor:
    """Restarts the embedded server of `server` when it dies, and tells what is wrong."""

    def __init__(
        self,
        server: EmbeddedPostgres,
        *,
        interval: float = 1.0,
        max_backoff: float = 30.0,
        start_timeout: float = 120.0,
    ) -> None:
        self.server = server
        self.interval = interval
        self.max_backoff = max_backoff
        self.start_timeout = start_timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._restarts = 0
        self._problem = ""
        self._disk_full = ""
        self._running = True
        self._pid: int | None = server.postmaster().pid
        self._log_offset = self._log_size()
        self._recent: deque[str] = deque(maxlen=200)  # the server log's last lines
        self._enospc: tuple[float, str] | None = None  # when the log last said the disk is full

    # --- public --------------------------------------------------------------------------
    def start(self) -> None:
        """Start watching (a daemon thread)."""
        self._thread = threading.Thread(
            target=self._watch, name="embedded-postgres-supervisor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (before the server is let go of, so it is not restarted)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.start_timeout + 15)
            self._thread = None

    def situation(self) -> Situation:
        with self._lock:
            return Situation(
                self._running, self._pid, self._restarts, self._problem, self._disk_full
            )

    def explain(self, error: StorageError) -> StorageError:
        """`error` with the server's situation in front when the supervisor knows what is wrong
        (a full disk becomes DiskFull); unchanged otherwise."""
        now = self.situation()
        if isinstance(error, DiskFull):  # PostgreSQL itself said so (53100): clear enough
            return error
        if now.disk_full and isinstance(error, DatabaseUnreachable):
            return DiskFull(
                f"{now.disk_full} ({error.message})",
                details={**error.details, "reason": "disk_full"},
            )
        if not now.running and isinstance(error, DatabaseUnreachable):
            return DatabaseUnreachable(
                f"The embedded PostgreSQL is not running: {now.problem}. ({error.message})",
                details={**error.details, "reason": "embedded_server_down"},
            )
        return error

    # --- the watch -----------------------------------------------------------------------
    def _watch(self) -> None:
        backoff = 0.0
        down_since: float | None = None
        next_try = 0.0
        while not self._stop.wait(self._pause(down_since, next_try)):
            try:
                self._read_log()
                was_full = bool(self._disk_full)
                self._check_disk()
                room_again = was_full and not self._disk_full  # try now, not after the backoff
                state = self.server.postmaster()
                if state.alive:
                    if down_since is not None:
                        self._back(time.monotonic() - down_since, state.pid)
                    down_since, backoff = None, 0.0
                    continue
                if down_since is None:
                    down_since, next_try = time.monotonic(), 0.0
                    self._gone(state.pid)
                if time.monotonic() < next_try and not room_again:
                    continue
                backoff = self._try_restart(backoff)
                next_try = time.monotonic() + backoff
                state = self.server.postmaster()
                if state.alive:
                    self._back(time.monotonic() - down_since, state.pid)
                    down_since, backoff = None, 0.0
            except Exception:  # the watch must go on: log and look again
                _log.exception("the embedded PostgreSQL supervisor failed a check")
                backoff = min(max(backoff * 2, 1.0), self.max_backoff)
                next_try = time.monotonic() + backoff

    def _pause(self, down_since: float | None, next_try: float) -> float:
        """Seconds until the next look: the interval, or less when a restart attempt is due."""
        if down_since is None:
            return self.interval
        return max(0.0, min(self.interval, next_try - time.monotonic()))

    def _gone(self, pid: int | None) -> None:
        cause = _cause(list(self._recent))
        _log.error(
            "the embedded PostgreSQL in %s (pid %s) is gone%s; restarting it",
            self.server.data_dir,
            pid,
            f" — its log says: {cause}" if cause else "",
        )
        with self._lock:
            self._running = False
            self._problem = "it stopped" + (f" ({cause})" if cause else "") + "; restarting it"

    def _try_restart(self, backoff: float) -> float:
        if self._stop.is_set():
            return backoff
        try:
            restarted = self.server.restart(timeout=self.start_timeout)
        except Exception as exc:
            failure = " ".join(str(exc).split())[:500]
            self._read_log()
            self._note_enospc(failure)
            self._check_disk()
            backoff = min(max(backoff * 2, 1.0), self.max_backoff)
            _log.error(
                "restarting the embedded PostgreSQL in %s failed (%s); next attempt in %.0f s",
                self.server.data_dir,
                failure,
                backoff,
            )
            with self._lock:
                self._problem = (
                    f"restarting it failed ({failure[:300]}); next attempt in {backoff:.0f} s"
                )
            return backoff
        if restarted:
            with self._lock:
                self._restarts += 1
        return 0.0

    def _back(self, seconds: float, pid: int | None) -> None:
        _log.warning(
            "the embedded PostgreSQL in %s is back (pid %s) after %.1f s",
            self.server.data_dir,
            pid,
            seconds,
        )
        with self._lock:
            self._running, self._pid, self._problem = True, pid, ""

    # --- the disk and the log ------------------------------------------------------------
    def _note_enospc(self, text: str) -> None:
        if any(m in text for m in _ENOSPC_MARKERS):
            said = text.split(":  ", 1)[-1]  # without the log line's time and pid
            self._enospc = (time.monotonic(), " ".join(said.split())[:300])

    def _check_disk(self) -> None:
        """Set or clear the disk-full condition: (almost) no free space on the data directory's
        volume, or a recent "No space left on device" while space is still short."""
        free = _free_bytes(self.server.data_dir)
        if free is None:
            return
        said = ""
        if self._enospc is not None and time.monotonic() - self._enospc[0] < _ENOSPC_MEMORY:
            said = self._enospc[1]
        full = free < DISK_FULL_BYTES or (bool(said) and free < ROOM_BYTES)
        message = ""
        if full:
            message = (
                f"disk full: the volume holding the embedded PostgreSQL's data directory "
                f"{self.server.data_dir} has {free} bytes free"
                + (f" (the server said: {said})" if said else "")
                + "; free space there (delete files, grow the volume) — the server resumes "
                "writing, or is restarted, by itself once there is room"
            )
        with self._lock:
            changed = bool(message) != bool(self._disk_full)
            self._disk_full = message
        if changed and message:
            _log.error("%s", message)
        elif changed:
            _log.warning(
                "the disk of the embedded PostgreSQL in %s has room again (%d bytes free)",
                self.server.data_dir,
                free,
            )

    def _log_size(self) -> int:
        try:
            return self.server.log_path.stat().st_size
        except OSError:
            return 0

    def _read_log(self) -> None:
        """Take in the server log written since the last look (at most its last 64 kB)."""
        size = self._log_size()
        if size < self._log_offset:  # rotated or truncated
            self._log_offset = 0
        if size == self._log_offset:
            return
        start = max(self._log_offset, size - _LOG_CHUNK)
        try:
            with self.server.log_path.open("rb") as fh:
                fh.seek(start)
                data = fh.read(size - start)
        except OSError as exc:
            _log.warning("cannot read the embedded PostgreSQL's log: %s", exc)
            return
        self._log_offset = size
        for line in data.decode("utf-8", "replace").splitlines():
            self._recent.append(line)
            self._note_enospc(line)


def _free_bytes(path: Path) -> int | None:
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _cause(lines: list[str]) -> str:
    """The most telling line of a server log excerpt: a PANIC or FATAL, a full disk."""
    for marker in ("No space left on device", "PANIC:", "FATAL:", "LOG:  terminating"):
        for line in reversed(lines):
            if marker in line:
                return line.split(":  ", 1)[-1].strip()[:300]
    return ""
