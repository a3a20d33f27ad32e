"""MongoDB → PostgreSQL migration throughput and memory (run by hand).

    .venv/bin/python benchmarks/migration_bench.py [--small 200000] [--large 2000000]

Builds mongodump directories of chat_messages-like documents (1,000 chat_sessions as parents;
messages of 40 to 1,500 characters, half of them with a usage sub-document), starts the embedded
PostgreSQL 18 with the product's tuning in a temporary directory, and migrates each dump into a
fresh database at head with the migration library (what `tbd-agents migrate from-mongo` runs):

* batch sizes 500 / 5,000 / 20,000 on the small dump: first load (empty tables: straight COPY)
  and re-run over the same rows (staging table + upsert that rewrites nothing);
* the large dump (ten times the small one) at batch size 5,000: first load;
* verification (`Verifier`, chat_sessions + chat_messages, every document against its row) of
  the small dump after its first batch size, and of the large dump (`--no-verify` to skip).

Each migration runs in its own process, so its peak RSS (ru_maxrss) is its own. rows/s counts
chat_messages only (the collection's own wall time, reading and converting included); "end to
end" is the whole process, start-up and the parents included. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import bson
import psutil
from bson import ObjectId

ROOT = Path(__file__).resolve().parents[1]
# MIGRATION_BENCH_SRC: measure another version of the package with this same script (A/B runs).
sys.path.insert(0, os.environ.get("MIGRATION_BENCH_SRC") or str(ROOT / "src"))

DB = "copilot_agent_hub"
SESSIONS = 1_000
WORDS = [
    "the",
    "a",
    "agent",
    "tool",
    "result",
    "message",
    "model",
    "token",
    "stream",
    "memory",
    "search",
    "plan",
    "step",
    "run",
    "data",
]


def write_dump(root: Path, messages: int, seed: int = 7) -> Path:
    """A dump directory with SESSIONS sessions and `messages` messages (streamed to disk)."""
    rng = random.Random(seed)
    directory = root / DB
    directory.mkdir(parents=True)
    start = datetime(2024, 1, 1)
    sessions = [ObjectId() for _ in range(SESSIONS)]
    with (directory / "chat_sessions.bson").open("wb") as out:
        for i, sid in enumerate(sessions):
            out.write(
                bson.encode(
                    {
                        "_id": sid,
                        "agent_id": ObjectId(),
                        "title": f"chat {i}",
                        "github_user": "octo",
                        "created_at": start,
                    }
                )
            )
    with (directory / "chat_messages.bson").open("wb") as out:
        for i in range(messages):
            role = "user" if i % 2 == 0 else "assistant"
            length = rng.randint(8, 250)
            doc = {
                "_id": ObjectId(),
                "session_id": sessions[rng.randrange(SESSIONS)],
                "role": role,
                "content": " ".join(rng.choice(WORDS) for _ in range(length)),
                "created_at": start + timedelta(seconds=i),
                "updated_at": start + timedelta(seconds=i),
            }
            if role == "assistant":
                doc["usage"] = {
                    "prompt_tokens": rng.randint(10, 4000),
                    "completion_tokens": rng.randint(1, 900),
                }
            out.write(bson.encode(doc))
    return root


# ----------------------------------------------------------------------------------- child


async def _child(dump: Path, url: str, batch_size: int, workers: int) -> dict[str, float]:
    import asyncpg

    from tbd_agents.tools.migration.procpool import peak_rss
    from tbd_agents.tools.migration.report import ReportLog
    from tbd_agents.tools.migration.runner import Migration, Options
    from tbd_agents.tools.migration.sources import DumpSource

    sampler = PssSampler()
    sampler.start()
    conn = await asyncpg.connect(url)
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    server_cpu = _cpu_of(backend)
    log = ReportLog(Path(tempfile.mkdtemp()) / "q.jsonl")
    started = time.perf_counter()
    cpu = time.process_time()
    try:
        options = Options(
            collections=["chat_sessions", "chat_messages"], batch_size=batch_size, workers=workers
        )
        migration = Migration(DumpSource(dump, DB), conn, options, log)
        result = await migration.run()
        children_rss = migration.children_peak_rss()
        server_cpu = _cpu_of(backend) - server_cpu
        cpu = time.process_time() - cpu - sampler.cpu
        children_cpu = _children_cpu()
    finally:
        log.close()
        await conn.close()
    messages = next(c for c in result.collections if c.name == "chat_messages")
    return {
        "rows": messages.read,
        "seconds": messages.seconds,
        "rows_per_s": messages.read / messages.seconds,
        "inserted": messages.inserted,
        "unchanged": messages.unchanged,
        "mode": messages.mode,
        "migration_seconds": time.perf_counter() - started,
        "cpu_seconds": cpu + children_cpu,
        "workers": workers,
        # The migration process plus its converter processes (peak of each, summed).
        "peak_rss_mb": (peak_rss() + children_rss) / 2**20,
        "parent_rss_mb": peak_rss() / 2**20,
        # Peak of the processes' summed PSS (shared pages split between their sharers), sampled.
        "peak_pss_mb": sampler.stop() / 2**20,
        "sampler_cpu_seconds": sampler.cpu,
        "pss_series": sampler.series,
        "children_rss_mb": children_rss / 2**20,
        "server_cpu_seconds": server_cpu,
    }


async def _verify_child(dump: Path, url: str) -> dict[str, float]:
    """Verify the migrated dump (chat_sessions and chat_messages) with the verification library
    (what `tbd-agents migrate verify` runs); its wall time, CPU and peak RSS."""
    import asyncpg

    from tbd_agents.tools.migration.procpool import peak_rss
    from tbd_agents.tools.migration.sources import DumpSource
    from tbd_agents.tools.migration.verify import Verifier

    conn = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
    reader = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
    backends = [await c.fetchval("SELECT pg_backend_pid()") for c in (conn, reader)]
    server_cpu = sum(_cpu_of(b) for b in backends)
    started = time.perf_counter()
    cpu = time.process_time()
    try:
        result = await Verifier(DumpSource(dump, DB), conn, reader).run(
            ["chat_sessions", "chat_messages"]
        )
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        server_cpu = sum(_cpu_of(b) for b in backends) - server_cpu
    finally:
        await conn.close()
        await reader.close()
    messages = next(c for c in result.collections if c.name == "chat_messages")
    return {
        "ok": result.ok,
        "rows": messages.source_documents,
        "seconds": seconds,
        "rows_per_s": messages.source_documents / seconds,
        "cpu_seconds": cpu,
        "server_cpu_seconds": server_cpu,
        "peak_rss_mb": peak_rss() / 2**20,
    }


class PssSampler(threading.Thread):
    """Samples the summed proportional set size of this process and its children (2 Hz).

    Reading smaps_rollup walks every page of a process: at 10 Hz this thread used ~15 % of a core
    (~8 µs per migrated row on 2 vCPUs), taken from the migration and counted as its CPU. It now
    samples twice a second, and its own CPU time (`cpu`) is left out of the migration's."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.cpu = 0.0
        self._done = threading.Event()

    @staticmethod
    def _pss(pid: int) -> int:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
        return 0

    def run(self) -> None:
        me = psutil.Process()
        started = time.monotonic()
        #: (seconds, summed PSS MB) once per second, to see whether memory levels off.
        self.series: list[tuple[int, int]] = []
        while not self._done.wait(0.5):
            started_cpu = time.thread_time()
            pids = [me.pid] + [c.pid for c in me.children(recursive=True)]
            pss = sum(self._pss(p) for p in pids)
            self.peak = max(self.peak, pss)
            second = int(time.monotonic() - started)
            if not self.series or self.series[-1][0] != second:
                self.series.append((second, pss // 2**20))
            self.cpu += time.thread_time() - started_cpu

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def _children_cpu() -> float:
    """CPU seconds of the converter processes (reaped children), user + system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (the PostgreSQL backend serving the migration)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------- parent


def _run_child(dump: Path, url: str, batch_size: int, workers: int) -> dict[str, float]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(dump), url, str(batch_size), str(workers)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"the migration process failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def _run_verify(dump: Path, url: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--verify-child", str(dump), url],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"the verification process failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        raise SystemExit(f"verification failed: {result}")
    return result


def _fresh_database(admin: str, name: str) -> str:
    import asyncpg
    from sqlalchemy.engine import make_url

    from tbd_agents.storage.postgres.migrate import upgrade_to_head

    async def create() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    url = make_url(admin).set(database=name)
    asyncio.run(upgrade_to_head(url))
    return url.render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200_000)
    parser.add_argument("--large", type=int, default=2_000_000)
    parser.add_argument("--batches", default="500,5000,20000")
    parser.add_argument(
        "--workers", type=int, default=1, help="converter processes (0: a worker thread)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="do not time the verification of each dump"
    )
    args = parser.parse_args()

    from tbd_agents.config import load_settings
    from tbd_agents.storage.postgres.embedded import EmbeddedPostgres

    work = Path(tempfile.mkdtemp(prefix="tbd-migration-bench-"))
    os.chmod(work, 0o755)  # the embedded server runs as its own user when we are root
    try:
        print(f"load average at the start: {os.getloadavg()}", flush=True)
        t = time.perf_counter()
        small = write_dump(work / "small", args.small)
        large = write_dump(work / "large", args.large) if args.large else None
        print(
            f"dumps written in {time.perf_counter() - t:.0f} s: "
            f"{(small / DB / 'chat_messages.bson').stat().st_size / 1e6:.0f} MB"
            + (
                f", {(large / DB / 'chat_messages.bson').stat().st_size / 1e6:.0f} MB"
                if large
                else ""
            )
        )
        settings = load_settings(db_backend="postgres", postgres_uri=None, data_dir=work / "data")
        server = EmbeddedPostgres(settings)
        server.start()
        admin = (
            server.url("postgres")
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        rows = []
        verified: list[tuple[str, dict[str, float]]] = []
        try:
            for batch in (int(b) for b in args.batches.split(",")):
                url = _fresh_database(admin, f"bench_{batch}")
                first = _run_child(small, url, batch, args.workers)
                again = _run_child(small, url, batch, args.workers)
                rows.append((f"{args.small:,}", batch, first, again))
                print(rows[-1], flush=True)
                if not args.no_verify and not verified:
                    verified.append((f"{args.small:,}", _run_verify(small, url)))
                    print(verified[-1], flush=True)
            if large is not None:
                url = _fresh_database(admin, "bench_large")
                rows.append(
                    (f"{args.large:,}", 5000, _run_child(large, url, 5000, args.workers), None)
                )
                print(rows[-1], flush=True)
                if not args.no_verify:
                    verified.append((f"{args.large:,}", _run_verify(large, url)))
                    print(verified[-1], flush=True)
        finally:
            server.stop()
        print(f"\nload average at the end: {os.getloadavg()}\n")
        print(
            "| messages | batch | first load rows/s | re-run rows/s | first load end to end | peak RSS, summed (first / re-run) | peak PSS, summed (first / re-run) | CPU µs/row: migration process + PostgreSQL backend (first / re-run) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for size, batch, first, again in rows:
            rerun = f"{again['rows_per_s']:,.0f}" if again else "-"
            rss = f"{first['peak_rss_mb']:.0f} MB" + (
                f" / {again['peak_rss_mb']:.0f} MB" if again else ""
            )
            pss = f"{first['peak_pss_mb']:.0f} MB" + (
                f" / {again['peak_pss_mb']:.0f} MB" if again else ""
            )
            cpu = " / ".join(
                f"{r['cpu_seconds'] / r['rows'] * 1e6:.0f} + {r['server_cpu_seconds'] / r['rows'] * 1e6:.0f}"
                for r in (first, again)
                if r
            )
            print(
                f"| {size} | {batch:,} | {first['rows_per_s']:,.0f} | {rerun} | {first['process_seconds']:.1f} s | {rss} | {pss} | {cpu} |"
            )
        if verified:
            print(
                "\n| messages verified | seconds (chat_sessions + chat_messages) | documents/s "
                "| peak RSS | CPU µs/document: verifier + PostgreSQL |"
            )
            print("|---|---|---|---|---|")
        for size, v in verified:
            print(
                f"| {size} | {v['seconds']:.1f} s | {v['rows_per_s']:,.0f} | "
                f"{v['peak_rss_mb']:.0f} MB | {v['cpu_seconds'] / v['rows'] * 1e6:.0f} + "
                f"{v['server_cpu_seconds'] / v['rows'] * 1e6:.0f} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--verify-child":
        print(json.dumps(asyncio.run(_verify_child(Path(sys.argv[2]), sys.argv[3]))))
    elif len(sys.argv) == 6 and sys.argv[1] == "--child":
        dump, url, size, workers = (
            Path(sys.argv[2]),
            sys.argv[3],
            int(sys.argv[4]),
            int(sys.argv[5]),
        )
        print(json.dumps(asyncio.run(_child(dump, url, size, workers))))
    else:
        main()
