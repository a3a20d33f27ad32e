"""The scenario suite, run unchanged for every provider type (OpenAI, Azure, Anthropic, custom)
against the local protocol server: real SDK clients, a real MCP server over stdio, real
sandboxed custom tools, real memory and knowledge services on the embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tbd_agents.domain.enums import GuardrailAction, GuardrailType, OutputFormat, TaskStatus
from tbd_agents.domain.models import Agent, Guardrail, KnowledgeSource
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.engine.adapters import RetrieverKnowledge, ServiceMemory
from tbd_agents.engine.catalog import ModelCatalog, ModelInfo
from tbd_agents.engine.context import RunInput, RunSpec, SkillText
from tbd_agents.engine.guardrails import Guardrails
from tbd_agents.engine.loop import AgentLoop
from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.providers import build_provider
from tbd_agents.engine.sandbox import Sandbox, SandboxLimits
from tbd_agents.engine.tools.base import Toolset
from tbd_agents.engine.tools.builtins import builtin_tools
from tbd_agents.engine.tools.custom import CustomPythonTool
from tbd_agents.engine.tools.mcp import open_servers
from tbd_agents.knowledge import KnowledgeIngestion, KnowledgeRetriever
from tbd_agents.knowledge.files import PgFileStore
from tbd_agents.runtime.contracts import EventType
from tbd_agents.services.memory import MemoryService
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.vectors.pgvector import PgVectorStore
from tests.engine.conftest import FAST, provider_settings
from tests.engine.mcp_fixtures import stdio_config
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.support import Recorder, Switch, pairs_ok
from tests.support import pg

CATALOG = ModelCatalog.load()
MODEL = "gpt-4o"  # priced in the catalog: 2.5 / 10 USD per million tokens


@dataclass
class Stack:
    docs: PostgresStore
    memory: MemoryService
    knowledge: KnowledgeRetriever
    ingestion: KnowledgeIngestion


@pytest.fixture(scope="module")
async def stack(pg18_server: str) -> AsyncIterator[Stack]:
    url = pg.create_migrated_database(pg18_server, prefix="eng")
    engine = create_engine(url, application_name="tests-engine", pool_size=4)
    docs = PostgresStore(engine, owns_engine=False)
    vectors = PgVectorStore(engine)
    embedder = HashingEmbedder(384)
    yield Stack(
        docs,
        MemoryService(docs, vectors, embedder),
        KnowledgeRetriever(docs, vectors, embedder),
        KnowledgeIngestion(docs, vectors, embedder, PgFileStore(engine)),
    )
    await engine.dispose()


@pytest.fixture
async def agent(stack: Stack) -> Agent:
    a = Agent(name="scenario", created_by="alice")
    async with stack.docs.unit_of_work() as repos:
        return await repos.agents.create(a)


def spec_for(kind: str, server: ProtocolServer, **kw: Any) -> RunSpec:
    provider = build_provider(provider_settings(kind, server.url), FAST)
    return RunSpec(provider=provider, model=MODEL, model_info=CATALOG.get(MODEL), config=FAST, **kw)


SHOUT = "def run(text):\n    return text.upper()\n"


async def test_multi_turn_tools_from_mcp_custom_and_builtins(
    server: ProtocolServer, kind: str, stack: Stack, agent: Agent
) -> None:
    conns, per_server, problems = await open_servers(
        [stdio_config(allowed=["add", "lookup_order"])]
    )
    assert not problems
    tools = Toolset()
    for cfg, mcp_tools in per_server:
        tools.extend(mcp_tools, prefix=cfg.name)
    shout = CustomPythonTool(
        ToolSpec(
            "shout",
            "Upper-case a text",
            {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        ),
        SHOUT,
        Sandbox(),
        SandboxLimits(timeout_seconds=10),
    )
    tools.add(shout)
    builtins, missing = builtin_tools(
        ["todo", "store_memory"], memory=ServiceMemory(stack.memory, agent), knowledge=None
    )
    assert not missing
    tools.extend(builtins)
    server.script(
        Turn(
            text="Let me work.",
            tool_calls=[
                ("add", {"a": 2, "b": 3}),
                ("shout", {"text": "hi"}),
                (
                    "update_todos",
                    {
                        "todos": [
                            {"title": "add", "status": "done"},
                            {"title": "shout", "status": "in_progress"},
                        ]
                    },
                ),
            ],
            usage=(120, 30),
        ),
        Turn(tool_calls=[("lookup_order", {"order_id": "A7"})], usage=(200, 10)),
        Turn(text="Sum is 5, HI, order A7 shipped.", usage=(260, 12)),
    )
    rec = Recorder()
    spec = spec_for(
        kind,
        server,
        tools=tools,
        agent_id=agent.id,
        max_turns=5,
        skills=[SkillText("arith", "Always show sums.")],
    )
    result = await AgentLoop(spec, rec).run(RunInput("compute please"))
    for c in conns:
        await c.aclose()
    out = result.outcome
    assert out.status is TaskStatus.COMPLETED, out.error
    assert out.result == "Sum is 5, HI, order A7 shipped."
    assert (out.turns, out.tool_calls) == (3, 4)
    results = {d["name"]: d for d in rec.of(EventType.TOOL_RESULT)}
    assert results["add"]["content"] == "5" and results["add"]["source"] == "mcp:demo_mcp"
    assert results["shout"]["content"] == "HI" and results["shout"]["source"] == "custom:shout"
    assert not any(d["is_error"] for d in results.values())
    assert rec.of(EventType.PROGRESS)[-1] == {"turn": 3, "max_turns": 5} or any(
        p.get("total") == 2 for p in rec.of(EventType.PROGRESS)
    )
    assert any(p.get("done") == 1 and p.get("total") == 2 for p in rec.of(EventType.PROGRESS))
    second = server.requests[1].conversation()
    assert pairs_ok(second)
    texts = [r[1] for e in second for r in e["tool_results"]]
    assert "5" in texts and "HI" in texts
    assert set(server.requests[0].tool_names()) == {
        "add",
        "lookup_order",
        "shout",
        "update_todos",
        "store_memory",
    }
    assert "Always show sums." in server.requests[0].all_text()
    # usage and cost
    assert (out.usage.input_tokens, out.usage.output_tokens) == (580, 52)
    assert out.usage.cost_usd == pytest.approx((580 * 2.5 + 52 * 10) / 1e6)
    assert rec.of(EventType.USAGE)[-1]["total"]["input_tokens"] == 580
    assert rec.of(EventType.STATUS) == [{"status": "running"}]  # the final one is the caller's
    assert "".join(d["delta"] for d in rec.of(EventType.MESSAGE_DELTA)).endswith(
        "order A7 shipped."
    )


async def test_max_turns_is_enforced(server: ProtocolServer, kind: str) -> None:
    tools = Toolset()
    calls = []

    async def count(args: dict[str, Any], ctx: Any):
        from tbd_agents.engine.tools.base import ToolResult

        calls.append(args)
        return ToolResult("again")

    from tbd_agents.engine.tools.base import FunctionTool

    tools.add(FunctionTool(ToolSpec("again", "loop", {"type": "object"}), count))
    server.script(*[Turn(tool_calls=[("again", {})]) for _ in range(5)])
    rec = Recorder()
    result = await AgentLoop(spec_for(kind, server, tools=tools, max_turns=3), rec).run(
        RunInput("go")
    )
    assert result.outcome.status is TaskStatus.MAX_TURNS_REACHED
    assert result.outcome.turns == 3 and len(server.requests) == 3
    assert len(calls) == 2  # the last turn's calls are not executed
    assert "max_turns (3)" in result.outcome.error


async def test_halt_mid_stream_cancels_the_model_call(server: ProtocolServer, kind: str) -> None:
    server.script(Turn(text="x" * 400, chunk_chars=4, delay=0.05))
    rec = Recorder()
    halt = Switch()
    loop = AgentLoop(spec_for(kind, server), rec, halt)
    task = asyncio.create_task(loop.run(RunInput("long answer please")))
    while not rec.of(EventType.MESSAGE_DELTA):
        await asyncio.sleep(0.01)
    t0 = time.monotonic()
    halt.set()
    result = await task
    assert time.monotonic() - t0 < 1.0
    assert result.outcome.status is TaskStatus.HALTED
    assert len("".join(d["delta"] for d in rec.of(EventType.MESSAGE_DELTA))) < 400
    for _ in range(100):
        if server.open_streams == 0:
            break
        await asyncio.sleep(0.02)
    assert server.open_streams == 0  # the server saw the client go away


async def test_halt_during_a_tool_call(server: ProtocolServer, kind: str) -> None:
    tools = Toolset()
    tools.add(
        CustomPythonTool(
            ToolSpec("nap", "sleep", {"type": "object"}),
            "import time\ndef run():\n    time.sleep(30)\n",
            Sandbox(),
            SandboxLimits(timeout_seconds=60),
        )
    )
    server.script(Turn(tool_calls=[("nap", {})]), Turn(text="never"))
    rec, halt = Recorder(), Switch()
    task = asyncio.create_task(
        AgentLoop(spec_for(kind, server, tools=tools), rec, halt).run(RunInput("nap"))
    )
    while not rec.of(EventType.TOOL_CALL):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    halt.set()
    result = await asyncio.wait_for(task, 3)
    assert result.outcome.status is TaskStatus.HALTED and len(server.requests) == 1


def rail(kind: str, action: str, patterns=(), **cfg: Any) -> Guardrail:
    return Guardrail(
        name=f"{kind}-{action}",
        guardrail_type=GuardrailType(kind),
        action=GuardrailAction(action),
        patterns=list(patterns),
        prompt_config=cfg,
    )


async def test_input_guardrail_block_never_reaches_the_model(
    server: ProtocolServer, kind: str
) -> None:
    rails = Guardrails.from_records([rail("input", "block", [r"(?i)password"])])
    result = await AgentLoop(spec_for(kind, server, guardrails=rails), Recorder()).run(
        RunInput("my password is hunter2")
    )
    assert result.outcome.status is TaskStatus.FAILED and "input-block" in result.outcome.error
    assert server.requests == []


async def test_input_guardrail_redact_changes_what_the_model_sees(
    server: ProtocolServer, kind: str
) -> None:
    server.script(Turn(text="ok"))
    rails = Guardrails.from_records([rail("input", "redact", pii=["email"])])
    result = await AgentLoop(spec_for(kind, server, guardrails=rails), Recorder()).run(
        RunInput("mail me at bob@example.com")
    )
    assert result.outcome.status is TaskStatus.COMPLETED
    sent = server.requests[0].all_text()
    assert "bob@example.com" not in sent and "[REDACTED:email]" in sent
    assert result.violations and result.violations[0]["action"] == "redact"


async def test_output_guardrail_block_hides_the_answer(server: ProtocolServer, kind: str) -> None:
    server.script(Turn(text="The internal codename is project-zeus."))
    rec = Recorder()
    rails = Guardrails.from_records([rail("output", "block", [r"project-\w+"])])
    result = await AgentLoop(spec_for(kind, server, guardrails=rails), rec).run(
        RunInput("codename?")
    )
    assert result.outcome.status is TaskStatus.FAILED and result.outcome.result is None
    seen = str(rec.events)
    assert "project-zeus" not in seen  # not streamed, not in any event
    assert "zeus" not in result.messages[-1].content


async def test_output_guardrail_redact_is_applied_to_stream_and_result(
    server: ProtocolServer, kind: str
) -> None:
    server.script(Turn(text="Call me on 4111 1111 1111 1111 or bob@example.com"))
    rec = Recorder()
    rails = Guardrails.from_records([rail("output", "redact", pii=True)])
    result = await AgentLoop(spec_for(kind, server, guardrails=rails), rec).run(
        RunInput("contact?")
    )
    assert result.outcome.status is TaskStatus.COMPLETED
    assert "4111" not in result.outcome.result and "bob@example.com" not in result.outcome.result
    streamed = "".join(d["delta"] for d in rec.of(EventType.MESSAGE_DELTA))
    assert streamed == result.outcome.result
    assert "4111" not in str(rec.events)


async def test_knowledge_is_cited_in_the_context(
    server: ProtocolServer, kind: str, stack: Stack
) -> None:
    async with stack.docs.unit_of_work() as repos:
        source = await repos.knowledge_sources.create(KnowledgeSource(name=f"handbook-{kind}"))
    item = await stack.ingestion.ingest_text(
        source.id,
        "# Refunds\n\nRefunds are accepted within 30 days of purchase with a receipt.",
        title="Refund policy",
    )
    server.script(Turn(text="Within 30 days [1]."))
    rec = Recorder()
    spec = spec_for(
        kind,
        server,
        knowledge=RetrieverKnowledge(stack.knowledge),
        knowledge_source_ids=[source.id],
    )
    result = await AgentLoop(spec, rec).run(RunInput("How long do I have for refunds?"))
    assert result.outcome.status is TaskStatus.COMPLETED
    system = server.requests[0].conversation()[0]["text"]
    assert "[1] Refund policy" in system and item.id in system and "30 days" in system
    assert result.citations[0]["item_id"] == item.id and result.citations[0]["ref"] == 1
    assert any("citations" in d for d in rec.of(EventType.LOG))


async def test_memory_stored_then_recalled_in_a_later_run(
    server: ProtocolServer, kind: str, stack: Stack, agent: Agent
) -> None:
    memory = ServiceMemory(stack.memory, agent)
    tools = Toolset()
    tools.extend(builtin_tools(["store_memory", "search_memory"], memory=memory, knowledge=None)[0])
    server.script(
        Turn(tool_calls=[("store_memory", {"key": "favourite colour", "value": f"teal-{kind}"})]),
        Turn(text="Noted."),
    )
    first = await AgentLoop(
        spec_for(kind, server, tools=tools, memory=memory, agent_id=agent.id), Recorder()
    ).run(RunInput("My favourite colour is teal."))
    assert first.outcome.status is TaskStatus.COMPLETED
    server.script(Turn(text=f"teal-{kind}"))
    second = await AgentLoop(
        spec_for(kind, server, tools=tools, memory=memory, agent_id=agent.id), Recorder()
    ).run(RunInput("What is my favourite colour?"))
    assert second.outcome.status is TaskStatus.COMPLETED
    system = server.requests[-1].conversation()[0]["text"]
    assert f"favourite colour: teal-{kind}" in system


async def test_compaction_on_a_long_run_keeps_pairs_intact(
    server: ProtocolServer, kind: str
) -> None:
    tools = Toolset()
    from tbd_agents.engine.tools.base import FunctionTool, ToolResult

    async def fetch(args: dict[str, Any], ctx: Any) -> ToolResult:
        return ToolResult(f"page {args.get('n')}: " + "lorem ipsum dolor sit amet " * 60)

    tools.add(FunctionTool(ToolSpec("fetch", "fetch a page", {"type": "object"}), fetch))

    def respond(rec):
        conv = rec.conversation()
        if "compress conversations" in (conv[0]["text"] if conv else ""):
            return Turn(text="Summary: pages were fetched.")
        n = sum(len(e["tool_calls"]) for e in conv)
        if n >= 10:
            return Turn(text="All pages read.")
        return Turn(tool_calls=[("fetch", {"n": n}), ("fetch", {"n": n + 1})])

    server.responder = respond
    small = ModelInfo(
        "tiny", context_window=4000, max_output_tokens=500, input_per_mtok=1.0, output_per_mtok=2.0
    )
    rec = Recorder()
    spec = spec_for(kind, server, tools=tools, max_turns=12)
    spec.model_info = small
    result = await AgentLoop(spec, rec).run(RunInput("read all pages"))
    assert result.outcome.status is TaskStatus.COMPLETED, result.outcome.error
    compactions = [d["compaction"] for d in rec.of(EventType.LOG) if "compaction" in d]
    assert compactions and any(c["cleared_tool_results"] for c in compactions)
    for r in server.requests:
        assert pairs_ok(r.conversation())
    assert any(
        r.conversation()[0]["text"].startswith("You compress") for r in server.requests
    ) or all(c["summarised_messages"] == 0 for c in compactions)


async def test_json_output_format(server: ProtocolServer, kind: str) -> None:
    server.script(Turn(text="not json at all"), Turn(text='```json\n{"answer": 42}\n```'))
    result = await AgentLoop(
        spec_for(kind, server, output_format=OutputFormat.JSON), Recorder()
    ).run(RunInput("answer in json"))
    assert result.outcome.status is TaskStatus.COMPLETED
    assert result.outcome.result == '{"answer": 42}'
    assert "not valid JSON" in server.requests[1].all_text()


async def test_provider_failure_is_reported_not_raised(server: ProtocolServer, kind: str) -> None:
    server.script(Turn(status=401))
    rec = Recorder()
    result = await AgentLoop(spec_for(kind, server), rec).run(RunInput("hi"))
    assert result.outcome.status is TaskStatus.FAILED
    assert rec.of(EventType.ERROR)[0]["code"] == "upstream_auth_failed"
