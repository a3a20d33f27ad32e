"""Where documents come from: a live MongoDB, a mongodump directory, or a mongodump archive.

Every source hands out a collection's documents in batches, in a stable order, and can start
again after the first `position` documents (a checkpoint): a live database is read in `_id` order
with a server cursor (`find().sort("_id")`) and resumes with an `_id` filter; a dump file is read
in file order and resumes by skipping that many length-prefixed documents, after checking that
the last skipped one is the document the checkpoint names.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, Protocol, TypeVar

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import InvalidBSON

from tbd_agents.config import redact_url
from tbd_agents.errors import DatabaseUnreachable, InvalidData
from tbd_agents.tools.migration.bsonio import (
    FrameRange,
    SourceDocument,
    Undecodable,
    demux_archive,
    frame_offsets,
    iter_frames,
    open_stream,
    skip_frames,
)
from tbd_agents.tools.migration.convert import extended_json
from tbd_agents.tools.migration.worker import in_worker

#: How dump files are decoded: BSON datetimes come out naive and hold UTC (the codec never applies
#: the machine's time zone); the conversion marks them UTC. Decoding naive is twice as fast as
#: asking the codec for aware values.
CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=False)
#: Fallback for a document with a date outside Python's range (kept as raw milliseconds).
_WIDE_DATES: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=False, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


T = TypeVar("T")


@dataclass(frozen=True)
class Resume:
    """Where a collection resumes: after `position` documents, the last one having `last_id`."""

    position: int
    last_id: Any


class Source(Protocol):
    """A readable MongoDB database (live or dumped)."""

    #: Printed to the user (no password).
    label: str
    #: Stable key of this source in the checkpoint table.
    identity: str

    async def collections(self) -> set[str]:
        """Names of the collections the source holds."""
        ...

    async def count(self, collection: str) -> int | None:
        """Number of documents in `collection` (None when not cheaply known)."""
        ...

    def batches(
        self, collection: str, batch_size: int, resume: Resume | None = None
    ) -> AsyncGenerator[list[SourceDocument], None]:
        """The documents of `collection` in batches, in the source's stable order."""
        ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------------------- files


def decode_frame(raw: bytes) -> SourceDocument:
    """One raw dump document decoded (`Undecodable` when it is not valid BSON)."""
    try:
        return bson.decode(raw, codec_options=CODEC_OPTIONS)
    except (InvalidBSON, UnicodeDecodeError, ValueError, OverflowError) as exc:
        try:
            return bson.decode(raw, codec_options=_WIDE_DATES)
        except (InvalidBSON, UnicodeDecodeError, ValueError, OverflowError):
            return Undecodable(raw=raw, error=f"{type(exc).__name__}: {exc}")


def _frame_batches(path: Path, batch_size: int, resume: Resume | None) -> Iterator[list[bytes]]:
    """The raw documents of a dump file in batches, starting after `resume`."""
    origin = str(path)
    with open_stream(path) as stream:
        frames = iter_frames(stream, origin)
        if resume is not None and resume.position > 0:
            skip_frames(stream, resume.position - 1, origin)
            _check_resumed(next(frames, None), resume, origin)
        batch: list[bytes] = []
        for raw in frames:
            batch.append(raw)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def _range_batches(path: Path, batch_size: int, resume: Resume | None) -> Iterator[FrameRange]:
    """The documents of a plain (not gzipped) dump file as `FrameRange`s of `batch_size`,
    starting after `resume`: only the length prefixes are read here."""
    origin = str(path)
    start = 0
    if resume is not None and resume.position > 0:
        with path.open("rb") as stream:
            skip_frames(stream, resume.position - 1, origin)
            at = stream.tell()
            last = next(iter_frames(stream, origin), None)
            _check_resumed(last, resume, origin)
            start = at + len(last) if last is not None else at
    for offsets in frame_offsets(path, start, batch_size, origin):
        yield FrameRange(str(path), offsets)


def _file_batches(
    path: Path, batch_size: int, resume: Resume | None
) -> Iterator[list[SourceDocument]]:
    for frames in _frame_batches(path, batch_size, resume):
        yield [decode_frame(raw) for raw in frames]


def _check_resumed(last: bytes | None, resume: Resume, origin: str) -> None:
    """The last document before the resume point must be the one the checkpoint recorded."""
    decoded = None if last is None else decode_frame(last)
    if isinstance(decoded, Undecodable):
        same = resume.last_id is None
    else:
        same = decoded is not None and decoded.get("_id") == resume.last_id
    if not same:
        raise InvalidData(
            f"{origin}: document {resume.position} is not the one the checkpoint recorded "
            f"({extended_json(resume.last_id)}): the dump changed since the interrupted run. "
            "Re-run with --restart to migrate this collection from the start."
        )


def _gzipped(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(2) == b"\x1f\x8b"


def _count_frames(path: Path, chunk: int = 1 << 20) -> int | None:
    """How many documents a plain dump file holds (None for a gzipped one): only the length
    prefixes are read, in `chunk`-sized blocks (a bad prefix ends the count; reading reports it)."""
    if path.suffix == ".gz":
        return None
    unpack = struct.Struct("<i").unpack_from
    with path.open("rb", buffering=0) as stream:
        size = os.fstat(stream.fileno()).st_size
        position = block_start = count = 0
        block = b""
        while position + 4 <= size:
            at = position - block_start
            if at + 4 > len(block):
                stream.seek(position)
                block = stream.read(chunk)
                block_start, at = position, 0
            length = unpack(block, at)[0]
            if length < 5:
                break
            count += 1
            position += length
        return count


async def _threaded(iterator: Iterator[T]) -> AsyncGenerator[T, None]:
    """Run a blocking batch iterator in a worker thread (file reads and BSON decoding then
    overlap with the database work of the event loop)."""
    done = object()
    while True:
        batch = await in_worker(next, iterator, done)
        if batch is done:
            return
        yield batch  # type: ignore[misc]


class DumpSource:
    """A `mongodump --out` directory: `<collection>.bson` or `<collection>.bson.gz` per collection."""

    def __init__(self, path: Path, database: str, *, kind: str = "dump", label: str | None = None):
        self.directory = locate_dump_directory(path, database)
        self.label = label or f"mongodump directory {self.directory}"
        self.identity = f"{kind}:{self.directory.resolve()}"

    def _file(self, collection: str) -> Path | None:
        for suffix in (".bson", ".bson.gz"):
            candidate = self.directory / f"{collection}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    async def collections(self) -> set[str]:
        names = {p.name.removesuffix(".gz").removesuffix(".bson") for p in self.directory.iterdir()}
        return {n for n in names if self._file(n) is not None}

    async def count(self, collection: str) -> int | None:
        path = self._file(collection)
        return None if path is None else await in_worker(_count_frames, path)

    async def batches(
        self, collection: str, batch_size: int, resume: Resume | None = None
    ) -> AsyncGenerator[list[SourceDocument], None]:
        path = self._file(collection)
        if path is None:
            return
        async for batch in _threaded(_file_batches(path, batch_size, resume)):
            yield batch

    async def frame_batches(
        self, collection: str, batch_size: int, resume: Resume | None = None
    ) -> AsyncGenerator[Sequence[bytes], None]:
        """Like `batches`, but each document as its raw BSON bytes (decoded by the consumer): a
        `FrameRange` (where the documents are in the file) for a plain `.bson` file, the
        documents themselves for a gzipped one."""
        path = self._file(collection)
        if path is None:
            return
        plain = not path.name.endswith(".gz") and not _gzipped(path)
        batches: Iterator[Sequence[bytes]] = (
            _range_batches(path, batch_size, resume)
            if plain
            else _frame_batches(path, batch_size, resume)
        )
        async for batch in _threaded(batches):
            yield batch

    async def close(self) -> None:
        return None


def locate_dump_directory(path: Path, database: str) -> Path:
    """The directory holding the `.bson` files of `database` under a mongodump output `path`."""
    if not path.is_dir():
        raise InvalidData(
            f"--from-dump {path}: no such directory. Give the directory mongodump wrote "
            "(mongodump --out=PATH), or the database directory inside it."
        )
    if (path / database).is_dir():
        return path / database
    if any(path.glob("*.bson")) or any(path.glob("*.bson.gz")):
        return path
    found = sorted(d.name for d in path.iterdir() if d.is_dir() and (any(d.glob("*.bson*"))))
    hint = (
        f"it holds dumps of {', '.join(found)}: set MONGO_DB_NAME to the one to migrate"
        if found
        else "expected <collection>.bson or <collection>.bson.gz files (mongodump --out=PATH)"
    )
    raise InvalidData(f"{path} holds no dump of database {database!r}; {hint}.")


class ArchiveSource(DumpSource):
    """A `mongodump --archive` file (gzip or not), split once into a temporary directory."""

    def __init__(self, archive: Path, database: str, collections: Sequence[str] | None = None):
        if not archive.is_file():
            raise InvalidData(f"--archive {archive}: no such file.")
        self._tmp = Path(tempfile.mkdtemp(prefix="tbd-archive-"))
        try:
            contents = demux_archive(
                archive, database, set(collections) if collections else None, self._tmp
            )
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        if not contents.files and contents.databases and database not in contents.databases:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise InvalidData(
                f"{archive} holds no collection of database {database!r}; it holds "
                f"{', '.join(sorted(contents.databases))}: set MONGO_DB_NAME to the one to migrate."
            )
        super().__init__(self._tmp, database, label=f"mongodump archive {archive}")
        self.identity = f"archive:{archive.resolve()}"
        self._counts = contents.documents

    async def count(self, collection: str) -> int | None:
        return self._counts.get(collection)

    async def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------- live

#: BSON type order of MongoDB's sort (numbers < strings < objects < ... < ObjectId < bool < date).
#: (An `_id` of type Timestamp, which nobody uses, is not supported when resuming a live read.)
_TYPE_RANK = {
    "number": 1,
    "string": 2,
    "object": 3,
    "binData": 5,
    "objectId": 7,
    "bool": 8,
    "date": 9,
}


def _rank_of(value: Any) -> str:
    from datetime import datetime

    from bson import Binary, ObjectId

    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, bytes | Binary):
        return "binData"
    return "object"


def after_id_filter(last_id: Any) -> dict[str, Any]:
    """A find() filter for the documents sorting after `_id` `last_id` in MongoDB's `_id` order
    (comparison operators only match values of the same type, so later types are added)."""
    rank = _TYPE_RANK[_rank_of(last_id)]
    later = [alias for alias, r in _TYPE_RANK.items() if r > rank]
    if not later:
        return {"_id": {"$gt": last_id}}
    return {"$or": [{"_id": {"$gt": last_id}}, *({"_id": {"$type": alias}} for alias in later)]}


class MongoSource:
    """A live MongoDB database (pymongo's async API, or anything with the same surface)."""

    def __init__(self, database: Any, *, label: str, identity: str, client: Any = None) -> None:
        self._db = database
        self._client = client
        self.label = label
        self.identity = identity

    @classmethod
    def connect(cls, uri: str, database: str, *, timeout_ms: int = 10_000) -> MongoSource:
        """Connect to the server at `uri` (official pymongo driver) and read `database`."""
        from pymongo import AsyncMongoClient

        client: Any = AsyncMongoClient(
            uri,
            tz_aware=True,
            tzinfo=UTC,
            datetime_conversion=DatetimeConversion.DATETIME_AUTO,
            appname="tbd-agents-migrate",
            serverSelectionTimeoutMS=timeout_ms,
        )
        safe = redact_url(uri)
        return cls(
            client[database],
            label=f"MongoDB {safe} database {database}",
            identity=f"mongodb:{safe.split('?', 1)[0]}/{database}",
            client=client,
        )

    async def collections(self) -> set[str]:
        from pymongo.errors import PyMongoError

        try:
            return set(await self._db.list_collection_names())
        except PyMongoError as exc:
            detail = str(exc).split(", Timeout:", 1)[0][:200]
            raise DatabaseUnreachable(
                f"Cannot read {self.label} ({type(exc).__name__}: {detail}). Check MONGO_URI and "
                "MONGO_DB_NAME, that the server is running and reachable, or migrate from a dump "
                "with --from-dump PATH / --archive FILE."
            ) from exc

    async def count(self, collection: str) -> int | None:
        return int(await self._db[collection].estimated_document_count())

    async def batches(
        self, collection: str, batch_size: int, resume: Resume | None = None
    ) -> AsyncGenerator[list[SourceDocument], None]:
        query = after_id_filter(resume.last_id) if resume and resume.position else {}
        cursor = self._db[collection].find(query).sort("_id", 1)
        batch: list[SourceDocument] = []
        async for document in cursor:
            batch.append(document)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
