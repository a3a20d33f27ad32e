"""Signals of a workflow run, end to end: the runtime (in-process) runs the real engine against
the local protocol server (real OpenAI SDK) with a built-in tool and a real MCP server over
streamable HTTP, on PostgreSQL. Asserts the exact Prometheus deltas of the run, the span tree
(API span → run span → model calls and tool calls) with its GenAI attributes, that no content
is captured unless TRACE_CAPTURE_CONTENT is on, and that the traceparent stored with the run
is the parent of the run span."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from cryptography.fernet import Fernet
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from tbd_agents.config import Settings
from tbd_agents.domain.enums import ProviderType, TaskStatus
from tbd_agents.domain.models import Agent, McpServer, Provider, Token, Workflow
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.runtime import leases
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.mcp_fixtures import http_server
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.observability.conftest import Deltas, by_name, one
from tests.support import pg

FERNET = f"1:{Fernet.generate_key().decode()}"
MODEL = "gpt-4o"
TODOS = [{"id": 1, "title": "add the numbers", "status": "in-progress"}]


@pytest.fixture(scope="module")
def sig_db(pg18_server: str) -> Iterator[Any]:
    url = pg.create_migrated_database(pg18_server, prefix="sig")
    yield url
    pg.drop_database(url)


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    with http_server("streamable-http") as url:
        yield url


@asynccontextmanager
async def runtime_of(url: Any, **overrides: Any) -> AsyncIterator[tuple[Runtime, PostgresStore]]:
    settings = Settings(
        **{
            "postgres_uri": url.render_as_string(hide_password=False),
            "token_encryption_key": FERNET,
            "outbound_allowed_hosts": "127.0.0.1",
            "redis_url": None,
            "run_lease_seconds": 5.0,
            "embedding_provider": "hashing",
            **overrides,
        }
    )
    engine = create_engine(url, application_name="signals-tests", pool_size=4)
    store = PostgresStore(engine, owns_engine=False)
    rt = await Runtime.open(settings, engine, role="api", store=store)
    await rt.start()
    try:
        yield rt, store
    finally:
        await rt.aclose(drain_seconds=5)
        await engine.dispose()


async def seed(store: PostgresStore, url: str, mcp_url: str, server_name: str) -> Workflow:
    """alice's agent on the protocol server with `manage_todo_list` and the MCP server's `add`."""
    value, version = KeyRingProvider(Settings(token_encryption_key=FERNET)).cipher().encrypt("sk")
    async with store.unit_of_work() as repos:
        key = f"k-{server_name}"
        await repos.tokens.create(
            Token(name=key, encrypted_value=value, key_version=version, created_by="alice")
        )
        provider = await repos.providers.create(
            Provider(name=f"p-{server_name}", provider_type=ProviderType.OPENAI,
                     api_key_token_name=key, base_url=f"{url}/v1", created_by="alice")
        )  # fmt: skip
        server = await repos.mcp_servers.create(
            McpServer.model_validate(
                {"name": server_name, "transport_type": "http",
                 "connection_config": {"url": mcp_url, "headers": {}},
                 "allowed_tools": ["add"], "created_by": "alice"}
            )
        )  # fmt: skip
        agent = await repos.agents.create(
            Agent(name="signals agent", model=MODEL, provider_id=provider.id, created_by="alice",
                  builtin_tools=["manage_todo_list"], mcp_server_ids=[server.id])
        )  # fmt: skip
        return await repos.workflows.create(
            Workflow(agent_id=agent.id, title="signals", github_user="alice", max_turns=4)
        )


async def finish(rt: Runtime, task_id: str) -> None:
    async def drain() -> None:
        async for _ in rt.follow(task_id, 0):
            pass

    await asyncio.wait_for(drain(), 60)


def script(server: ProtocolServer) -> None:
    server.script(
        Turn(tool_calls=[("manage_todo_list", {"todoList": TODOS}), ("add", {"a": 2, "b": 3})],
             usage=(120, 30)),
        Turn(text="It is 5.", usage=(200, 10)),
    )  # fmt: skip


async def test_a_run_counts_its_series_and_traces_its_tree(
    sig_db: Any, protocol_server: ProtocolServer, mcp_url: str, spans: Any
) -> None:
    protocol_server.reset()
    async with runtime_of(sig_db) as (rt, store):
        wf = await seed(store, protocol_server.url, mcp_url, "calc-signals")
        script(protocol_server)
        deltas = Deltas()
        active_before = deltas.before[("agent_tasks_active", ())]
        tracer = trace.get_tracer("tests")
        with tracer.start_as_current_span("POST /api/workflows/{id}/prompt") as api_span:
            task = await rt.start_run(wf.id, "What is 2+3?")
        await finish(rt, task.id)
        row = await leases.load(rt.db, task.id)
    assert row is not None and row.status is TaskStatus.COMPLETED, row and row.error
    d = deltas.take()
    model = {"model": MODEL}

    # --- the existing series ---
    assert d("agent_tasks_total", status="completed", reasoning_effort="none", **model) == 1
    assert d("agent_task_duration_seconds_count", status="completed", **model) == 1
    assert d("tool_calls_per_task_count", **model) == 1
    assert d("tool_calls_per_task_sum", **model) == 2
    assert d("copilot_hub_tokens_total", direction="input", **model) == 320
    assert d("copilot_hub_tokens_total", direction="output", **model) == 40
    cost = ModelCatalog.load().get(MODEL).cost(320, 40)
    assert d("cost_dollars_total", **model) == pytest.approx(cost)
    assert d("cost_per_task_dollars_count", **model) == 1
    assert d("cost_per_task_dollars_sum", **model) == pytest.approx(cost)
    assert d("premium_requests_total", **model) == 0  # not a Copilot provider
    assert d("tool_calls_total", tool_name="add") == 1
    assert d("tool_calls_total", tool_name="manage_todo_list") == 1
    assert d("mcp_connections_total", server_name="calc-signals") == 1
    assert d.after[("agent_tasks_active", ())] == active_before  # back down after the run
    # --- ours ---
    labels = {"provider_type": "openai", **model}
    assert d("tbd_provider_requests_total", outcome="ok", **labels) == 2
    assert d("tbd_provider_requests_total", outcome="error", **labels) == 0
    assert d("tbd_provider_request_duration_seconds_count", **labels) == 2
    assert d("tbd_provider_time_to_first_token_seconds_count", **labels) == 2
    assert d("tbd_tool_call_duration_seconds_count", origin="mcp", outcome="ok") == 1
    assert d("tbd_tool_call_duration_seconds_count", origin="builtin", outcome="ok") == 1
    assert d("tbd_run_dispatches_total", outcome="queued") == 1

    # --- the span tree ---
    found = spans.get_finished_spans()
    run = one(found, "invoke_agent signals agent")
    assert run.parent is not None
    assert run.parent.span_id == api_span.get_span_context().span_id
    assert run.context.trace_id == api_span.get_span_context().trace_id
    assert row.trace_parent is not None
    assert row.trace_parent.split("-")[2] == format(api_span.get_span_context().span_id, "016x")
    attrs = run.attributes or {}
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["gen_ai.agent.name"] == "signals agent"
    assert attrs["gen_ai.agent.id"] == wf.agent_id
    assert attrs["tbd.task.id"] == task.id
    assert attrs["tbd.workflow.id"] == wf.id
    assert attrs["tbd.trigger"] == "api"
    assert attrs["tbd.task.status"] == "completed"

    calls = by_name(found, f"chat {MODEL}")
    assert len(calls) == 2
    for call in calls:
        assert call.parent is not None and call.parent.span_id == run.context.span_id
        assert call.kind is SpanKind.CLIENT
        a = call.attributes or {}
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == MODEL
        assert a["gen_ai.response.model"] == MODEL
        assert a["gen_ai.request.max_tokens"] > 0
        assert call.events == ()  # no content by default
    first, second = sorted(calls, key=lambda s: s.start_time or 0)
    assert (first.attributes or {})["gen_ai.usage.input_tokens"] == 120
    assert (first.attributes or {})["gen_ai.usage.output_tokens"] == 30
    assert tuple((first.attributes or {})["gen_ai.response.finish_reasons"]) == ("tool_calls",)
    assert (second.attributes or {})["gen_ai.usage.input_tokens"] == 200

    add = one(found, "execute_tool add")
    todo = one(found, "execute_tool manage_todo_list")
    for tool in (add, todo):
        assert tool.parent is not None and tool.parent.span_id == run.context.span_id
        a = tool.attributes or {}
        assert a["gen_ai.operation.name"] == "execute_tool"
        assert "gen_ai.tool.call.arguments" not in a and "gen_ai.tool.call.result" not in a
        assert a["gen_ai.tool.call.id"]
    assert (add.attributes or {})["tbd.tool.origin"] == "mcp"
    assert (add.attributes or {})["tbd.mcp.server.name"] == "calc-signals"
    assert (todo.attributes or {})["tbd.tool.origin"] == "builtin"
    assert add.status.status_code is not StatusCode.ERROR
    # nothing of the prompt or the answer anywhere in the run's spans
    dumped = json.dumps([dict(s.attributes or {}) for s in found], default=str)
    assert "What is 2+3?" not in dumped and "It is 5." not in dumped


async def test_content_is_captured_only_when_the_setting_is_on(
    sig_db: Any, protocol_server: ProtocolServer, mcp_url: str, spans: Any
) -> None:
    protocol_server.reset()
    async with runtime_of(sig_db, trace_capture_content=True) as (rt, store):
        wf = await seed(store, protocol_server.url, mcp_url, "calc-content")
        script(protocol_server)
        task = await rt.start_run(wf.id, "What is 2+3?")
        await finish(rt, task.id)
    found = spans.get_finished_spans()
    first, second = sorted(by_name(found, f"chat {MODEL}"), key=lambda s: s.start_time or 0)
    names = [e.name for e in first.events]
    assert names[0] == "gen_ai.system.message" and "gen_ai.user.message" in names
    assert names[-1] == "gen_ai.choice"
    user = next(e for e in first.events if e.name == "gen_ai.user.message")
    assert (user.attributes or {})["content"] == "What is 2+3?"
    assert "gen_ai.tool.message" in [e.name for e in second.events]
    choice = second.events[-1]
    assert (choice.attributes or {})["content"] == "It is 5."
    add = (one(found, "execute_tool add").attributes) or {}
    assert json.loads(str(add["gen_ai.tool.call.arguments"])) == {"a": 2, "b": 3}
    assert add["gen_ai.tool.call.result"] == "5"
    # no parent span when the run was started outside any span: the run is a trace root
    run = one(found, "invoke_agent signals agent")
    assert run.parent is None
