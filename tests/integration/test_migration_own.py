"""The migration moves TBD Agents' own collections too (API keys, agent versions, tool approvals,
the usage ledger and budgets, webhook and run-time records): written by our MongoDB backend's own
code, migrated from a live database and from a mongodump directory, verified by content, and the
PostgreSQL hub works with them afterwards (the key authenticates, the versions are listed, the
budget is enforced)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import bson
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.domain.approvals import ToolApproval
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import TaskTrigger
from tbd_agents.engine.messages import ChatRequest, Message
from tbd_agents.observability.usage.budgets import BudgetExceeded
from tbd_agents.observability.usage.meter import UsageMeter
from tbd_agents.observability.usage.mongo import BUDGETS, CALLS, DAILY, MongoUsageStore
from tbd_agents.observability.usage.records import UsageCall, UsageScope
from tbd_agents.observability.usage.sql import SqlUsageStore
from tbd_agents.runtime.scheduler import Outcome
from tbd_agents.runtime.service import default_cipher
from tbd_agents.runtime.store import as_run_store
from tbd_agents.runtime.webhooks import WebhookService
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.mongo.repository import EXTRA_ENTITIES, MongoStore
from tbd_agents.storage.mongo.runtime_schema import (
    RUN_EVENTS,
    RUN_HALTS,
    SCHEDULE_OCCURRENCES,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_SECRETS,
)
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.tools.migration.report import ReportLog, read_report
from tbd_agents.tools.migration.results import BatchStep, CollectionResult, SilentReporter
from tbd_agents.tools.migration.runner import Migration, Options, check_source
from tbd_agents.tools.migration.sources import DumpSource, MongoSource, Source
from tbd_agents.tools.migration.transform import OWN_ENTITIES
from tbd_agents.tools.migration.verify import Verifier, VerifyResult
from tests.api.conftest import make_settings
from tests.integration.test_migration import MIGRATE, VERIFY, run_script
from tests.support import pg
from tests.support.dumps import DB, _SourceDatabase
from tests.support.mongo import EMULATION_TARGET, EmulatedClient
from tests.usage.runs import PRICE

DB_NAME = DB  # the default MONGO_DB_NAME, which the scripts read
#: Both hubs' settings use the tests' TOKEN_ENCRYPTION_KEY (`make_settings`).
SETTINGS = make_settings(Path(tempfile.gettempdir()) / "tbd-own-migration")
CIPHER = default_cipher(SETTINGS)


@dataclass
class MongoHub:
    """A hub on MongoDB (the in-process emulation) and what was done through it."""

    client: EmulatedClient
    store: MongoStore
    app: FastAPI
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def http(self, key: str) -> httpx.AsyncClient:
        return _http(self.app, key)


def _http(app: FastAPI, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://hub",
        headers={"Authorization": f"Bearer {key}"},
    )


async def _key(store: Any, owner: str, scope: KeyScope = KeyScope.USER) -> str:
    async with store.unit_of_work() as repos:
        return (await ApiKeys(repos).create(owner, scope=scope, name=f"{owner}'s key")).plaintext


async def _fill(hub: MongoHub) -> None:
    """API keys, an agent saved three times (three versions), a pending tool approval."""
    hub.keys["alice"] = await _key(hub.store, "alice")
    hub.keys["admin"] = await _key(hub.store, "root", KeyScope.ADMIN)
    async with hub.http(hub.keys["alice"]) as alice:
        created = await alice.post("/api/agents", json={"name": "writer", "system_prompt": "One."})
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        path = f"/api/agents/{agent_id}"
        assert (await alice.patch(path, json={"system_prompt": "Two."})).status_code == 200
        assert (await alice.patch(path, json={"description": "three"})).status_code == 200
        workflow = await alice.post("/api/workflows", json={"agent_id": agent_id})
        assert workflow.status_code == 201, workflow.text
    hub.ids["agent"] = agent_id
    hub.ids["workflow"] = workflow.json()["id"]
    async with hub.store.unit_of_work() as repos:
        approval = await repos.for_model(ToolApproval).create(
            ToolApproval(
                task_id="run-that-was-never-migrated",
                workflow_id=hub.ids["workflow"],
                owner="alice",
                tool_name="shell",
                arguments={"cmd": "ls -la", "n": 3},
                rule="tool=shell",
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    hub.ids["approval"] = approval.id


@pytest.fixture
async def mongo_hub(tmp_path: Path) -> AsyncIterator[MongoHub]:
    client = EmulatedClient(tz_aware=True)
    store = MongoStore(client.get_database(DB_NAME), client=client, target=EMULATION_TARGET)  # type: ignore[arg-type]
    await store.open()
    settings = make_settings(tmp_path / "mongo", db_backend="mongo", postgres_uri=None)
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        hub = MongoHub(client, store, app)
        await _fill(hub)
        yield hub
    await store.close()


@pytest.fixture
def target(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, "own")
    yield url
    pg.drop_database(url)


@pytest.fixture
async def conns(target: URL) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    a, b = await asyncpg.connect(libpq_url(target)), await asyncpg.connect(libpq_url(target))
    yield a, b
    await a.close()
    await b.close()


def live_source(hub: MongoHub) -> Source:
    """The hub's database through the pymongo-like API (naive datetimes, as the driver's
    default)."""
    database = _SourceDatabase(EmulatedClient(tz_aware=False, sibling_of=hub.client), DB_NAME)
    return MongoSource(database, label="emulated MongoDB", identity="mongodb:emulated/own_hub")


def dump_source(hub: MongoHub, root: Path) -> Source:
    """The hub's database written as `mongodump --out=root` writes it (one BSON file each)."""
    directory = root / DB_NAME
    directory.mkdir(parents=True)
    sync = hub.client.sync.get_database(DB_NAME)
    for name in sync.list_collection_names():
        documents = sync.get_collection(name).find()
        (directory / f"{name}.bson").write_bytes(b"".join(bson.encode(d) for d in documents))
    return DumpSource(root, DB_NAME)


SOURCES = {
    "live": lambda hub, tmp: live_source(hub),
    "dump": lambda hub, tmp: dump_source(hub, tmp / "dump"),
}


async def migrate(
    source: Source,
    conn: asyncpg.Connection,
    report: Path,
    *,
    collections: list[str] | None = None,
    dry_run: bool = False,
    batch_size: int = 2,
) -> Any:
    log = ReportLog(report)
    try:
        options = Options(collections=collections, batch_size=batch_size, dry_run=dry_run)
        return await Migration(source, conn, options, log).run()
    finally:
        log.close()


async def migrate_all_kept(
    source: Source, conn: asyncpg.Connection, report: Path, **options: Any
) -> dict[str, CollectionResult]:
    """`migrate`, asserting no field was dropped; the collections' results by name."""
    result = await migrate(source, conn, report, **options)
    assert not {c.name: c.extra_dropped for c in result.collections if c.extra_dropped}
    return {c.name: c for c in result.collections}


def assert_verified(result: VerifyResult) -> None:
    failures = {
        c.name: (c.missing_ids, c.extra_ids, c.differing_ids, c.differences)
        for c in result.collections
        if not c.ok
    }
    assert result.ok, failures


def test_the_own_entities_are_the_mongo_backends_extra_ones() -> None:
    assert set(OWN_ENTITIES) == set(EXTRA_ENTITIES)


@pytest.mark.parametrize("kind", sorted(SOURCES))
async def test_keys_versions_and_approvals_migrate_verify_and_work(
    kind: str,
    mongo_hub: MongoHub,
    conns: tuple[asyncpg.Connection, asyncpg.Connection],
    target: URL,
    tmp_path: Path,
) -> None:
    source = SOURCES[kind](mongo_hub, tmp_path)
    own = ["api_keys", "agent_versions", "tool_approvals"]
    # None of them is "not migrated" any more.
    ignored = await check_source(source, own, allow_empty=False)
    assert not set(ignored) & set(own), ignored

    dry = await migrate(source, conns[0], tmp_path / "dry.jsonl", dry_run=True)
    by_name = {c.name: c for c in dry.collections}
    assert by_name["api_keys"].would_insert == 2
    assert by_name["agent_versions"].would_insert == 3
    assert await conns[0].fetchval("SELECT count(*) FROM api_keys") == 0  # nothing written

    by_name = await migrate_all_kept(source, conns[0], tmp_path / "q.jsonl")
    counts = {n: c.inserted for n, c in by_name.items()}
    assert (counts["api_keys"], counts["agent_versions"], counts["tool_approvals"]) == (2, 3, 1)
    assert not list(read_report(tmp_path / "q.jsonl"))
    assert_verified(await Verifier(source, *conns).run())
    # Idempotent: a second run rewrites nothing.
    again = await migrate(source, conns[0], tmp_path / "q2.jsonl")
    assert {c.name: c.unchanged for c in again.collections if c.name in own} == {
        "api_keys": 2,
        "agent_versions": 3,
        "tool_approvals": 1,
    }

    store = PostgresStore(create_engine(target, pool_size=2, max_overflow=2), url=target)
    app = create_app(make_settings(tmp_path / "pg"), store)
    try:
        async with app.router.lifespan_context(app):
            agent = f"/api/agents/{mongo_hub.ids['agent']}"
            async with _http(app, mongo_hub.keys["alice"]) as alice:
                # The key made on MongoDB authenticates against the migrated database.
                me = await alice.get(agent)
                assert me.status_code == 200, me.text
                versions = (await alice.get(f"{agent}/versions")).json()
                assert [v["number"] for v in versions] == [3, 2, 1]
                assert versions[1]["changed_fields"] == ["system_prompt"]
                one = (await alice.get(f"{agent}/versions/1")).json()
                assert one["snapshot"]["system_prompt"] == "One."
                pending = (await alice.get("/api/approvals")).json()
                assert [a["id"] for a in pending] == [mongo_hub.ids["approval"]]
                assert pending[0]["arguments"] == {"cmd": "ls -la", "n": 3}
            async with _http(app, "tbd_not-a-key") as stranger:
                assert (await stranger.get(agent)).status_code == 401
    finally:
        await store.close()


async def test_collections_flag_takes_the_own_collections(
    mongo_hub: MongoHub, conns: tuple[asyncpg.Connection, asyncpg.Connection], tmp_path: Path
) -> None:
    source = live_source(mongo_hub)
    result = await migrate(source, conns[0], tmp_path / "q.jsonl", collections=["api_keys"])
    assert [c.name for c in result.collections] == ["api_keys"]
    assert await conns[0].fetchval("SELECT count(*) FROM api_keys") == 2
    assert await conns[0].fetchval("SELECT count(*) FROM agent_versions") == 0
    assert_verified(await Verifier(source, *conns).run(["api_keys"]))


# ------------------------------------------------------------------------------ usage, budgets


async def _fill_usage(hub: MongoHub) -> None:
    """A budget made over the API and calls recorded by the MongoDB usage store: alice has used
    her 1000 tokens of the month; one call of a crash between its two writes (not in the day's
    totals on the source)."""
    async with hub.http(hub.keys["admin"]) as admin:
        made = await admin.post(
            "/api/budgets",
            json={"name": "alice monthly", "scope": "user", "target_id": "alice",
                  "metric": "tokens", "period": "month", "limit": 1000},
        )  # fmt: skip
        assert made.status_code == 201, made.text
    hub.ids["budget"] = made.json()["id"]
    usage = MongoUsageStore(hub.store.database)
    at = datetime.now(UTC)
    for n, (tokens, agent) in enumerate([((600, 100), hub.ids["agent"]), ((200, 100), None)]):
        await usage.record(
            UsageCall(call_key=f"run-{n}:1", at=at, model="gpt-4o", purpose="turn",
                      input_tokens=tokens[0], output_tokens=tokens[1],
                      cost_usd=Decimal("0.000123456789"), user_id="alice", agent_id=agent)
        )  # fmt: skip
    await hub.store.database.get_collection(CALLS).insert_one(
        {"_id": "crashed", "call_key": "run-9:1", "at": at, "user_id": "bob", "agent_id": None,
         "workflow_id": None, "schedule_id": None, "task_id": None, "session_id": None,
         "provider_id": None, "provider_type": None, "model": "gpt-4o", "purpose": "turn",
         "input_tokens": 5, "output_tokens": 5, "cost_pico": 7, "day": at.date().isoformat(),
         "daily_applied": False}
    )  # fmt: skip


@pytest.mark.parametrize("kind", sorted(SOURCES))
async def test_usage_and_budgets_migrate_verify_and_the_budget_is_enforced(
    kind: str,
    mongo_hub: MongoHub,
    conns: tuple[asyncpg.Connection, asyncpg.Connection],
    target: URL,
    tmp_path: Path,
) -> None:
    await _fill_usage(mongo_hub)
    source = SOURCES[kind](mongo_hub, tmp_path)
    own = [BUDGETS, CALLS, DAILY]
    assert not set(await check_source(source, own, allow_empty=False)) & set(own)

    dry = await migrate(source, conns[0], tmp_path / "dry.jsonl", collections=own, dry_run=True)
    assert {c.name: c.would_insert for c in dry.collections} == {BUDGETS: 1, CALLS: 3, DAILY: 2}
    assert await conns[0].fetchval("SELECT count(*) FROM usage_calls") == 0

    by_name = await migrate_all_kept(source, conns[0], tmp_path / "q.jsonl", collections=own)
    assert {n: c.inserted for n, c in by_name.items()} == {BUDGETS: 1, CALLS: 3, DAILY: 2}
    assert sum(by_name[CALLS].warnings.values()) == 1  # the crashed call, migrated as it is
    assert_verified(await Verifier(source, *conns).run(own))
    again = await migrate(source, conns[0], tmp_path / "q2.jsonl", collections=own)
    assert {c.name: c.unchanged for c in again.collections} == {BUDGETS: 1, CALLS: 3, DAILY: 2}

    conn = conns[0]
    assert await conn.fetchval("SELECT cost_usd FROM usage_calls WHERE id = 'crashed'") == Decimal(
        "0.000000000007"
    )
    # The aggregates PostgreSQL keeps beside usage_daily are rebuilt from it.
    assert (
        await conn.fetchval(
            "SELECT calls FROM usage_rollup WHERE dimension = 'user' AND grain = 'month' "
            "AND key = 'alice'"
        )
        == 2
    )
    assert await conn.fetchval("SELECT sum(input_tokens) FROM usage_monthly") == 800

    engine = create_engine(target, pool_size=1, max_overflow=1)
    try:
        usage = SqlUsageStore(engine)
        meter = UsageMeter(usage, UsageScope(user_id="alice"), None, None, None, "gpt-4o", PRICE)

        async def emit(kind: Any, data: dict[str, Any]) -> None:
            return None

        with pytest.raises(BudgetExceeded) as refused:
            await meter.before_call(ChatRequest("gpt-4o", [Message("user", "hi")]), emit)
        assert refused.value.message.startswith("budget_exceeded: alice monthly: used 1000 of 1000")
        bob = UsageMeter(usage, UsageScope(user_id="bob"), None, None, None, "gpt-4o", PRICE)
        await bob.before_call(ChatRequest("gpt-4o", [Message("user", "hi")]), emit)
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------------- webhooks


async def _fill_webhooks(hub: MongoHub) -> None:
    """A workflow's signing secret (encrypted by the MongoDB hub), a delivery of a run's event
    and its failed attempt, all through the run-time's MongoDB stores."""
    async with hub.http(hub.keys["alice"]) as alice:
        changed = await alice.patch(
            f"/api/workflows/{hub.ids['workflow']}",
            json={"webhook_url": "https://hooks.example.com/tbd"},
        )
        assert changed.status_code == 200, changed.text
    runs = as_run_store(hub.store)
    hub.ids["secret"] = await WebhookService(runs.webhooks, SETTINGS, CIPHER).secret(
        hub.ids["workflow"]
    )
    task = await runs.create_run(hub.ids["workflow"], "hello", trigger=TaskTrigger.API)
    hub.ids["task"] = task.id
    delivery = await runs.webhooks.enqueue_event(task, "approval_requested", "a1", {"n": 1.5})
    assert delivery is not None
    hub.ids["delivery"] = delivery
    (due,) = await runs.webhooks.claim_due(10, timedelta(seconds=60))
    await runs.webhooks.record_attempt(
        due, 503, "unavailable", 12.5, exhausted=False, retry_after=timedelta(seconds=30)
    )


@pytest.mark.parametrize("kind", sorted(SOURCES))
async def test_webhooks_migrate_verify_and_the_secret_reads_the_same(
    kind: str,
    mongo_hub: MongoHub,
    conns: tuple[asyncpg.Connection, asyncpg.Connection],
    target: URL,
    tmp_path: Path,
) -> None:
    await _fill_webhooks(mongo_hub)
    source = SOURCES[kind](mongo_hub, tmp_path)
    own = [WEBHOOK_SECRETS, WEBHOOK_DELIVERIES, WEBHOOK_ATTEMPTS]
    needed = ["agents", "workflows", "task_executions", *own]
    assert not set(await check_source(source, own, allow_empty=False)) & set(own)

    # Without their workflow and run, the rows are orphans: quarantined, and verification
    # counts them as such.
    alone = await migrate(source, conns[0], tmp_path / "alone.jsonl", collections=own)
    assert {c.name: dict(c.quarantined) for c in alone.collections} == {
        WEBHOOK_SECRETS: {"orphan": 1},
        WEBHOOK_DELIVERIES: {"orphan": 1},
        WEBHOOK_ATTEMPTS: {"orphan": 1},
    }
    alone_check = await Verifier(source, *conns).run(own)
    assert_verified(alone_check)
    assert [dict(c.excluded) for c in alone_check.collections] == [{"orphan": 1}] * 3

    dry = await migrate(source, conns[0], tmp_path / "dry.jsonl", collections=needed, dry_run=True)
    assert {c.name: c.would_insert for c in dry.collections if c.name in own} == dict.fromkeys(
        own, 1
    )
    by_name = await migrate_all_kept(source, conns[0], tmp_path / "q.jsonl", collections=needed)
    assert {n: c.inserted for n, c in by_name.items() if n in own} == dict.fromkeys(own, 1)
    assert_verified(await Verifier(source, *conns).run(needed))
    # The secret is copied as stored: the same TOKEN_ENCRYPTION_KEY reads it on PostgreSQL.
    engine = create_engine(target, pool_size=1, max_overflow=1)
    try:
        service = WebhookService(engine, SETTINGS, CIPHER)
        assert await service.secret(mongo_hub.ids["workflow"]) == mongo_hub.ids["secret"]
        (listed,) = await service.store.list_deliveries(
            workflow_id=mongo_hub.ids["workflow"], task_id=None, limit=10
        )
        assert listed.id == mongo_hub.ids["delivery"]
        assert [(a.attempt, a.status_code, a.error) for a in listed.log] == [
            (1, 503, "unavailable")
        ]
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------- run-time records


async def _fill_runtime(hub: MongoHub) -> None:
    """Events of a run, a halt asked of a running run, two claimed occurrences of a schedule
    (one fired, whose run is then removed), through the run-time's MongoDB stores."""
    runs = as_run_store(hub.store)
    task = await runs.create_run(hub.ids["workflow"], "hello", trigger=TaskTrigger.API)
    hub.ids["task"] = task.id
    assert await runs.claim(task.id, "worker-1") is not None
    await runs.events.append(task.id, "log", {"line": "working", "at": datetime.now(UTC)})
    await runs.halt(task.id, "alice")
    async with hub.http(hub.keys["alice"]) as alice:
        made = await alice.post(
            "/api/scheduled-agents", json={"workflow_id": hub.ids["workflow"], "name": "nightly"}
        )
        assert made.status_code == 201, made.text
    hub.ids["schedule"] = made.json()["id"]
    async with hub.store.unit_of_work() as repos:
        schedule = await repos.scheduled_agents.get(hub.ids["schedule"])
    first = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    async with runs.scheduling() as session:
        assert (await session.claim(schedule, first, Outcome.SKIPPED_MISSED, 3, "sched-1"))[0]
        fired = await session.claim(schedule, first + timedelta(days=1), Outcome.FIRED, 0, "s-1")
        assert fired[0] and fired[1] is not None
    # The fired run is not in the source any more (removed by hand, outside the hub).
    tasks = hub.store.database.get_collection("task_executions")
    assert (await tasks.delete_one({"_id": fired[1]})).deleted_count == 1


@pytest.mark.parametrize("kind", sorted(SOURCES))
async def test_run_events_halts_and_occurrences_migrate_verify_and_work(
    kind: str,
    mongo_hub: MongoHub,
    conns: tuple[asyncpg.Connection, asyncpg.Connection],
    target: URL,
    tmp_path: Path,
) -> None:
    await _fill_runtime(mongo_hub)
    source = SOURCES[kind](mongo_hub, tmp_path)
    own = [RUN_EVENTS, RUN_HALTS, SCHEDULE_OCCURRENCES]
    assert not set(await check_source(source, own, allow_empty=False)) & set(own)
    task_id = mongo_hub.ids["task"]
    mongo_events = await as_run_store(mongo_hub.store).events.read(task_id)
    assert mongo_events

    by_name = await migrate_all_kept(source, conns[0], tmp_path / "q.jsonl")
    assert by_name[RUN_EVENTS].inserted == await mongo_hub.store.database.get_collection(
        RUN_EVENTS
    ).count_documents({})
    assert (by_name[RUN_HALTS].inserted, by_name[SCHEDULE_OCCURRENCES].inserted) == (1, 2)
    # The fired occurrence's run is not in the source: its reference is cleared, as
    # PostgreSQL's ON DELETE SET NULL would, and the user is told.
    assert sum(by_name[SCHEDULE_OCCURRENCES].warnings.values()) == 1
    assert_verified(await Verifier(source, *conns).run())
    again = await migrate(source, conns[0], tmp_path / "q2.jsonl")
    assert {c.name: c.inserted + c.updated for c in again.collections if c.name in own} == (
        dict.fromkeys(own, 0)
    )

    engine = create_engine(target, pool_size=1, max_overflow=1)
    try:
        runs = as_run_store(engine)
        migrated = await runs.events.read(task_id)
        assert [(e.seq, e.type, e.data) for e in migrated] == [
            (e.seq, e.type, e.data) for e in mongo_events
        ]
        # The halt asked on MongoDB reaches the run's worker on PostgreSQL.
        beat = await runs.heartbeat(task_id, "worker-1")
        assert beat.owned and beat.halt_requested
        history = await runs.schedule_history(mongo_hub.ids["schedule"])
        assert [(h.outcome, h.missed, h.task_id) for h in history] == [
            ("fired", 0, None),
            ("skipped_missed", 3, None),
        ]
    finally:
        await engine.dispose()


# ------------------------------------------------------------- resume, bad documents, dry run


class _Killed(Exception):
    """Stands for the process dying right after a batch's commit."""


class _KillAfter(SilentReporter):
    def __init__(self, collection: str, batches: int) -> None:
        self.collection, self.left = collection, batches

    def batch_done(self, result: CollectionResult, step: BatchStep) -> None:
        if result.name == self.collection:
            self.left -= 1
            if self.left == 0:
                raise _Killed


async def test_a_killed_run_resumes_and_bad_documents_are_quarantined_not_dropped(
    mongo_hub: MongoHub, conns: tuple[asyncpg.Connection, asyncpg.Connection], tmp_path: Path
) -> None:
    usage = MongoUsageStore(mongo_hub.store.database)
    at = datetime(2026, 10, 30, 23, 59, tzinfo=UTC)
    for n in range(7):
        await usage.record(
            UsageCall(call_key=f"r{n}:1", at=at + timedelta(minutes=n), model="m", purpose="turn",
                      input_tokens=n, output_tokens=1, cost_usd=Decimal("0.5"), user_id="u")
        )  # fmt: skip
    database = mongo_hub.store.database
    await database.get_collection(CALLS).insert_one(
        {"_id": "zz-bad", "call_key": "bad:1", "at": at, "model": "m", "purpose": "turn",
         "input_tokens": "many", "output_tokens": 1, "cost_pico": 1}
    )  # fmt: skip
    await database.get_collection(BUDGETS).insert_one(
        {"_id": "b-bad", "name": "x", "scope": "user", "target_id": "u", "metric": "tokens",
         "period": "week", "limit": "lots", "warn_ratio": 0.8, "enabled": True}
    )  # fmt: skip
    source = live_source(mongo_hub)
    own = [BUDGETS, CALLS, DAILY]

    log = ReportLog(tmp_path / "killed.jsonl")
    with pytest.raises(_Killed):
        await Migration(
            source, conns[0], Options(collections=own, batch_size=2), log, _KillAfter(CALLS, 2)
        ).run()
    log.close()
    assert await conns[0].fetchval("SELECT count(*) FROM usage_calls") == 4

    result = await migrate(source, conns[0], tmp_path / "q.jsonl", collections=own)
    calls = next(c for c in result.collections if c.name == CALLS)
    assert (calls.resumed_from, calls.read, calls.inserted) == (4, 4, 3)
    assert dict(calls.quarantined) == {"invalid": 1}
    budgets = next(c for c in result.collections if c.name == BUDGETS)
    assert dict(budgets.quarantined) == {"invalid": 1}
    reasons = {(q["collection"], q["id"]): q["reason"] for q in read_report(tmp_path / "q.jsonl")}
    assert "input_tokens: not an integer (got 'many')" in str(reasons[(CALLS, "zz-bad")])
    assert "limit_value: not a number (got 'lots')" in str(reasons[(BUDGETS, "b-bad")])
    check = await Verifier(source, *conns).run(own)
    assert_verified(check)
    assert {c.name: dict(c.excluded) for c in check.collections} == {
        BUDGETS: {"invalid": 1},
        CALLS: {"invalid": 1},
        DAILY: {},
    }
    assert await conns[0].fetchval("SELECT sum(calls) FROM usage_monthly") == 7

    # Verification sees a changed value and a row the source does not have.
    await conns[0].execute("UPDATE usage_calls SET input_tokens = 99 WHERE call_key = 'r3:1'")
    await conns[0].execute(
        "INSERT INTO budgets (name, scope, target_id, metric, period, limit_value) "
        "VALUES ('new', 'user', 'v', 'tokens', 'day', 5)"
    )
    failed = {c.name: c for c in (await Verifier(source, *conns).run(own)).collections}
    assert (failed[CALLS].differing, failed[BUDGETS].extra) == (1, 1)
    (differences,) = failed[CALLS].differences.values()
    assert [(d.field, d.source, d.target) for d in differences] == [("input_tokens", "3", "99")]


async def test_the_guides_scripts_migrate_and_verify_everything_of_ours(
    mongo_hub: MongoHub, target: URL, tmp_path: Path
) -> None:
    """The commands a user runs, on a dump holding every kind of our own collections."""
    await _fill_usage(mongo_hub)
    await _fill_webhooks(mongo_hub)
    await _fill_runtime(mongo_hub)
    dump_source(mongo_hub, tmp_path / "dump")
    args = ("--from-dump", str(tmp_path / "dump"))
    report = str(tmp_path / "q.jsonl")
    migrated = run_script(MIGRATE, *args, "--quarantine-file", report, url=target, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "Not migrated" not in migrated.stdout
    assert "usage_calls: 1 x call not in usage_daily on the source (daily_applied false)" in (
        migrated.stdout
    )
    assert "schedule_occurrences: 1 x task_id cleared" in migrated.stdout
    for name in ("api_keys", "budgets", "usage_daily", "webhook_attempts", "run_halts"):
        assert name in migrated.stdout
    verified = run_script(VERIFY, *args, url=target, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "RESULT: PASS" in verified.stdout
