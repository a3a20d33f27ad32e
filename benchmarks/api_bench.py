"""API benchmark: one API worker on the embedded PostgreSQL, 16 concurrent clients.

    .venv/bin/python benchmarks/api_bench.py [--seconds 10] [--concurrency 16]

What it does:
1. makes a fresh DATA_DIR in /tmp and starts `tbd-agents serve` there (its own process: one
   uvicorn worker; the embedded PostgreSQL is started, migrated and tuned by the server itself);
2. creates an admin key with `tbd-agents keys create --admin` (another process);
3. seeds 1,000 agents over HTTP, then runs each scenario for --seconds with --concurrency
   clients from THIS process (the load generator: asyncio, raw HTTP/1.1 keep-alive connections,
   no HTTP library, so the client costs little CPU next to the server on a 2-core machine);
4. prints a table (req/s, p50, p99, the API process's CPU time per request, errors) and the
   server's RSS after the run. CPU per request does not depend on what else the machine runs;
   throughput and latency do.

Scenarios: GET by id, create, partial update (PATCH), a page of 50 (the first page of the agent
list, as the dashboard asks for it; and the first page of the 1,000 seeded agents selected by
their tag, which the create scenario has made older than ~20,000 others), and a list of the 1,000
seeded agents, both as one request without a limit (the whole list, as clients of the existing
API ask for it) and as a walk through pages of 200 (one "op" = 5 requests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
#: The `tbd-agents` console script: this tree's .venv, else the one next to this Python (a git
#: worktree shares the main checkout's venv; export PYTHONPATH=<worktree>/src to serve its code).
CLI = str(
    ROOT / ".venv" / "bin" / "tbd-agents"
    if (ROOT / ".venv").exists()
    else Path(sys.executable).parent / "tbd-agents"
)


class Conn:
    """One keep-alive HTTP/1.1 connection with just enough parsing for JSON answers."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {key}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.next_cursor: str | None = None  # the X-Next-Cursor header of the last answer
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n".encode() + self.auth
        if body is not None:
            head += (
                b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n"
            )
        self.writer.write(head + b"\r\n" + (body or b""))
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        self.next_cursor = None
        length = 0
        chunked = False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value.strip())
            elif lname == b"x-next-cursor":
                self.next_cursor = value.strip().decode()
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            data = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                data += chunk[:-2]
            return status, data
        return status, await self.reader.readexactly(length) if length else b""

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Result:
    name: str
    ops: int = 0
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float = 0.0  # CPU seconds the API process used during the run

    def row(self) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1000 if lat else 0.0
        p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0.0
        cpu_ms = self.server_cpu / max(self.requests, 1) * 1000
        return (
            f"| {self.name} | {self.ops / self.seconds:,.0f} | {self.requests / self.seconds:,.0f} | "
            f"{p50:.1f} | {p99:.1f} | {cpu_ms:.2f} | {self.errors} |"
        )


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def run(
    name: str,
    conns: list[Conn],
    seconds: float,
    op: Callable[[Conn], Awaitable[tuple[int, int]]],
    server: psutil.Process,
) -> Result:
    result = Result(name)
    cpu_before = cpu_seconds(server)
    deadline = time.perf_counter() + seconds

    async def worker(conn: Conn) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                requests, errors = await op(conn)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                await conn.close()
                await conn.open()
                continue
            result.latencies.append(time.perf_counter() - start)
            result.ops += 1
            result.requests += requests
            result.errors += errors

    began = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    result.seconds = time.perf_counter() - began
    result.server_cpu = cpu_seconds(server) - cpu_before
    return result


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
        "DATA_DIR": str(data_dir),
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "EMBEDDING_PROVIDER": "hashing",
        "POSTGRES_POOL_SIZE": "20",
        "POSTGRES_MAX_OVERFLOW": "5",
    }
    if os.environ.get("PYTHONPATH"):  # e.g. a worktree's src on a shared venv
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    # Observability settings pass through (OTEL_EXPORTER_OTLP_ENDPOINT, METRICS_ENABLED,
    # TRACE_READS_PER_SECOND, …), so
    # the same benchmark measures the server with tracing and metrics on or off.
    env.update(
        {k: v for k, v in os.environ.items() if k.startswith(("OTEL_", "METRICS_", "TRACE_"))}
    )
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115
    return subprocess.Popen([CLI, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_ready(port: int, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            line = await reader.readline()
            writer.close()
            if b" 200 " in line:
                return
        except OSError:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError("the API server did not come up; see server.log")


async def bench(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="tbd-api-bench-"))
    port = args.port
    server = start_server(data_dir, port)
    try:
        await wait_ready(port)
        env = {**os.environ, "DATA_DIR": str(data_dir)}
        created = await asyncio.to_thread(
            subprocess.run,
            [CLI, "keys", "create", "--admin"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        key = created.stdout.strip()
        conns = [Conn("127.0.0.1", port, key) for _ in range(args.concurrency)]
        for c in conns:
            await c.open()
        ids: list[str] = []

        async def seed(c: Conn) -> tuple[int, int]:
            status, body = await c.request(
                "POST",
                "/api/agents",
                json.dumps({"name": f"seed-{len(ids)}", "tags": ["bench"]}).encode(),
            )
            if status == 201:
                ids.append(json.loads(body)["id"])
            return 1, int(status != 201)

        while len(ids) < 1000:
            await asyncio.gather(*(seed(c) for c in conns[: min(16, 1000 - len(ids))]))
        counter = iter(range(10**9))

        async def get_one(c: Conn) -> tuple[int, int]:
            status, _ = await c.request("GET", f"/api/agents/{random.choice(ids)}")
            return 1, int(status != 200)

        async def create(c: Conn) -> tuple[int, int]:
            body = json.dumps(
                {"name": f"bench-{next(counter)}", "description": "load", "tags": ["new"]}
            ).encode()
            status, _ = await c.request("POST", "/api/agents", body)
            return 1, int(status != 201)

        async def patch(c: Conn) -> tuple[int, int]:
            body = json.dumps({"description": f"d{next(counter)}"}).encode()
            status, _ = await c.request("PATCH", f"/api/agents/{random.choice(ids)}", body)
            return 1, int(status != 200)

        async def page(c: Conn) -> tuple[int, int]:
            status, _ = await c.request("GET", "/api/agents?limit=50")
            return 1, int(status != 200)

        async def tagged_page(c: Conn) -> tuple[int, int]:
            status, _ = await c.request("GET", "/api/agents?limit=50&tags=bench")
            return 1, int(status != 200)

        async def walk(c: Conn) -> tuple[int, int]:
            cursor, requests, errors, seen = None, 0, 0, 0
            while True:
                path = "/api/agents?limit=200&tags=bench" + (f"&cursor={cursor}" if cursor else "")
                status, body = await c.request("GET", path)
                requests += 1
                if status != 200:
                    return requests, errors + 1
                seen += len(json.loads(body))
                cursor = c.next_cursor
                if cursor is None:
                    return requests, errors + int(seen != 1000)

        async def list_all(c: Conn) -> tuple[int, int]:
            status, body = await c.request("GET", "/api/agents?tags=bench")
            # count the records without parsing (the load generator shares the 2 cores)
            return 1, int(status != 200 or body.count(b'"system_prompt"') != 1000)

        proc = psutil.Process(server.pid)
        print(f"API process RSS after seeding: {proc.memory_info().rss / 2**20:.0f} MB", flush=True)
        results = []
        for name, op in [
            ("GET by id", get_one),
            ("create", create),
            ("partial update (PATCH)", patch),
            ("page of 50 (first page of the agent list)", page),
            ("page of 50 with tags=bench (1,000 older agents among ~20,000 newer)", tagged_page),
            ("list 1,000 agents (the whole list, no limit)", list_all),
            ("list 1,000 agents (5 pages of 200)", walk),
        ]:
            if args.only and not any(word in name for word in args.only.split(",")):
                continue
            await run(name, conns, 1.0, op, proc)  # warm-up
            results.append(await run(name, conns, args.seconds, op, proc))
            print(results[-1].row(), flush=True)
        rss = proc.memory_info().rss / 2**20
        print("\n| scenario | ops/s | HTTP req/s | p50 ms | p99 ms | API CPU ms/req | errors |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            print(r.row())
        print(f"\nAPI process RSS after the run: {rss:.0f} MB; load average {os.getloadavg()}")
        for c in conns:
            await c.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument(
        "--only", default="", help="comma-separated words: run the scenarios whose name has one"
    )
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
