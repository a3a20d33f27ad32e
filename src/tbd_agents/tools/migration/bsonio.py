"""Streaming BSON files: `mongodump` collection files (`.bson`, `.bson.gz`) and `--archive` files.

Nothing here loads a whole collection: documents are read one length-prefixed frame at a time, and
skipping documents (to resume) seeks over frames without decoding them. An archive is split
("demultiplexed") once into one plain `.bson` file per collection of the wanted database, so every
collection can then be read, re-read and resumed like a dump directory's file.

Archive layout (mongodump's documented format): magic number, a header document, one metadata
document per collection, a terminator, then interleaved segments; each segment is a namespace
header document (`db`, `collection`, `EOF`), zero or more documents of that namespace and a
terminator. The CRC the `EOF` header carries is not checked (the BSON framing is).
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import struct
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, BinaryIO, overload

import bson

from tbd_agents.errors import InvalidData

ARCHIVE_MAGIC = 0x8199E26D
_TERMINATOR = -1
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
#: Larger than any document MongoDB accepts (16 MiB + headroom); a bigger frame means corruption.
MAX_FRAME = 48 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Undecodable:
    """A dump document that is not valid BSON (kept raw for the quarantine report)."""

    raw: bytes
    error: str

    def as_document(self) -> dict[str, Any]:
        return {"$undecodable": base64.b64encode(self.raw).decode("ascii"), "error": self.error}


#: One document as a source hands it out: decoded, or raw when it is not valid BSON.
SourceDocument = dict[str, Any] | Undecodable


def open_stream(path: Path) -> BinaryIO:
    """Open `path` for reading, transparently un-gzipping it when it starts with the gzip magic."""
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    if head == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _read_exact(stream: BinaryIO, size: int, what: str, origin: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise InvalidData(
            f"{origin} is truncated: expected {size} bytes of {what}, got {len(data)}. "
            "Re-create the dump (mongodump) or copy it again."
        )
    return data


def _frame_length(prefix: bytes, origin: str) -> int:
    length: int = _INT32.unpack(prefix)[0]
    if length < 5 or length > MAX_FRAME:
        raise InvalidData(
            f"{origin} is not valid BSON: a document claims {length} bytes. "
            "Is this a mongodump .bson/.bson.gz file or an --archive file?"
        )
    return length


def iter_frames(stream: BinaryIO, origin: str, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Yield each raw BSON document of a `.bson` stream, in file order (read in 1 MiB chunks)."""
    buffer = b""
    offset = 0
    while True:
        if len(buffer) - offset < 4:
            more = stream.read(chunk)
            buffer = buffer[offset:] + more
            offset = 0
            if not more:
                if buffer:
                    raise InvalidData(f"{origin} is truncated after its last complete document.")
                return
            continue
        length = _frame_length(buffer[offset : offset + 4], origin)
        end = offset + length
        if end > len(buffer):
            more = stream.read(max(chunk, end - len(buffer)))
            if not more:
                raise InvalidData(
                    f"{origin} is truncated: expected {length} bytes of a document, got "
                    f"{len(buffer) - offset}. Re-create the dump (mongodump) or copy it again."
                )
            buffer = buffer[offset:] + more
            offset = 0
            continue
        yield buffer[offset:end]
        offset = end


def frame_offsets(
    path: Path, start: int, batch_size: int, origin: str, chunk: int = 1 << 20
) -> Iterator[array[int]]:
    """Where the documents of a plain `.bson` file start, from byte `start` on, in batches: each
    batch is `batch_size` (the last one: up to) start offsets followed by the end of its last
    document. Only the 4-byte length prefixes are looked at (read in `chunk`-sized blocks, no
    document is copied); raises InvalidData on a bad length or a truncated file, as `iter_frames`."""
    unpack = _INT32.unpack_from
    with path.open("rb", buffering=0) as stream:
        size = os.fstat(stream.fileno()).st_size
        position = start
        block = b""
        block_start = start
        batch: array[int] = array("q")
        while position < size:
            at = position - block_start
            if at + 4 > len(block):
                stream.seek(position)
                block = stream.read(chunk)
                block_start, at = position, 0
                if len(block) < 4:
                    raise InvalidData(f"{origin} is truncated after its last complete document.")
            length = unpack(block, at)[0]
            if length < 5 or length > MAX_FRAME:
                _frame_length(block[at : at + 4], origin)
            if position + length > size:
                raise InvalidData(
                    f"{origin} is truncated: expected {length} bytes of a document, got "
                    f"{size - position}. Re-create the dump (mongodump) or copy it again."
                )
            batch.append(position)
            position += length
            if len(batch) >= batch_size:
                batch.append(position)
                yield batch
                batch = array("q")
        if batch:
            batch.append(position)
            yield batch


class FrameRange(Sequence[bytes]):
    """Consecutive documents of a plain `.bson` file, by position: document `i` is the bytes
    `offsets[i]:offsets[i + 1]` of the file. Small to send to a converter process, which reads
    the documents itself (`read_all`); the parent reads one back only if it must quarantine it."""

    __slots__ = ("offsets", "path")

    def __init__(self, path: str, offsets: array[int]) -> None:
        self.path = path
        self.offsets = offsets

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrameRange, (self.path, self.offsets))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        start, end = self.offsets[index], self.offsets[index + 1]
        with open(self.path, "rb", buffering=0) as stream:
            return os.pread(stream.fileno(), end - start, start)

    def read_all(self) -> list[bytes]:
        """Every document of the range (one read of the whole range)."""
        offsets = self.offsets
        base = offsets[0]
        with open(self.path, "rb", buffering=0) as stream:
            data = os.pread(stream.fileno(), offsets[-1] - base, base)
        if len(data) != offsets[-1] - base:
            raise InvalidData(f"{self.path} changed while it was being migrated (it is shorter).")
        return [data[a - base : b - base] for a, b in pairwise(offsets)]


def skip_frames(stream: BinaryIO, count: int, origin: str) -> None:
    """Advance `stream` over `count` documents without decoding them."""
    for done in range(count):
        prefix = stream.read(4)
        if len(prefix) != 4:
            raise InvalidData(
                f"{origin} has only {done} documents, fewer than the {count} a checkpoint says were "
                "already migrated: the dump changed since that run. Re-run with --restart."
            )
        stream.seek(_frame_length(prefix, origin) - 4, io.SEEK_CUR)


def _next_frame_or_terminator(stream: BinaryIO, origin: str) -> bytes | None:
    """The next document of an archive, or None at a terminator."""
    prefix = _read_exact(stream, 4, "a document or terminator", origin)
    if _INT32.unpack(prefix)[0] == _TERMINATOR:
        return None
    length = _frame_length(prefix, origin)
    return prefix + _read_exact(stream, length - 4, "a document", origin)


@dataclass
class ArchiveContents:
    """What an archive holds: namespaces found, and the files written for the wanted database."""

    databases: set[str]
    files: dict[str, Path]
    documents: dict[str, int]


def demux_archive(
    archive: Path, database: str, collections: set[str] | None, out_dir: Path
) -> ArchiveContents:
    """Split the collections of `database` in a mongodump archive into `<out_dir>/<name>.bson`.

    `collections` limits which collections are written (None: all of them). Returns the databases
    seen and the files written. Raises InvalidData when the file is not a (complete) archive."""
    origin = f"archive {archive}"
    databases: set[str] = set()
    files: dict[str, Path] = {}
    counts: dict[str, int] = {}
    handles: dict[str, BinaryIO] = {}
    with open_stream(archive) as stream:
        magic = stream.read(4)
        if len(magic) != 4 or _UINT32.unpack(magic)[0] != ARCHIVE_MAGIC:
            raise InvalidData(
                f"{archive} is not a mongodump archive (no archive magic number). For a dump "
                "directory use --from-dump PATH; for `mongodump --archive=FILE` use --archive FILE."
            )
        if _next_frame_or_terminator(stream, origin) is None:
            raise InvalidData(f"{origin} has no header document.")
        while (meta := _next_frame_or_terminator(stream, origin)) is not None:
            databases.add(str(bson.decode(meta).get("db", "")))
        try:
            while True:
                prefix = stream.read(4)
                if not prefix:
                    break
                if len(prefix) != 4:
                    raise InvalidData(f"{origin} is truncated between two segments.")
                length = _frame_length(prefix, origin)
                header = bson.decode(prefix + _read_exact(stream, length - 4, "a header", origin))
                db, name = str(header.get("db", "")), str(header.get("collection", ""))
                databases.add(db)
                wanted = db == database and (collections is None or name in collections)
                if wanted and name not in handles:
                    files[name] = out_dir / f"{name}.bson"
                    handles[name] = files[name].open("wb")
                    counts[name] = 0
                while (doc := _next_frame_or_terminator(stream, origin)) is not None:
                    if wanted:
                        handles[name].write(doc)
                        counts[name] += 1
        finally:
            for handle in handles.values():
                handle.close()
    databases.discard("")
    return ArchiveContents(databases=databases, files=files, documents=counts)
