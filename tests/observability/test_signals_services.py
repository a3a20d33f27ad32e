"""Signals of the services around runs, each against the real thing: webhook deliveries to a
local HTTP receiver (both stores), repository syncs from a real git server, memory recall
through pgvector with real embeddings, compaction, and the log context of a run."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import Agent
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.engine.adapters import ServiceMemory
from tbd_agents.engine.catalog import ModelCatalog, ModelInfo
from tbd_agents.engine.compaction import CompactionPolicy
from tbd_agents.engine.context import RunInput, RunSpec
from tbd_agents.engine.loop import AgentLoop
from tbd_agents.engine.messages import Message
from tbd_agents.engine.providers import build_provider
from tbd_agents.engine.workspace import RepoSyncError, WorkspaceConfig, sync_repository
from tbd_agents.observability import logctx
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.outbound import HostPolicy, OutboundPolicy
from tbd_agents.services.memory import MemoryService
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.vectors.pgvector import PgVectorStore
from tests.engine.conftest import FAST, provider_settings
from tests.engine.git_server import GitServer, make_repo
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.support import Recorder
from tests.observability.conftest import Deltas, by_name, one
from tests.runtime.conftest import RtBackend, make_workflow
from tests.support import pg

MODEL = "gpt-4o"


# --- webhooks -------------------------------------------------------------------------------
@dataclass
class Receiver:
    fail_first: int = 0
    hits: int = 0
    port: int = 0

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=hook-secret-in-query"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.hits += 1
            self.send_response(500 if state.hits <= state.fail_first else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


async def delivered(runtime: Runtime, workflow: str, timeout: float = 20) -> None:
    """Until the workflow's delivery is `delivered` (the upkeep loop retries after a backoff)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await runtime.webhooks.list_deliveries(workflow_id=workflow)
        if found and found[0].status == "delivered":
            return
        assert time.monotonic() < deadline, f"not delivered: {found}"
        await asyncio.sleep(0.1)


async def test_webhook_attempts_are_counted_by_outcome_and_traced(
    rt: RtBackend, receiver: Receiver, spans: Any
) -> None:
    receiver.fail_first = 1
    runtime = await rt.runtime(rt.settings(webhook_allowed_hosts="127.0.0.1"))
    deltas = Deltas()
    try:
        workflow = await make_workflow(rt, webhook_url=receiver.url())
        await runtime.start_run(workflow, "emit:1")
        await delivered(runtime, workflow)
    finally:
        await runtime.aclose()
    d = deltas.take()
    assert d("tbd_webhook_deliveries_total", outcome="retrying") == 1
    assert d("tbd_webhook_deliveries_total", outcome="delivered") == 1
    assert d("tbd_webhook_deliveries_total", outcome="failed") == 0
    assert d("tbd_webhook_delivery_duration_seconds_count") == 2
    first, second = sorted(
        by_name(spans.get_finished_spans(), "webhook_delivery"), key=lambda s: s.start_time or 0
    )
    assert (first.attributes or {})["http.response.status_code"] == 500
    assert (first.attributes or {})["tbd.webhook.outcome"] == "retrying"
    assert first.status.status_code is StatusCode.ERROR
    assert (second.attributes or {})["tbd.webhook.outcome"] == "delivered"
    assert (second.attributes or {})["server.address"] == "127.0.0.1"
    assert (second.attributes or {})["tbd.webhook.event"] == "task.completed"
    dumped = repr([dict(s.attributes or {}) for s in (first, second)])
    assert "hook-secret-in-query" not in dumped  # never the URL (its query may hold a token)


# --- repository sync ------------------------------------------------------------------------
TOKEN = "ghp_TestToken0123456789abcdefSECRET"


async def test_repository_syncs_are_counted_and_traced_without_credentials(
    tmp_path: Path, spans: Any
) -> None:
    repo = make_repo(tmp_path / "srv", "project")
    repo.commit({"README.md": "hello\n"}, "first")
    server = GitServer(repo.bare.parent, TOKEN).start()
    cfg = WorkspaceConfig(root=tmp_path / "ws", allow_insecure_urls=True)
    policy = OutboundPolicy(HostPolicy.parse("127.0.0.1"))
    url = f"{server.url}/project.git"
    deltas = Deltas()
    try:
        workspace = await sync_repository(cfg, "wf", url, None, TOKEN, policy)
        with pytest.raises(RepoSyncError):
            await sync_repository(cfg, "wf2", url, None, None, policy)  # no token: refused
    finally:
        server.stop()
    d = deltas.take()
    assert d("repo_sync_total", status="success") == 1
    assert d("repo_sync_total", status="error") == 1
    assert d("repo_sync_duration_seconds_count") == 2
    ok, failed = sorted(
        by_name(spans.get_finished_spans(), "repository_sync"), key=lambda s: s.start_time or 0
    )
    assert (ok.attributes or {})["tbd.repo.host"] == "127.0.0.1"
    assert (ok.attributes or {})["tbd.repo.commit"] == workspace.commit
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "RepoSyncError"
    assert TOKEN not in repr([dict(s.attributes or {}) for s in (ok, failed)])


# --- memory recall, vector search, embeddings, compaction -----------------------------------
@pytest.fixture(scope="module")
def mem_db(pg18_server: str) -> Iterator[Any]:
    url = pg.create_migrated_database(pg18_server, prefix="sigmem")
    yield url
    pg.drop_database(url)


@pytest.fixture
async def memory(mem_db: Any) -> AsyncIterator[tuple[MemoryService, PostgresStore]]:
    engine = create_engine(mem_db, application_name="signals-memory", pool_size=2)
    docs = PostgresStore(engine, owns_engine=False)
    yield MemoryService(docs, PgVectorStore(engine), HashingEmbedder(384)), docs
    await engine.dispose()


async def test_memory_recall_counts_hits_vector_search_and_embeddings(
    memory: tuple[MemoryService, PostgresStore], protocol_server: ProtocolServer, spans: Any
) -> None:
    service, docs = memory
    async with docs.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name="rememberer", created_by="alice"))
    await service.remember(agent, "colour", "Alice likes green")
    protocol_server.reset()
    protocol_server.script(Turn(text="Green."))
    spec = RunSpec(
        provider=build_provider(provider_settings("openai", protocol_server.url), FAST),
        model=MODEL, model_info=ModelCatalog.load().get(MODEL), config=FAST,
        memory=ServiceMemory(service, agent), agent_id=agent.id, owner="alice",
    )  # fmt: skip
    deltas = Deltas()
    result = await AgentLoop(spec, Recorder()).run(RunInput("Which colour does Alice like?"))
    assert result.outcome.status is TaskStatus.COMPLETED
    d = deltas.take()
    assert d("semantic_retrieval_hits_total", type="memory") == 1
    assert d("semantic_retrieval_results_count", type="memory") == 1
    assert d("semantic_retrieval_results_sum", type="memory") == 1
    assert d("semantic_retrieval_hits_total", type="knowledge") == 0
    assert d("tbd_vector_search_duration_seconds_count", backend="pgvector", kind="memory") == 1
    assert d("embeddings_requests_total", status="success") == 1  # the query's embedding
    found = spans.get_finished_spans()
    recall = one(found, "memory_recall")
    assert (recall.attributes or {})["tbd.retrieval.results"] == 1
    search = one(found, "vector_search")
    assert search.parent is not None and search.parent.span_id == recall.context.span_id
    assert (search.attributes or {})["db.system.name"] == "pgvector"


async def test_a_compaction_that_changes_the_context_is_counted(
    protocol_server: ProtocolServer, spans: Any
) -> None:
    """A model with a small context window and a long history: the first turn compacts (a
    summary call, itself a `chat` span under the compaction span), then answers."""
    small = ModelInfo("tiny-model", 2000, 200, 0.0, 0.0)
    history = [
        Message("user" if i % 2 == 0 else "assistant", f"message {i}: " + "words " * 120)
        for i in range(12)
    ]
    protocol_server.reset()
    protocol_server.script(Turn(text="A summary of the talk."), Turn(text="Done."))
    spec = RunSpec(
        provider=build_provider(provider_settings("openai", protocol_server.url), FAST),
        model="tiny-model", model_info=small, config=FAST,
        compaction=CompactionPolicy(threshold=0.8, enabled=True),
    )  # fmt: skip
    deltas = Deltas()
    result = await AgentLoop(spec, Recorder()).run(RunInput("and now?", history=history))
    assert result.outcome.status is TaskStatus.COMPLETED
    d = deltas.take()
    assert d("context_compactions_total", model="tiny-model") == 1
    assert d("context_compaction_messages_dropped_count", model="tiny-model") == 1
    assert d("context_compaction_messages_dropped_sum", model="tiny-model") > 0
    compaction = [
        s for s in by_name(spans.get_finished_spans(), "context_compaction")
        if (s.attributes or {}).get("tbd.compaction.changed")
    ]  # fmt: skip
    assert len(compaction) == 1


# --- log context ----------------------------------------------------------------------------
class _Fields(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("tests.observability.logged"):
            self.seen.append(logctx.current())


async def test_log_lines_inside_a_run_carry_its_ids(rt: RtBackend) -> None:
    """A custom executor logs from inside the run: the record's context names the run."""
    logged = logging.getLogger("tests.observability.logged")
    handler = _Fields()
    logging.getLogger().addHandler(handler)

    class Logging:
        async def execute(self, task: Any, sink: Any, halt: Any) -> Any:
            from tbd_agents.runtime.contracts import RunOutcome

            logged.warning("inside the run")
            return RunOutcome(TaskStatus.COMPLETED, result="ok")

        async def aclose(self) -> None:
            return None

    workflow = await make_workflow(rt)
    runtime = await Runtime.open(rt.settings(), rt.db, role="api", store=rt.store,
                                 executor=Logging())  # fmt: skip
    try:
        task = await runtime.runs.create_run(workflow, "hi")
        await runtime.execute(task.id)
    finally:
        await runtime.aclose(drain_seconds=5)
        logging.getLogger().removeHandler(handler)
    assert handler.seen == [
        {"run_id": task.id, "task_id": task.id, "agent_id": task.agent_id,
         "workflow_id": workflow}
    ]  # fmt: skip
    assert logctx.current() == {}  # nothing left bound after the run
