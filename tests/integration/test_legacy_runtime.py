"""Acceptance: an existing TBD Agents deployment keeps working in the hub (issue #13).

The data is the generated existing database (`tests.support.legacy_dump`, scale 1), on both
profiles the hub offers an existing user:

* `pg`: migrated into PostgreSQL 18 with the guide's script, as a user runs it; the hub then runs
  with `TOKEN_ENCRYPTION_KEY` set to the key the existing deployment encrypted its tokens with;
* `mongo`: `DB_BACKEND=mongo` on the existing database as it is (the in-process emulation).

What an existing user does and gets:

1. **Their agents run.** The hub is started with its defaults and an admin key (the single-user
   deployment's operator). The one thing the user changes is where each provider points
   (`PATCH /api/providers/{id}` with a `base_url`, here the local scripted model server); the
   token stays the migrated one. A run started with `POST /api/workflows/{id}/runs` completes
   with the model's answer, and the model server received the token's plaintext as the existing
   system sent it: OpenAI `Authorization: Bearer <key>`, Anthropic `x-api-key: <key>` for the
   default auth type and `Authorization: Bearer <key>` for `bearer` (a gateway). The workflows
   are owned by a GitHub login, by `local` and by `server`: each runs, with every existing
   record it names (the workflow's skills and guardrails, the agent's MCP servers and their
   tokens), and what cannot be reached from here (an external Qdrant, remote MCP servers) is a
   warning of the run, not its failure.
2. **Their schedules fire.** The scheduler, with a controlled clock, over the existing schedules:
   each enabled one whose workflow exists and whose window is open fires once (the missed-run
   policy folds the occurrences missed since the existing system stopped), creating a pending
   run; the disabled one, the one past its `end_at` and the one of a deleted workflow do not. The
   scheduler does not fail or spin on them, and the schedule of the deleted workflow is logged.
3. **Their inactive workflows refuse prompts** (409 naming the fix), and no run is created.

The copy of the existing data the PostgreSQL tests use is the dump migrated once per module; on
MongoDB each test loads the documents into a fresh emulated database.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import ScheduledAgent, TaskExecution
from tbd_agents.runtime.scheduler import Outcome, Scheduler, TickReport
from tbd_agents.runtime.store import RunStore, as_run_store
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.mongo.repository import MongoStore
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import DocumentStore, Query, eq
from tests.engine.protocol_server import ProtocolServer, Recorded, Turn
from tests.integration.test_legacy_data import MIGRATE, run_script
from tests.support import pg
from tests.support.dumps import DB
from tests.support.legacy_dump import LEGACY_FERNET_KEY, LegacyDatabase, legacy_database
from tests.support.mongo import EMULATION_TARGET, EmulatedClient

PROFILES = ("pg", "mongo")

#: The scheduler tests' "now": after every time in the existing data, inside schedule_full's window.
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------- fixtures


@dataclass
class Migration:
    url: URL
    run: subprocess.CompletedProcess[str]

    def quarantined(self) -> str:
        """The migration's lines about documents it did not load."""
        lines = (self.run.stdout + self.run.stderr).splitlines()
        return "\n".join(line for line in lines if "quarantin" in line.lower())


@pytest.fixture(scope="module")
def legacy() -> LegacyDatabase:
    return legacy_database(scale=1)


@pytest.fixture(scope="module")
def migration(
    pg18_server: str, legacy: LegacyDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Migration]:
    """The existing database migrated once with the guide's script (each test works on a copy).
    The migration itself is asserted by tests/integration/test_legacy_data.py."""
    work = tmp_path_factory.mktemp("legacy-runtime")
    dump = legacy.write_dump(work / "dump")
    url = pg.create_migrated_database(pg18_server, "lrun")
    done = run_script(
        MIGRATE,
        "--from-dump",
        str(dump),
        "--quarantine-file",
        str(work / "quarantine.jsonl"),
        url=url,
        cwd=work,
    )
    yield Migration(url, done)
    pg.drop_database(url)


@dataclass
class Deployment:
    """The existing deployment's data on one profile, and the hub's settings for it."""

    profile: str
    store: DocumentStore
    settings: Settings
    legacy: LegacyDatabase
    migration: Migration | None = None

    @property
    def runs(self) -> RunStore:
        return as_run_store(self.store)

    @property
    def ids(self) -> dict[str, str]:
        """Named ids of the existing data (`schedule_full`, `workflow_deleted`, ...)."""
        return self.legacy.ids


def hub_settings(tmp: Path, url: URL | None) -> Settings:
    """The hub's defaults, plus what the deployment needs: its database, the existing token key,
    and (for these tests only) the local model server allowed as an outbound host."""
    return Settings(
        data_dir=tmp,
        db_backend="postgres" if url is not None else "mongo",
        postgres_uri=url.render_as_string(hide_password=False) if url is not None else None,
        token_encryption_key=LEGACY_FERNET_KEY,  # type: ignore[arg-type]
        embedding_provider="hashing",
        outbound_allowed_hosts="127.0.0.1",
        memory_expiry_sweep_seconds=0,
        run_lease_seconds=15.0,
        redis_url=None,
    )


@pytest.fixture(params=PROFILES)
async def deployment(
    request: pytest.FixtureRequest, legacy: LegacyDatabase, tmp_path: Path
) -> AsyncIterator[Deployment]:
    """A fresh copy of the existing deployment's data on the profile of the test."""
    if request.param == "pg":
        migration: Migration = request.getfixturevalue("migration")
        server: str = request.getfixturevalue("pg18_server")
        url = pg.create_database(server, "lrun_t", template=migration.url.database)
        store = PostgresStore(create_engine(url, pool_size=5), url=url)
        try:
            yield Deployment("pg", store, hub_settings(tmp_path, url), legacy, migration)
        finally:
            await store.close()
            pg.drop_database(url)
    else:
        client = EmulatedClient(tz_aware=True)
        database = client.get_database(DB)
        legacy.load_into(database)
        mongo = MongoStore(database, client=client, target=EMULATION_TARGET)  # type: ignore[arg-type]
        await mongo.open()
        try:
            yield Deployment("mongo", mongo, hub_settings(tmp_path, None), legacy)
        finally:
            await mongo.close()


def _answer(rec: Recorded) -> Turn:
    """Every request is answered; the answer names the request's last user message."""
    users = [m["text"] for m in rec.conversation() if m["role"] == "user"]
    return Turn(text=f"answer to: {users[-1] if users else ''}")


@pytest.fixture(scope="module")
def model_server() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    server.responder = _answer
    yield server
    server.stop()


@pytest.fixture
def fake_npx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`npx` on PATH is a script that records how it was started and exits: the existing
    agent's stdio MCP server (`npx -y @modelcontextprotocol/server-filesystem`) must not fetch
    a package from npm in a test. The file it writes: one JSON line per start."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "npx-starts.jsonl"
    script = bin_dir / "npx"
    script.write_text(
        "#!/bin/sh\n"
        f'printf \'{{"github_token": "%s", "args": "%s"}}\\n\' "$GITHUB_TOKEN" "$*" >> {record}\n'
        'echo "npx is disabled in this test" >&2\n'
        "exit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return record


@dataclass
class Hub:
    app: Any
    client: httpx.AsyncClient


@pytest.fixture
async def hub(deployment: Deployment) -> AsyncIterator[Hub]:
    """`tbd-agents serve` on the deployment (API, in-process runs and scheduler), and a client
    holding the operator's admin key (`tbd-agents keys create --admin`)."""
    app = create_app(deployment.settings, deployment.store)
    async with app.router.lifespan_context(app):
        async with deployment.store.unit_of_work() as repos:
            key = (await ApiKeys(repos).create("admin", scope=KeyScope.ADMIN, name="op")).plaintext
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://hub",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as client:
            yield Hub(app, client)


# --------------------------------------------------------------------------- 1. agents run


@dataclass(frozen=True)
class RunCase:
    """An existing workflow, its agent's existing provider and how the key must arrive."""

    workflow: str
    provider: str
    token: str
    kind: str  # the wire protocol: "openai" | "anthropic"
    header: str  # "bearer" | "x-api-key"
    owner: str  # the workflow's github_user in the existing data
    path: str = ""  # appended to the server's URL to make the provider's base_url


RUN_CASES = (
    # Ops assistant (gpt-4o, provider `openai`, x-api-key): the richest agent of the data.
    RunCase("workflow_full", "provider_openai", "OPENAI_KEY", "openai", "bearer", "octocat", "/v1"),
    # Claude coder: provider `anthropic-gateway` (bearer), referenced by ObjectId.
    RunCase(
        "workflow_max_turns_reached",
        "provider_anthropic",
        "ANTHROPIC_KEY",
        "anthropic",
        "bearer",
        "server",
    ),
    # Release notes writer: provider `anthropic` with the default auth type (x-api-key).
    RunCase(
        "workflow_claude_direct",
        "provider_anthropic_direct",
        "CLAUDE_KEY",
        "anthropic",
        "x-api-key",
        "local",
    ),
)


async def _follow(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    """The run's events (the ASGI transport hands the SSE body over once the run has ended)."""
    response = await client.get(f"/api/tasks/{task_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.text.splitlines():
        if not line:
            if current:
                events.append(current)
            current = {}
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
    return events


def _requests_of(server: ProtocolServer, prompt: str) -> list[Recorded]:
    """The requests whose last user message is `prompt` (a run's own calls)."""
    found = []
    for rec in list(server.requests):
        users = [m["text"] for m in rec.conversation() if m["role"] == "user"]
        if users and users[-1] == prompt:
            found.append(rec)
    return found


def _prompt(case: RunCase, profile: str) -> str:
    if case.workflow == "workflow_full":
        # Its `request` guardrail (JSON Schema: {"ticket": "ABC-123"}, nothing else) takes
        # structured requests only: a prompt that is the JSON of one.
        return json.dumps({"ticket": f"OPS-{PROFILES.index(profile) + 1}"})
    return f"{case.workflow} on {profile}: what changed since yesterday? 🚀"


@pytest.mark.parametrize("case", RUN_CASES, ids=lambda c: c.workflow.removeprefix("workflow_"))
async def test_an_existing_agent_runs_once_its_provider_points_at_the_model(
    case: RunCase,
    deployment: Deployment,
    hub: Hub,
    model_server: ProtocolServer,
    fake_npx: Path,
) -> None:
    client, legacy = hub.client, deployment.legacy
    workflow = legacy.ids[case.workflow]
    stored = (await client.get(f"/api/workflows/{workflow}")).json()
    assert stored["github_user"] == case.owner, stored
    provider = legacy.ids[case.provider]
    patched = await client.patch(
        f"/api/providers/{provider}", json={"base_url": model_server.url + case.path}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["api_key_token_name"] == case.token  # the migrated token, as it is

    prompt = _prompt(case, deployment.profile)
    started = await client.post(f"/api/workflows/{workflow}/runs", json={"prompt": prompt})
    assert started.status_code == 202, started.text
    task_id = started.json()["id"]
    events = await _follow(client, task_id)
    task = (await client.get(f"/api/tasks/{task_id}")).json()
    shown = "; ".join(
        json.dumps(e.get("data"), ensure_ascii=False)[:300]
        for e in events
        if e.get("event") in ("error", "log", "status")
    )
    assert task["status"] == TaskStatus.COMPLETED.value, f"{task.get('error')}; events: {shown}"
    assert f"answer to: {prompt}" in (task["response"] or ""), task["response"]
    assert "belongs to another owner" not in shown  # the existing records all load

    sent = _requests_of(model_server, prompt)
    assert sent, "the model server received no request of the run"
    secret = legacy.secrets[case.token]
    for rec in sent:
        headers = {k.lower(): v for k, v in rec.headers.items()}
        assert rec.kind == case.kind, rec.path
        if case.header == "bearer":
            assert headers.get("authorization") == f"Bearer {secret}", headers
            assert "x-api-key" not in headers, headers
        else:  # Anthropic's own header
            sent_as = {k: v for k, v in headers.items() if k in ("x-api-key", "authorization")}
            assert sent_as == {"x-api-key": secret}, f"the key was sent as {sorted(sent_as)}"
    if case.workflow == "workflow_full":
        _the_ops_assistant_ran_as_configured(legacy, sent[0], events, fake_npx)
        # The workflow's guardrails are in force: a prompt that is not a structured request
        # is refused by its `request` guardrail, naming it.
        refused = await client.post(
            f"/api/workflows/{workflow}/runs", json={"prompt": "just check it"}
        )
        assert refused.status_code == 422, refused.text
        assert "ticket request schema" in refused.text


def _the_ops_assistant_ran_as_configured(
    legacy: LegacyDatabase, request: Recorded, events: list[dict[str, Any]], npx_starts: Path
) -> None:
    """The richest existing agent, run through its workflow: what it is configured with."""
    # The workflow's skills (the existing system kept them on the workflow) reach the model.
    system = request.conversation()[0]
    assert system["role"] == "system"
    assert "Summarise the input." in system["text"] and "Translate to 日本語." in system["text"]
    # Its earlier conversation (tool calls in the OpenAI shape) is the history of this turn.
    assert any(
        ("call_1", "lookup", {"q": "latency"}) in m["tool_calls"] for m in request.conversation()
    )
    # Its stdio MCP server was started as the record says, `{{token:GITHUB_PAT}}` (a token with
    # a created_by) resolved with the migrated token.
    starts = [json.loads(line) for line in npx_starts.read_text().splitlines()]
    assert starts, "the existing stdio MCP server (npx) was never started"
    assert {s["github_token"] for s in starts} == {legacy.secrets["GITHUB_PAT"]}
    assert {s["args"] for s in starts} == {"-y @modelcontextprotocol/server-filesystem /data"}
    # Its external Qdrant (`http://qdrant:6333`) is not reachable from here: the run says so
    # and goes on without knowledge, as it does without an unreachable MCP server.
    warnings = [e["data"].get("message", "") for e in events if e.get("event") == "log"]
    assert any("knowledge not searched" in w and "qdrant" in w for w in warnings), warnings


# ---------------------------------------------------------------------- 2. schedules fire


def _outcomes(report: TickReport, ids: dict[str, str]) -> dict[str, Outcome]:
    """What the tick claimed, by schedule name (`schedule_full`, ...)."""
    names = {v: k for k, v in ids.items()}
    return {names.get(c.schedule_id, c.schedule_id): c.outcome for c in report.claimed}


async def _runs_of(store: DocumentStore, schedule_id: str) -> list[TaskExecution]:
    async with store.unit_of_work(readonly=True) as repos:
        page = await repos.task_executions.list(
            Query(filters=(eq("scheduled_agent_id", schedule_id),), limit=100)
        )
    return list(page.items)


def _scheduler(deployment: Deployment, dispatched: list[str]) -> Scheduler:
    async def dispatch(task_id: str) -> None:
        dispatched.append(task_id)

    return Scheduler(
        deployment.runs, dispatch, scheduler_id="legacy-test", misfire_grace_seconds=300
    )


async def test_existing_schedules_fire_once_and_the_others_do_not(deployment: Deployment) -> None:
    ids = deployment.ids
    full, minutes, expired, old = (
        ids["schedule_full"],
        ids["schedule_minutes"],
        ids["schedule_expired"],
        ids["schedule_old"],
    )
    dispatched: list[str] = []
    scheduler = _scheduler(deployment, dispatched)
    before = {s: len(await _runs_of(deployment.store, s)) for s in (full, minutes, expired, old)}

    # First tick: the schedule whose next run was missed while the existing system was down
    # fires once, now. The one that ended (end_at March 2024) while its last occurrence was due
    # is recorded as missed and does not fire late.
    first = await scheduler.tick(T0)
    assert _outcomes(first, ids) == {
        "schedule_full": Outcome.FIRED,
        "schedule_expired": Outcome.SKIPPED_MISSED,
    }
    [claimed] = first.fired
    task_id = claimed.task_id
    assert task_id is not None
    assert claimed.missed > 0  # the occurrences since May 2024, folded into this one run
    runs = await _runs_of(deployment.store, full)
    assert len(runs) == before[full] + 1
    [new] = [r for r in runs if r.id == task_id]
    assert (new.status, new.workflow_id) == (TaskStatus.PENDING, ids["workflow_full"])
    assert new.prompt == "Check the error budget"
    assert dispatched == [task_id]
    # The run is done (as a worker would finish it), so the next occurrence does not overlap.
    async with deployment.store.unit_of_work() as repos:
        await repos.task_executions.update(task_id, {"status": TaskStatus.COMPLETED})

    # A week later: the old schedule (no `enabled` field, no next run) has had its first
    # occurrence and the six-hourly one its next ones: each fires once.
    later = T0 + timedelta(days=8)
    second = await scheduler.tick(later)
    assert _outcomes(second, ids) == {
        "schedule_full": Outcome.FIRED,
        "schedule_old": Outcome.FIRED,
    }
    [old_run] = await _runs_of(deployment.store, old)
    assert (old_run.status, old_run.workflow_id) == (TaskStatus.PENDING, ids["workflow_completed"])
    assert old_run.prompt == "digest"

    # Nothing more at the same instant: nothing fires twice, nothing is retried in a loop.
    third = await scheduler.tick(later)
    assert third.claimed == []
    assert len(dispatched) == 3
    for schedule_id in (minutes, expired):  # disabled; ended
        assert len(await _runs_of(deployment.store, schedule_id)) == before[schedule_id]
    async with deployment.store.unit_of_work(readonly=True) as repos:
        ended: ScheduledAgent = await repos.scheduled_agents.get(expired)
        disabled: ScheduledAgent = await repos.scheduled_agents.get(minutes)
    assert ended.next_run_at is None  # nothing is due any more
    assert (disabled.enabled, disabled.next_run_at) == (False, None)  # untouched
    history = await deployment.runs.schedule_history(expired)
    assert [(h.outcome, h.task_id) for h in history] == [(Outcome.SKIPPED_MISSED.value, None)]


async def test_a_schedule_of_a_deleted_workflow_is_reported_and_never_fires(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    """The existing system never deleted a workflow's schedules. On PostgreSQL this needs the
    migration to keep them (branch migration-verify drops the foreign key that refused them)."""
    ids = deployment.ids
    orphan = ids["schedule_orphan"]
    async with deployment.store.unit_of_work(readonly=True) as repos:
        kept = await repos.scheduled_agents.find_one(eq("id", orphan))
    assert kept is not None, (
        "the migration did not keep the schedule of the deleted workflow:\n"
        + (deployment.migration.quarantined() if deployment.migration else "")
    )
    assert kept.enabled and kept.workflow_id == ids["workflow_deleted"]
    before = len(await _runs_of(deployment.store, orphan))
    dispatched: list[str] = []
    scheduler = _scheduler(deployment, dispatched)
    caplog.set_level(logging.WARNING, logger="tbd_agents.runtime.scheduler")

    await scheduler.tick(T0)  # its first occurrence after now is set (weekly, no back-fill)
    later = T0 + timedelta(days=8)
    second = await scheduler.tick(later)  # due: reported, not fired; the others still fire
    third = await scheduler.tick(later)
    assert orphan not in {c.schedule_id for c in (*second.claimed, *third.claimed)}
    assert _outcomes(second, ids).get("schedule_old") is Outcome.FIRED
    assert len(await _runs_of(deployment.store, orphan)) == before
    reports = [r.getMessage() for r in caplog.records if orphan in r.getMessage()]
    assert len(reports) == 1, reports  # once for the occurrence, not on every tick
    assert ids["workflow_deleted"] in reports[0] and "does not exist" in reports[0]
    assert "delete the schedule or point it at an existing workflow" in reports[0]
    async with deployment.store.unit_of_work(readonly=True) as repos:
        moved: ScheduledAgent = await repos.scheduled_agents.get(orphan)
    assert moved.next_run_at is not None and moved.next_run_at > later  # its next occurrence


# --------------------------------------------------------------- 3. inactive workflows refuse


async def test_inactive_workflows_of_an_existing_deployment_refuse_prompts(
    deployment: Deployment, hub: Hub
) -> None:
    prompt = "are you there? (an inactive workflow must refuse this)"
    for name in ("workflow_inactive", "workflow_old"):
        workflow = deployment.ids[name]
        # Our /runs answers 409; /prompt answers 400, as the existing API did on that route.
        for path, status in (
            (f"/api/workflows/{workflow}/runs", 409),
            (f"/api/workflows/{workflow}/prompt", 400),
        ):
            refused = await hub.client.post(path, json={"prompt": prompt})
            assert refused.status_code == status, (
                f"{name} {path}: {refused.status_code} {refused.text}"
            )
            assert "set its status to active" in refused.json()["error"]["message"], refused.text
        async with deployment.store.unit_of_work(readonly=True) as repos:
            page = await repos.task_executions.list(
                Query(filters=(eq("workflow_id", workflow),), limit=100)
            )
        assert all(t.prompt != prompt for t in page.items), f"{name}: a run was created"
