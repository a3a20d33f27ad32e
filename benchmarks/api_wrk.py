"""API throughput measured the way issue #14 states its targets: `wrk -t2 -c16 -d20s`, one API
worker on the embedded PostgreSQL, 1,000 agents, the median of 3 runs per scenario.

    .venv/bin/python benchmarks/api_wrk.py [--seconds 20] [--runs 3] [--only get,create]

Needs `wrk` (Debian package `wrk`). What it does:
1. a fresh DATA_DIR in /tmp, `tbd-agents serve` there (one uvicorn worker; the server starts,
   migrates and tunes its embedded PostgreSQL), an admin key from `tbd-agents keys create --admin`;
2. seeds exactly 1,000 agents over HTTP;
3. per scenario, `wrk` with a small Lua script, 3 times; prints req/s (median and all runs), the
   API process's CPU per request, and the load average before each run (the machine is shared:
   write the load down with every figure).

Scenarios (the order matters: "list all" runs while the table holds exactly the 1,000 agents;
create runs last, as it grows the table):
* GET by id — `GET /api/agents/{id}`, ids drawn at random from the 1,000;
* list all 1,000 agents — `GET /api/agents` (no limit: the whole list as a JSON array);
* partial update — `PUT /api/agents/{id}` `{"description": ...}`;
* create — `POST /api/agents` with a unique name per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_bench import CLI, Conn, cpu_seconds, start_server, wait_ready

LUA_COMMON = """
wrk.headers["Authorization"] = "Bearer {key}"
wrk.headers["Content-Type"] = "application/json"
local ids = {{{ids}}}
local n = 0
math.randomseed(os.time())
"""

SCENARIOS: dict[str, str] = {
    "GET by id": """
request = function()
  return wrk.format("GET", "/api/agents/" .. ids[math.random(#ids)])
end
""",
    "list all 1,000 agents": """
request = function()
  return wrk.format("GET", "/api/agents")
end
""",
    "partial update (PUT)": """
request = function()
  n = n + 1
  return wrk.format("PUT", "/api/agents/" .. ids[math.random(#ids)], nil,
    '{"description": "changed ' .. n .. '"}')
end
""",
    "create": """
local prefix = tostring(math.random(1, 1e9))
request = function()
  n = n + 1
  return wrk.format("POST", "/api/agents", nil,
    '{"name": "wrk-' .. prefix .. '-' .. n .. '", "description": "load", "tags": ["new"]}')
end
""",
}

TARGETS = {
    "GET by id": 1600,
    "list all 1,000 agents": 200,
    "partial update (PUT)": 800,
    "create": 1350,
}


def wrk(url: str, script: Path, seconds: float) -> tuple[float, int, str]:
    """req/s, non-2xx responses, wrk's latency line."""
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    return rate, int(bad.group(1)) if bad else 0, latency.group(0) if latency else ""


async def seed(port: int, key: str) -> list[str]:
    conns = [Conn("127.0.0.1", port, key) for _ in range(8)]
    for c in conns:
        await c.open()
    ids: list[str] = []

    async def one(c: Conn, i: int) -> None:
        body = json.dumps({"name": f"seed-{i}", "tags": ["bench"], "description": "seeded"})
        status, answer = await c.request("POST", "/api/agents", body.encode())
        if status != 201:
            raise RuntimeError(f"seeding failed: {status} {answer[:200]!r}")
        ids.append(json.loads(answer)["id"])

    for start in range(0, 1000, len(conns)):
        await asyncio.gather(*(one(c, start + i) for i, c in enumerate(conns)))
    for c in conns:
        await c.close()
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=8798)
    parser.add_argument("--only", default="", help="comma-separated words of scenario names")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    data_dir = Path(tempfile.mkdtemp(prefix="tbd-api-wrk-"))
    server = start_server(data_dir, args.port)
    try:
        asyncio.run(wait_ready(args.port))
        env = {**os.environ, "DATA_DIR": str(data_dir)}
        key = subprocess.run(
            [CLI, "keys", "create", "--admin"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        ids = asyncio.run(seed(args.port, key))
        proc = psutil.Process(server.pid)
        url = f"http://127.0.0.1:{args.port}"
        rows = []
        for name, body in SCENARIOS.items():
            if args.only and not any(w.lower() in name.lower() for w in args.only.split(",")):
                continue
            script = data_dir / f"{len(rows)}.lua"
            script.write_text(
                LUA_COMMON.format(key=key, ids=",".join(f'"{i}"' for i in ids)) + body
            )
            wrk(url, script, 2)  # warm-up
            rates, cpu_ms, loads, bad = [], [], [], 0
            for _ in range(args.runs):
                loads.append(os.getloadavg()[0])
                cpu0 = cpu_seconds(proc)
                rate, errors, latency = wrk(url, script, args.seconds)
                cpu_ms.append((cpu_seconds(proc) - cpu0) / max(rate * args.seconds, 1) * 1000)
                rates.append(rate)
                bad += errors
                print(f"  {name}: {rate:,.0f} req/s ({latency}) load {loads[-1]:.1f}", flush=True)
            median = statistics.median(rates)
            target = TARGETS[name]
            rows.append(
                f"| {name} | ≥ {target:,} | {median:,.0f} | "
                f"{' / '.join(f'{r:,.0f}' for r in rates)} | {statistics.median(cpu_ms):.2f} | "
                f"{' / '.join(f'{x:.1f}' for x in loads)} | {bad} | "
                f"{'yes' if median >= target and not bad else 'no'} |"
            )
        print(
            "\n| scenario | target req/s | median req/s | runs | API CPU ms/req | "
            "load average before each run | non-2xx | met? |"
        )
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        print(f"\nAPI process RSS: {proc.memory_info().rss / 2**20:.0f} MB")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
