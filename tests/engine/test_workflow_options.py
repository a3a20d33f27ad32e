"""Workflow options through the real agent loop, against the local protocol server (real openai
and anthropic SDK clients): what the model received (system prompt, tools, tool results,
request parameters) for caveman, auto_memory, bypass_memory, tsv_tool_results, short-term
memory, reasoning_effort and an MCP server's manage_todo_list. The runtime paths (workflow
executor, schedules, the progress endpoint, session timeout, credential overrides) are in
test_workflow_runs.py."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import Agent, KnowledgeSource
from tbd_agents.engine.adapters import RetrieverKnowledge, ServiceMemory
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.engine.context import RunInput, RunSpec
from tbd_agents.engine.loop import AgentLoop
from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.options import AUTO_MEMORY_POLICY, CAVEMAN_POLICY, RunOptions
from tbd_agents.engine.providers import build_provider
from tbd_agents.engine.tools.base import FunctionTool, ToolContext, ToolResult, Toolset
from tbd_agents.engine.tools.builtins import builtin_tools
from tbd_agents.engine.tools.mcp import open_servers
from tbd_agents.runtime.contracts import EventType
from tbd_agents.services.memory import MemoryService
from tbd_agents.storage.postgres.schema_vectors import memory_vectors
from tests.engine.conftest import FAST, provider_settings
from tests.engine.mcp_fixtures import stdio_config
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.support import Recorder
from tests.engine.test_scenarios import Stack, agent, stack  # noqa: F401 - their fixtures

CATALOG = ModelCatalog.load()
KINDS = ("openai", "anthropic")

VERBOSE_MEMORY = (
    "It is important to note that the user really prefers the answers to be very short, and "
    "the deploy target is /srv/app/current"
)


@pytest.fixture
def mem(request: pytest.FixtureRequest) -> tuple[Stack, Agent]:
    """The scenario tests' stack (PostgreSQL + pgvector, hashing embedder) and a fresh agent."""
    return request.getfixturevalue("stack"), request.getfixturevalue("agent")


def spec_of(kind: str, server: ProtocolServer, model: str = "gpt-4o", **kw: Any) -> RunSpec:
    provider = build_provider(provider_settings(kind, server.url), FAST)
    kw.setdefault("config", FAST)
    return RunSpec(provider=provider, model=model, model_info=CATALOG.get(model), **kw)


def system_of(server: ProtocolServer, n: int = 0) -> str:
    conversation = server.requests[n].conversation()
    return str(conversation[0]["text"]) if conversation[0]["role"] == "system" else ""


@pytest.mark.parametrize("kind", KINDS)
async def test_caveman_adds_the_policy_and_compresses_knowledge_and_memories(
    server: ProtocolServer, kind: str, mem: tuple[Stack, Agent]
) -> None:
    scenario_stack, scenario_agent = mem
    async with scenario_stack.docs.unit_of_work() as repos:
        source = await repos.knowledge_sources.create(KnowledgeSource(name=f"cave-{kind}"))
    passage = (
        "# Refunds\n\nIt is important to note that refunds are really accepted within 30 days "
        "of the purchase, in order to keep the customers happy. See https://shop.example/refunds."
    )
    await scenario_stack.ingestion.ingest_text(source.id, passage, title="Refund policy")
    await scenario_stack.memory.remember(scenario_agent, f"style_{kind}", VERBOSE_MEMORY)
    memory = ServiceMemory(scenario_stack.memory, scenario_agent)
    for caveman in (False, True):
        server.reset()
        server.script(Turn(text="30 days [1]."))
        spec = spec_of(
            kind, server, agent_id=scenario_agent.id, memory=memory,
            knowledge=RetrieverKnowledge(scenario_stack.knowledge), knowledge_source_ids=[source.id],
            options=RunOptions(caveman=caveman),
        )  # fmt: skip
        result = await AgentLoop(spec, Recorder()).run(RunInput("How long for refunds?"))
        assert result.outcome.status is TaskStatus.COMPLETED
        system = system_of(server)
        assert (CAVEMAN_POLICY in system) is caveman
        assert "[1] Refund policy" in system  # the citation marker and title stay
        assert "https://shop.example/refunds" in system and "30 days" in system
        assert "/srv/app/current" in system
        assert ("It is important to note" in system) is not caveman
        assert ("user really prefers" in system) is not caveman


async def test_auto_memory_offers_store_memory_and_bypass_memory_removes_memory(
    server: ProtocolServer, mem: tuple[Stack, Agent]
) -> None:
    scenario_stack, scenario_agent = mem
    await scenario_stack.memory.remember(scenario_agent, "deploy_target", "/srv/app/current")
    memory = ServiceMemory(scenario_stack.memory, scenario_agent)

    async def run(options: RunOptions, listed: list[str]) -> list[str]:
        server.reset()
        server.script(Turn(text="ok"))
        mem = None if options.bypass_memory else memory  # what builder.open_plan does
        tools = Toolset()
        tools.extend(
            builtin_tools(
                options.builtin_names(listed, mem is not None), memory=mem, knowledge=None
            )[0]
        )
        spec = spec_of(
            "openai", server, agent_id=scenario_agent.id, memory=mem, tools=tools, options=options
        )
        result = await AgentLoop(spec, Recorder()).run(RunInput("Where do we deploy?"))
        assert result.outcome.status is TaskStatus.COMPLETED
        return server.requests[0].tool_names()

    assert await run(RunOptions(auto_memory=True), []) == ["store_memory"]
    assert AUTO_MEMORY_POLICY in system_of(server)
    assert "deploy_target" in system_of(server)
    assert await run(RunOptions(), []) == []
    assert AUTO_MEMORY_POLICY not in system_of(server)
    listed = ["store_memory", "search_memory"]
    assert await run(RunOptions(bypass_memory=True, auto_memory=True), listed) == []
    system = system_of(server)
    assert "deploy_target" not in system and "/srv/app/current" not in system
    assert AUTO_MEMORY_POLICY not in system


async def test_the_agents_recent_memories_join_the_semantic_hits(
    server: ProtocolServer, mem: tuple[Stack, Agent]
) -> None:
    scenario_stack, scenario_agent = mem
    for i in range(4):
        await scenario_stack.memory.remember(
            scenario_agent, f"fact_{i}", f"unrelated fact number {i}"
        )
    memory = ServiceMemory(scenario_stack.memory, scenario_agent)
    one_hit = replace(FAST, memory_results=1)
    for stm, expected in ((20, 4), (0, 1)):
        server.reset()
        server.script(Turn(text="ok"))
        spec = spec_of("openai", server, agent_id=scenario_agent.id, memory=memory,
                       config=replace(one_hit, stm_max_entries=stm))  # fmt: skip
        spec.budgets = replace(spec.budgets, memory_results=1)
        rec = Recorder()
        await AgentLoop(spec, rec).run(RunInput("zebra quantum"))
        loaded = rec.of(EventType.LOG)
        keys = next(e["memories"] for e in loaded if e.get("event") == "memories_loaded")
        assert len(keys) == expected and len(set(keys)) == expected
        assert sum(f"fact_{i}" in system_of(server) for i in range(4)) == expected


ROWS = [{"id": i, "name": f"widget {i}", "price": 9.5 + i} for i in range(1, 9)]


async def _rows(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    return ToolResult(json.dumps({"count": len(ROWS), "results": ROWS}))


@pytest.mark.parametrize("kind", KINDS)
async def test_tsv_tool_results_reach_the_model_as_tsv(server: ProtocolServer, kind: str) -> None:
    for tsv in (False, True):
        server.reset()
        server.script(Turn(tool_calls=[("list_widgets", {})]), Turn(text="8 widgets."))
        tools = Toolset()
        tools.add(FunctionTool(ToolSpec("list_widgets", "List widgets", {"type": "object"}), _rows))
        spec = spec_of(kind, server, tools=tools, options=RunOptions(tsv_tool_results=tsv))
        rec = Recorder()
        result = await AgentLoop(spec, rec).run(RunInput("How many widgets?"))
        assert result.outcome.status is TaskStatus.COMPLETED
        fed = next(r for e in server.requests[1].conversation() for r in e["tool_results"])[1]
        event = rec.of(EventType.TOOL_RESULT)[0]
        if tsv:
            assert fed.split("\n")[:3] == ["count: 8", "id\tname\tprice", "1\twidget 1\t10.5"]
            assert event["rendered_as"] == "tsv" and event["content"] == fed
        else:
            assert json.loads(fed)["results"] == ROWS and "rendered_as" not in event


@pytest.mark.parametrize(
    ("model", "effort", "sent"),
    [("o3-mini", "high", "high"), ("gpt-5-mini", "low", "low"), ("gpt-4o", "high", None)],
)
async def test_reasoning_effort_is_sent_to_reasoning_models_only(
    server: ProtocolServer, model: str, effort: str, sent: str | None
) -> None:
    server.script(Turn(text="ok"))
    spec = spec_of("openai", server, model=model, options=RunOptions(reasoning_effort=effort))
    await AgentLoop(spec, Recorder()).run(RunInput("hi"))
    body = server.requests[0].body
    assert body.get("reasoning_effort") == sent
    assert ("max_completion_tokens" in body) is (sent is not None)
    assert ("max_tokens" in body) is (sent is None)


@pytest.mark.parametrize(
    ("model", "budget"), [("claude-sonnet-4-5", 16384), ("claude-3-5-haiku-latest", None)]
)
async def test_reasoning_effort_is_a_thinking_budget_on_anthropic_thinking_models(
    server: ProtocolServer, model: str, budget: int | None
) -> None:
    """More in test_anthropic_thinking.py (tool turns, temperature, the workflow executor)."""
    server.script(Turn(text="ok"))
    spec = spec_of("anthropic", server, model=model, options=RunOptions(reasoning_effort="high"))
    result = await AgentLoop(spec, Recorder()).run(RunInput("hi"))
    assert result.outcome.status is TaskStatus.COMPLETED
    body = server.requests[0].body
    assert body.get("thinking", {}).get("budget_tokens") == budget
    assert "reasoning_effort" not in body


async def test_an_mcp_servers_manage_todo_list_is_watched_as_progress(
    server: ProtocolServer,
) -> None:
    conns, per_server, problems = await open_servers([stdio_config("todo_mcp.py")])
    assert not problems
    try:
        tools = Toolset()
        for cfg, mcp_tools in per_server:
            tools.extend(mcp_tools, prefix=cfg.name)
        todo = [{"id": 1, "title": "plan", "status": "completed"},
                {"id": 2, "title": "build", "status": "in-progress"}]  # fmt: skip
        server.script(Turn(tool_calls=[("manage_todo_list", {"todoList": todo})]), Turn(text="ok"))
        rec = Recorder()
        result = await AgentLoop(spec_of("openai", server, tools=tools), rec).run(RunInput("go"))
        assert result.outcome.status is TaskStatus.COMPLETED
        assert "2 todos noted" in rec.of(EventType.TOOL_RESULT)[0]["content"]
        progress = [e for e in rec.of(EventType.PROGRESS) if "todos" in e]
        assert progress == [{"todos": todo, "current_step": 2, "percent_complete": 0.5}]
    finally:
        for conn in conns:
            await conn.aclose()


async def test_the_ltm_cap_evicts_the_oldest_memories_with_their_vectors(
    mem: tuple[Stack, Agent],
) -> None:
    """MEMORY_MAX_PER_AGENT (the existing LTM_MAX_ENTRIES) on PostgreSQL: the evicted memory's
    row in memory_vectors goes too (the existing system left vectors behind)."""
    scenario_stack, scenario_agent = mem
    capped = MemoryService(
        scenario_stack.docs, scenario_stack.memory.vectors, scenario_stack.memory.embedder,
        max_per_agent=2,
    )  # fmt: skip
    for i in range(3):
        await capped.remember(scenario_agent, f"ltm_{i}", f"long-term fact {i}")
    async with scenario_stack.docs.engine.connect() as conn:
        rows = await conn.execute(
            select(memory_vectors.c.key).where(memory_vectors.c.agent_id == scenario_agent.id)
        )
        vector_keys = sorted(r.key for r in rows)
    assert vector_keys == ["ltm_1", "ltm_2"]
    recent = await capped.recent(scenario_agent, 10)
    assert sorted(m.key for m in recent) == ["ltm_1", "ltm_2"]
