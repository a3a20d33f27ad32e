"""Retention soak: does the database stop growing once retention deletes as much as runs add?
(run by hand; results in RESULTS.md).

    .venv/bin/python benchmarks/retention_soak.py [--runs 100000] [--days 200] [--concurrency 4]

Starts a throw-away embedded PostgreSQL 18 (migrated to head) and writes `--runs` runs through
the run store the runtime uses, as a real run leaves them: created, claimed (`running` event),
six stored events (model call, tool call and result, message…), finished (final status event
and a webhook delivery queued in the same transaction), the engine's record (the task's logs,
messages and `run_messages`, the workflow row's last-run view) and one usage call. The model and
the webhook receiver are left out (their cost is not the database's). Runs are spread over
`--days` simulated days (each run's end, its delivery and its usage call are dated on that
clock, and the delivery marked delivered), and retention (`services/retention.py`, 30 days for
runs, deliveries and usage calls) runs every `--prune-every` runs with the simulated "now",
as the upkeep loop would. Every `--sample-every` runs it prints `pg_database_size`, the row
counts and the dead tuples of the tables that grow.

Space: PostgreSQL does not give deleted rows' space back to the operating system; autovacuum
(on, with its defaults, in the embedded server) marks it free and new rows reuse it. A flat
size therefore needs autovacuum to keep up with the deletes, which the dead-tuple column shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text, update

from tbd_agents.config import Settings
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import Agent, Workflow
from tbd_agents.observability.usage.records import UsageCall
from tbd_agents.observability.usage.sql import SqlUsageStore
from tbd_agents.runtime.contracts import RunOutcome
from tbd_agents.runtime.sql_store import SqlRunStore
from tbd_agents.services.retention import Retention, RetentionPolicy
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.postgres.schema import TABLES
from tbd_agents.storage.postgres.schema_runtime import run_events, webhook_deliveries
from tbd_agents.storage.postgres.schema_usage import usage_calls

START = datetime(2026, 1, 1, tzinfo=UTC)
TABLES_WATCHED = ("task_executions", "run_events", "webhook_deliveries", "usage_calls")
ANSWER = "The report is ready. " * 20
TOOL_OUTPUT = "line of tool output\n" * 50


def messages(task_id: str, n: int) -> list[dict[str, Any]]:
    call = {"id": f"c{n}", "name": "search", "arguments": {"query": f"item {n}"}}
    return [
        {"role": "user", "content": f"prompt {n}", "task_id": task_id},
        {"role": "assistant", "content": "", "tool_calls": [call], "task_id": task_id},
        {"role": "tool", "content": TOOL_OUTPUT, "tool_call_id": f"c{n}", "name": "search",
         "task_id": task_id},
        {"role": "assistant", "content": ANSWER, "task_id": task_id},
    ]  # fmt: skip


def logs(n: int) -> list[dict[str, Any]]:
    return [
        {"timestamp": START.isoformat(), "event": e, "detail": f"{e} of run {n}"}
        for e in ("prompt_received", "model_call", "tool_call", "tool_result", "completed")
    ]


class Soak:
    def __init__(self, engine: Any, store: PostgresStore, args: argparse.Namespace) -> None:
        self.engine = engine
        self.store = store
        self.runs = SqlRunStore(engine)
        self.usage = SqlUsageStore(engine)
        self.args = args
        self.step = timedelta(days=args.days) / args.runs
        self.retention = Retention(
            store,
            RetentionPolicy(
                run_days=30, webhook_delivery_days=30, usage_call_days=30,
                batch_size=args.batch,
            ),
            webhooks=self.runs.webhooks,
            usage=self.usage,
        )  # fmt: skip
        self.deleted = dict.fromkeys(("runs", "webhook_deliveries", "usage_calls"), 0)
        self.prune_seconds = 0.0

    async def workflows(self, count: int) -> list[str]:
        ids = []
        async with self.store.unit_of_work() as repos:
            for i in range(count):
                agent = await repos.agents.create(Agent(name=f"soak-{i}"))
                wf = await repos.workflows.create(
                    Workflow(agent_id=agent.id, github_user=f"user{i % 4}",
                             webhook_url="http://hooks.invalid/done")
                )  # fmt: skip
                ids.append(wf.id)
        return ids

    async def one_run(self, n: int, workflow_id: str) -> None:
        at = START + self.step * n
        task = await self.runs.create_run(workflow_id, f"prompt {n}")
        await self.runs.claim(task.id, "soak@bench")
        for i in range(6):
            await self.runs.events.append(
                task.id, "log", {"event": "model_call", "message": f"step {i} of run {n}"}
            )
        outcome = RunOutcome(TaskStatus.COMPLETED, result=ANSWER, turns=2, tool_calls=1)
        await self.runs.finish(task.id, "soak@bench", outcome)
        added = messages(task.id, n)
        async with self.store.unit_of_work() as repos:  # the engine's record of the run
            await repos.workflows.update(workflow_id, {"messages": added, "logs": logs(n)})
            await repos.task_executions.update(
                task.id, {"logs": logs(n), "messages": added[-2:], "run_messages": added}
            )
        await self.usage.record(
            UsageCall(call_key=f"{task.id}:1", at=at, model="gpt-4o", purpose="turn",
                      input_tokens=1200, output_tokens=300, cost_usd=Decimal("0.0042"),
                      user_id="user", workflow_id=workflow_id, task_id=task.id)
        )  # fmt: skip
        tasks, hooks = TABLES["task_executions"], webhook_deliveries
        async with self.engine.begin() as conn:  # dated on the simulated clock
            await conn.execute(
                update(tasks).where(tasks.c.id == task.id).values(created_at=at, finished_at=at)
            )
            await conn.execute(
                update(hooks).where(hooks.c.task_id == task.id)
                .values(created_at=at, status="delivered", delivered_at=at)
            )  # fmt: skip

    async def sample(self, done: int, started: float) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            size = (
                await conn.execute(select(func.pg_database_size(func.current_database())))
            ).scalar_one()
            counts = {}
            for name, table in (("task_executions", TABLES["task_executions"]),
                                ("run_events", run_events),
                                ("webhook_deliveries", webhook_deliveries),
                                ("usage_calls", usage_calls)):  # fmt: skip
                counts[name] = (
                    await conn.execute(select(func.count()).select_from(table))
                ).scalar_one()
            dead = (await conn.execute(text(
                "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables "
                "WHERE relname = ANY(:names)"), {"names": list(TABLES_WATCHED)})).scalar_one()  # fmt: skip
            wf_bytes = (await conn.execute(text(
                "SELECT max(pg_column_size(messages)) FROM workflows"))).scalar_one()  # fmt: skip
        return {
            "runs": done, "sim_day": round(self.args.days * done / self.args.runs, 1),
            "db_mb": round(size / 2**20, 1), **counts, "dead_tuples": int(dead),
            "workflow_messages_bytes": wf_bytes, "deleted": dict(self.deleted),
            "prune_s": round(self.prune_seconds, 1), "elapsed_s": round(time.monotonic() - started),
        }  # fmt: skip

    async def run(self) -> list[dict[str, Any]]:
        args = self.args
        workflows = await self.workflows(8)
        samples = []
        started = time.monotonic()
        done = 0
        while done < args.runs:
            chunk = min(args.prune_every, args.runs - done)
            queue = iter(range(done, done + chunk))

            async def worker(queue: Any = queue) -> None:
                for n in queue:
                    await self.one_run(n, workflows[n % len(workflows)])

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            done += chunk
            t0 = time.monotonic()
            report = await self.retention.prune(now=START + self.step * done)
            self.prune_seconds += time.monotonic() - t0
            for kind in self.deleted:
                self.deleted[kind] += report.counts[kind]
            if done % args.sample_every == 0 or done == args.runs:
                samples.append(await self.sample(done, started))
                print(json.dumps(samples[-1]), flush=True)
        return samples


async def largest_relations(engine: Any, top: int = 12) -> str:
    """The largest relations at the end (tables with their TOAST, and indexes apart), as a
    Markdown table: where the remaining size is."""
    query = text(
        "SELECT c.relname, c.relkind, pg_relation_size(c.oid) AS main,"
        " CASE WHEN c.reltoastrelid <> 0 THEN pg_total_relation_size(c.reltoastrelid) ELSE 0 END"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
        " ORDER BY pg_relation_size(c.oid) DESC LIMIT :top"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query, {"top": top})).all()
    lines = ["| relation | kind | size (MB) | TOAST (MB) |", "|---|---|---|---|"]
    for name, kind, main, toast in rows:
        kind_name = "index" if kind == "i" else "table"
        lines.append(f"| {name} | {kind_name} | {main / 2**20:.1f} | {toast / 2**20:.1f} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    from tbd_agents.security.cipher import generate_fernet_key
    from tbd_agents.storage.postgres.migrate import prepare_database

    tmp = Path(tempfile.mkdtemp(prefix="tbd-soak-"))
    prepared = await prepare_database(
        Settings(data_dir=tmp, token_encryption_key=f"1:{generate_fernet_key()}")
    )
    engine = create_engine(prepared.url, pool_size=args.concurrency + 2, max_overflow=4)
    try:
        store = PostgresStore(engine, owns_engine=False)
        samples = await Soak(engine, store, args).run()
        print(f"load average {os.getloadavg()[0]:.1f}")
        print("| runs | simulated day | DB size (MB) | task_executions | run_events | "
              "webhook_deliveries | usage_calls | dead tuples | elapsed (s) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for s in samples:
            print(f"| {s['runs']} | {s['sim_day']} | {s['db_mb']} | {s['task_executions']} | "
                  f"{s['run_events']} | {s['webhook_deliveries']} | {s['usage_calls']} | "
                  f"{s['dead_tuples']} | {s['elapsed_s']} |")  # fmt: skip
        print(await largest_relations(engine))
    finally:
        await engine.dispose()
        await prepared.aclose()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=200.0, help="simulated days the runs span")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--prune-every", type=int, default=2000, help="runs between passes")
    parser.add_argument("--sample-every", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500, help="RETENTION_BATCH_SIZE")
    asyncio.run(main(parser.parse_args()))
