"""Converting batches in child processes: reader (parent) → converter process(es) → loader (parent).

The conversion (BSON decoding, the domain model, COPY encoding) is pure Python and holds the GIL,
so a worker thread cannot run it beside the event loop that drives the load. `ConverterPool` runs
`convert_frames` in separate processes instead:

* the parent sends each batch to a child as a `FrameRange` (the file and where the batch's
  documents start: the parent reads only their 4-byte length prefixes) and the child reads the
  documents from the dump file itself; a gzipped file, which cannot be read by position, is read
  by the parent and the documents' bytes are sent instead;
* the child decodes and converts the batch exactly as the thread path does (`prepare_batch`),
  encodes the rows for a binary COPY (`copybin`: the parent then only forwards bytes, instead of
  unpickling tuples and encoding them on its own core) and sends back those bytes, the ids,
  rejections and warnings — not the decoded documents: the parent decodes a document only if
  it must be quarantined later (`LazyDocuments`, reading it back from the file by position);
* at most `workers + 1` batches are in flight (`ordered`), so memory stays bounded by the batch
  size, never by the dump size, and results come back in source order (checkpoints stay exact).

Children are forked (they inherit the imported modules, so starting one costs milliseconds; a
fork server or spawned children would re-import the program's `__main__`, the whole CLI), ask the
kernel to kill them when the parent dies (`PR_SET_PDEATHSIG`), and ignore Ctrl-C (the parent
handles it and shuts the pool down). Pages inherited at the fork stay shared until written, so
the sum of the processes' RSS counts them once per process; `docs/migration.md` gives both that
sum and the proportional (PSS) total.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from enum import Enum
from pathlib import Path
from typing import overload

from tbd_agents.tools.migration.batch import PreparedBatch, prepare_batch
from tbd_agents.tools.migration.bsonio import FrameRange, SourceDocument
from tbd_agents.tools.migration.copybin import RowEncoder, Unencodable, row_encoder
from tbd_agents.tools.migration.sources import decode_frame
from tbd_agents.tools.migration.transform import SPECS

_PR_SET_PDEATHSIG = 1


def default_workers(cpus: int | None = None, platform: str = sys.platform) -> int:
    """Converter processes when none are asked for: one per CPU, at most 4; none on one CPU, and
    none outside Linux (the pool forks, which macOS does not support safely in a process that
    has started threads).

    Measured on 2 CPUs (`benchmarks/RESULTS.md`): 2 converter processes load 64k to 72k rows/s
    against ~48k for the thread, and use less CPU per row (the children encode the COPY data)."""
    count = os.cpu_count() if cpus is None else cpus
    if not platform.startswith("linux") or count is None or count < 2:
        return 0
    return min(count, 4)


def _child_init() -> None:
    """In each child: die with the parent, leave Ctrl-C to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the executor's own shutdown still applies
        pass


def _started() -> int:
    time.sleep(0.05)
    return os.getpid()


def convert_range(collection: str, frames: Sequence[bytes]) -> tuple[PreparedBatch, list[int]]:
    """`convert_frames` of a batch given as raw documents or as a `FrameRange` (then read from
    the dump file here, in the child: the parent never reads those documents)."""
    if isinstance(frames, FrameRange):
        return convert_frames(collection, frames.read_all())
    return convert_frames(collection, frames)


def convert_frames(collection: str, frames: Sequence[bytes]) -> tuple[PreparedBatch, list[int]]:
    """Decode and convert one batch of raw frames (runs in a child).

    Returns the prepared batch without its `documents` and, for each record, the position of its
    frame in `frames` (so the parent can decode that document again if it is ever needed). The
    rows come encoded for a binary COPY, one document decoded at a time; if a value does not fit
    its column, the batch comes as tuples instead (the loader then isolates that row)."""
    spec = SPECS[collection]
    documents = LazyDocuments(frames, range(len(frames)))
    encoder = _row_encoder(collection)
    if encoder is not None:  # the parent forwards these bytes to COPY as they are
        try:
            batch = prepare_batch(spec, documents, {}, encoder)
        except Unencodable:
            pass
        else:
            return batch, batch.positions
    batch = prepare_batch(spec, documents, {})
    batch.documents = []
    # Enum members pickle as a class lookup + call each; their text is what COPY sends anyway.
    batch.records = [
        tuple(v._value_ if isinstance(v, Enum) else v for v in record) for record in batch.records
    ]
    return batch, batch.positions


@functools.cache
def _row_encoder(collection: str) -> RowEncoder | None:
    spec = SPECS[collection]
    return row_encoder(spec.table, spec.columns)


class LazyDocuments(Sequence[SourceDocument]):
    """The source documents of a batch's records, decoded from the raw frames on access."""

    def __init__(self, frames: Sequence[bytes], accepted: Sequence[int]) -> None:
        self._frames = frames
        self._accepted = accepted

    def __len__(self) -> int:
        return len(self._accepted)

    def __iter__(self) -> Iterator[SourceDocument]:
        # Sequence's own iterator calls __getitem__ through a try/except per document.
        frames = self._frames
        return (decode_frame(frames[i]) for i in self._accepted)

    @overload
    def __getitem__(self, index: int) -> SourceDocument: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SourceDocument]: ...

    def __getitem__(self, index: int | slice) -> SourceDocument | Sequence[SourceDocument]:
        if isinstance(index, slice):
            return [decode_frame(self._frames[i]) for i in self._accepted[index]]
        return decode_frame(self._frames[self._accepted[index]])


class ConverterPool:
    """`workers` converter processes (see module docstring); use as a context manager."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a converter pool needs at least one worker process")
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._peaks: dict[int, int] = {}
        #: Process ids of the children (known once the pool is entered).
        self.pids: list[int] = []

    def __enter__(self) -> ConverterPool:
        self._executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_child_init,
        )
        # Fork every child now, before any reader thread is busy (one short task per child).
        started = [self._executor.submit(_started) for _ in range(self.workers)]
        self.pids = sorted(
            {future.result() for future in started}
            | set(getattr(self._executor, "_processes", None) or {})
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Record the children's peak memory, then stop them (pending work is cancelled)."""
        if self._executor is None:
            return
        self._note_peaks()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = None

    def submit(
        self, collection: str, frames: Sequence[bytes]
    ) -> Future[tuple[PreparedBatch, list[int]]]:
        """Convert one batch: raw documents, or a `FrameRange` the child reads itself."""
        assert self._executor is not None, "use ConverterPool as a context manager"
        return self._executor.submit(convert_range, collection, frames)

    async def ordered(
        self, collection: str, frame_batches: AsyncIterator[Sequence[bytes]]
    ) -> AsyncIterator[PreparedBatch]:
        """Prepared batches of `frame_batches`, in order, with at most `workers + 1` in flight."""
        in_flight: deque[tuple[Sequence[bytes], Future[tuple[PreparedBatch, list[int]]]]] = deque()
        try:
            async for frames in frame_batches:
                in_flight.append((frames, self.submit(collection, frames)))
                if len(in_flight) > self.workers:
                    yield await self._result(*in_flight.popleft())
            while in_flight:
                yield await self._result(*in_flight.popleft())
        finally:
            for _, future in in_flight:
                future.cancel()
            self._note_peaks()

    @staticmethod
    async def _result(
        frames: Sequence[bytes], future: Future[tuple[PreparedBatch, list[int]]]
    ) -> PreparedBatch:
        batch, accepted = await asyncio.wrap_future(future)
        batch.documents = LazyDocuments(frames, accepted)  # type: ignore[assignment]
        return batch

    def _note_peaks(self) -> None:
        processes = getattr(self._executor, "_processes", None) or {}
        for pid in list(processes):
            peak = peak_rss(pid)
            if peak:
                self._peaks[pid] = max(self._peaks.get(pid, 0), peak)

    def children_peak_rss(self) -> int:
        """Sum of the children's peak resident memory in bytes (as far as observed)."""
        self._note_peaks()
        return sum(self._peaks.values())


def peak_rss(pid: int | None = None) -> int:
    """Peak resident memory (VmHWM) of process `pid` (default: this one) in bytes; 0 if gone."""
    try:
        status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0
