"""Database faults under write load: nothing acknowledged is lost, nothing but 2xx/503 is answered.

    PYTHONPATH=src .venv/bin/python benchmarks/fault_db.py [--clients 8] [--outage 3]

Two scenarios, each with `--clients` clients writing over HTTP the whole time (each client in a
loop: create an agent, then update its description; a 503 is retried after 50 ms):

1. **Restarts of the database.** `tbd-agents serve` on a PostgreSQL it did not start
   (POSTGRES_URI: an embedded PostgreSQL 18 this script runs itself), restarted twice: once
   stopped cleanly (`pg_ctl stop -m fast`), once killed (SIGKILL of the postmaster: crash
   recovery on start), each time down for `--outage` seconds. "Back" is when `pg_ctl start -w`
   returned (the server accepts connections); the recovery time is from then to the first
   acknowledged write.
2. **The embedded server killed.** `tbd-agents serve` on its own embedded PostgreSQL (default
   supervision settings: a check every second), whose postmaster is killed with SIGKILL twice;
   nobody helps. The time back is from the kill to the
   first acknowledged write.

Afterwards every acknowledged create is read back (it must exist with its name), and every
agent's description must be the last acknowledged update or one of the unacknowledged (503)
attempts after it (a write cut off by the fault may or may not have been applied). Printed:
writes acknowledged, lost, answers other than 2xx/503, and the times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.faults.serving import Serving, base_dir  # noqa: E402
from tests.support import pg  # noqa: E402

from tbd_agents.storage.postgres import embedded_process as process  # noqa: E402


@dataclass
class Record:
    id: str
    name: str
    acked: str = ""  # the last acknowledged description
    maybe: list[str] = field(default_factory=list)  # unacknowledged attempts after it


@dataclass
class Load:
    """Clients writing until `stop`; every answer and every acknowledged write recorded."""

    base: str
    answers: Counter[str] = field(default_factory=Counter)
    records: list[Record] = field(default_factory=list)
    #: (started, ended, status) of every answer (status 0: no answer)
    timeline: list[tuple[float, float, int]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def _note(self, started: float, response: httpx.Response | None, error: str = "") -> bool:
        code = 0 if response is None else response.status_code
        self.timeline.append((started, time.monotonic(), code))
        if response is None:
            self.answers[f"transport error: {error}"] += 1
            return False
        self.answers[str(code)] += 1
        return 200 <= code < 300

    async def _send(
        self, client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any]
    ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            self._note(started, None, type(exc).__name__)
            await asyncio.sleep(0.05)
            return None
        if not self._note(started, response):
            await asyncio.sleep(0.05)
        return response

    async def client(self, n: int) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=60) as client:
            while not self.stop.is_set():
                name = f"load-{n}-{uuid.uuid4().hex[:8]}"
                created = await self._send(client, "POST", "/api/agents", {"name": name})
                if created is None or created.status_code != 201:
                    continue
                record = Record(created.json()["id"], name)
                self.records.append(record)
                for version in range(3):
                    if self.stop.is_set():
                        break
                    value = f"v{version}"
                    path = f"/api/agents/{record.id}"
                    answer = await self._send(client, "PATCH", path, {"description": value})
                    if answer is not None and answer.status_code == 200:
                        record.acked, record.maybe = value, []
                    else:
                        record.maybe.append(value)

    def back_after(self, fault: float) -> float | None:
        """When writes were acknowledged again after the fault at `fault`: the end of the first
        2xx answer to a request sent after the first 503 that followed the fault. (Requests a
        dying server still completed right after the fault do not count.)"""
        refused = [end for _, end, code in self.timeline if code == 503 and end >= fault]
        if not refused:
            return None
        first_refusal = min(refused)
        acked = [
            end
            for start, end, code in self.timeline
            if 200 <= code < 300 and start >= first_refusal
        ]
        return min(acked) if acked else None


async def _verify(load: Load) -> int:
    """Acknowledged writes that cannot be read back as acknowledged."""
    lost = 0
    async with httpx.AsyncClient(base_url=load.base, timeout=60) as client:
        for record in load.records:
            got = await client.get(f"/api/agents/{record.id}")
            if got.status_code != 200 or got.json()["name"] != record.name:
                lost += 1
                continue
            description = got.json().get("description") or ""
            if record.acked and description not in (record.acked, *record.maybe):
                lost += 1
    return lost


def _run_pg_ctl(data_dir: Path, *args: str) -> None:
    done = process.pg_ctl(data_dir, *args, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl {' '.join(args)}: {done.stdout} {done.stderr}")


async def _restarts(clients: int, outage: float) -> dict[str, Any]:
    base = base_dir("tbd-fault-bench-")
    data = base / "external"
    uri = pg.start_embedded(data)
    socket_dir = process.postmaster(data).socket_dir
    assert socket_dir is not None
    url = pg.create_migrated_database(uri, prefix="bench")
    serving = Serving(
        base / "serve", POSTGRES_URI=url.set(drivername="postgresql").render_as_string(False)
    )
    serving.data_dir.mkdir()
    results: dict[str, Any] = {}
    try:
        serving.start()
        load = Load(serving.url)
        tasks = [asyncio.create_task(load.client(n)) for n in range(clients)]
        await asyncio.sleep(3)
        for how in ("pg_ctl stop -m fast", "kill -9"):
            fault = time.monotonic()
            if how == "kill -9":
                pid = process.postmaster(data).pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
            else:
                await asyncio.to_thread(_run_pg_ctl, data, "-w", "-m", "fast", "stop")
            await asyncio.sleep(outage)
            await asyncio.to_thread(process.clear_dead_postmaster, data)
            await asyncio.to_thread(process.start_postmaster, data, socket_dir, timeout=120)
            back = time.monotonic()
            await asyncio.sleep(max(3.0, outage))
            acked = load.back_after(fault)
            results[how] = None if acked is None else max(0.0, acked - back)
        load.stop.set()
        await asyncio.gather(*tasks)
        results["lost"] = await _verify(load)
        results["load"] = load
    finally:
        serving.cleanup()
        process.stop_postmaster(data)  # the restarted one (the library knows the first only)
        pg.stop_embedded(uri)
        shutil.rmtree(base, ignore_errors=True)
    return results


async def _embedded_kills(clients: int) -> dict[str, Any]:
    # The defaults of the settings (the tests check more often).
    serving = Serving(
        base_dir("tbd-fault-bench-"),
        EMBEDDED_PG_WATCH_INTERVAL="1.0",
        EMBEDDED_PG_RESTART_MAX_BACKOFF="30",
    )
    results: dict[str, Any] = {"back": []}
    try:
        serving.start()
        load = Load(serving.url)
        tasks = [asyncio.create_task(load.client(n)) for n in range(clients)]
        await asyncio.sleep(3)
        for _ in range(2):
            if not serving.postmaster().alive:  # the first kill was never repaired
                results["back"].append(None)
                continue
            pid = serving.kill_postmaster()
            killed = time.monotonic()
            while not (serving.postmaster().alive and serving.postmaster().pid != pid):
                await asyncio.sleep(0.05)
                if time.monotonic() - killed > 60:
                    break  # not restarted (reported as "never")
            await asyncio.sleep(5)
            acked = load.back_after(killed)
            results["back"].append(None if acked is None else acked - killed)
        load.stop.set()
        await asyncio.gather(*tasks)
        results["lost"] = await _verify(load)
        results["load"] = load
    finally:
        serving.cleanup()
        shutil.rmtree(serving.data_dir, ignore_errors=True)
    return results


def _report(title: str, results: dict[str, Any], times: dict[str, Any]) -> None:
    load: Load = results["load"]
    acked = sum(n for code, n in load.answers.items() if code.startswith("2"))
    other = sum(n for code, n in load.answers.items() if not code.startswith("2") and code != "503")
    print(f"\n## {title}")
    print(f"answers: {dict(sorted(load.answers.items()))}")
    print(f"acknowledged writes: {acked} ({len(load.records)} agents created)")
    print(f"acknowledged writes lost: {results['lost']}")
    print(f"answers other than 2xx/503: {other}")
    for label, value in times.items():
        shown = "never" if value is None else f"{value:.2f} s"
        print(f"{label}: {shown}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--outage", type=float, default=3.0, help="seconds the database is down")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# fault_db.py, {started}, {args.clients} clients, load {os.getloadavg()[0]:.1f}")
    restarts = await _restarts(args.clients, args.outage)
    _report(
        "Two restarts of an external PostgreSQL",
        restarts,
        {
            "recovery after pg_ctl stop -m fast + start": restarts["pg_ctl stop -m fast"],
            "recovery after kill -9 + start (crash recovery)": restarts["kill -9"],
        },
    )
    kills = await _embedded_kills(args.clients)
    _report(
        "The embedded PostgreSQL killed twice (kill -9), serve restarts it",
        kills,
        {f"kill {i + 1} → first acknowledged write": t for i, t in enumerate(kills["back"])},
    )
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
