"""What the settings of the existing TBD Agents change in a run: prompt budgets, the clip on tool
descriptions, compaction switches and summary cap, Anthropic max_tokens — through the real SDKs
against the local protocol server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.engine.catalog import ModelCatalog, ModelInfo
from tbd_agents.engine.compaction import SUMMARY_PREFIX, CompactionPolicy
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.context import Budgets, RunInput, RunSpec, SkillText, assemble_system_prompt
from tbd_agents.engine.loop import AgentLoop
from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.providers import build_provider
from tbd_agents.engine.sources import MemoryItem, Passage
from tbd_agents.engine.tokens import count_text
from tbd_agents.engine.tools.base import FunctionTool, ToolResult, Toolset
from tbd_agents.runtime.contracts import EventType
from tests.engine.conftest import FAST, provider_settings
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.support import Recorder

CATALOG = ModelCatalog.load()
MODEL = "gpt-4o"
TINY = ModelInfo(
    "tiny", context_window=4000, max_output_tokens=500, input_per_mtok=1.0, output_per_mtok=2.0
)


def spec_for(kind: str, server: ProtocolServer, config: EngineConfig = FAST, **kw: Any) -> RunSpec:
    provider = build_provider(provider_settings(kind, server.url), config)
    return RunSpec(
        provider=provider, model=MODEL, model_info=CATALOG.get(MODEL), config=config, **kw
    )


def _passage(i: int, text: str) -> Passage:
    return Passage(source_id="s1", item_id=f"i{i}", chunk_index=0, text=text, title=f"doc {i}")


def test_the_context_budget_bounds_the_whole_prompt_and_keeps_the_format_policy(
    server: ProtocolServer,
) -> None:
    words = "alpha beta gamma delta epsilon " * 400
    budgets = Budgets.from_config(replace(FAST, prompt_context_chars=2400))  # 600 tokens
    spec = spec_for(
        "openai",
        server,
        system_prompt="You are terse. " + words,
        skills=[SkillText("s", words)],
        budgets=budgets,
    )
    prompt, citations = assemble_system_prompt(
        spec, [_passage(1, words)], [MemoryItem("colour", "teal")]
    )
    assert count_text(prompt) <= 600
    assert prompt.startswith("You are terse.") and "[truncated]" in prompt
    assert prompt.endswith("Answer in plain text, without Markdown formatting.")
    assert citations == []  # the agent's own prompt used the room: no passage made it in

    roomy = replace(budgets, context_tokens=2000)
    spec.system_prompt = "You are terse."
    prompt, citations = assemble_system_prompt(
        replace(spec, budgets=roomy, skills=[]),
        [_passage(1, "short passage")],
        [MemoryItem("k", "v")],
    )
    assert "short passage" in prompt and "- k: v" in prompt and len(citations) == 1
    unbounded, _ = assemble_system_prompt(
        replace(spec, budgets=Budgets(), system_prompt=words), [], []
    )
    assert count_text(unbounded) > 600  # without the setting the agent's prompt is whole


def test_the_item_limit_clips_each_passage_and_memory(server: ProtocolServer) -> None:
    long = "lorem ipsum dolor sit amet " * 200
    budgets = Budgets.from_config(replace(FAST, prompt_item_chars=200))  # 50 tokens
    spec = spec_for("openai", server, budgets=budgets)
    prompt, citations = assemble_system_prompt(
        spec, [_passage(1, long), _passage(2, "second")], [MemoryItem("notes", long)]
    )
    assert len(citations) == 2 and "second" in prompt  # the first no longer crowds it out
    memory_line = next(line for line in prompt.splitlines() if line.startswith("- notes: "))
    assert count_text(memory_line) <= 60 and memory_line.endswith("[truncated]")


async def test_tool_descriptions_are_clipped_for_the_model(server: ProtocolServer) -> None:
    server.reset()
    long = "Fetches a page of the catalogue, with every detail one could want. " * 5
    params = {
        "type": "object",
        "properties": {
            "description": {"type": "string", "description": long},  # a property so named
            "n": {"type": "integer", "description": "short"},
        },
    }

    async def fetch(args: dict[str, Any], ctx: Any) -> ToolResult:
        return ToolResult("ok")

    tools = Toolset()
    tools.add(FunctionTool(ToolSpec("fetch", long, params), fetch))
    server.script(Turn(text="done"))
    config = replace(FAST, tool_description_max_chars=40)
    await AgentLoop(spec_for("openai", server, config, tools=tools), Recorder()).run(RunInput("x"))
    [tool] = server.requests[0].body["tools"]
    function = tool["function"]
    assert len(function["description"]) == 40 and function["description"].endswith("…")
    props = function["parameters"]["properties"]
    assert len(props["description"]["description"]) == 40 and props["n"]["description"] == "short"
    assert tools.specs()[0].description == long  # the tool itself is unchanged


async def test_anthropic_max_tokens_setting(server: ProtocolServer) -> None:
    server.reset()
    server.script(Turn(text="hi"), Turn(text="hi"))
    await AgentLoop(spec_for("anthropic", server), Recorder()).run(RunInput("x"))
    config = replace(FAST, anthropic_max_tokens=1234)
    await AgentLoop(spec_for("anthropic", server, config), Recorder()).run(RunInput("x"))
    first, second = (r.body["max_tokens"] for r in server.requests)
    assert first != 1234 and second == 1234


def _long_run(server: ProtocolServer, summary: str) -> Toolset:
    fetched: list[Any] = []

    async def fetch(args: dict[str, Any], ctx: Any) -> ToolResult:
        fetched.append(args.get("n"))
        return ToolResult(f"page {args.get('n')}: " + "lorem ipsum dolor sit amet " * 60)

    tools = Toolset()
    tools.add(FunctionTool(ToolSpec("fetch", "fetch a page", {"type": "object"}), fetch))

    def respond(rec: Any) -> Turn:
        conv = rec.conversation()
        if "compress conversations" in (conv[0]["text"] if conv else ""):
            return Turn(text=summary)
        n = len(fetched)
        if n >= 12:
            return Turn(text="All pages read.")
        return Turn(tool_calls=[("fetch", {"n": n}), ("fetch", {"n": n + 1})])

    server.reset()
    server.responder = respond
    return tools


async def _run(server: ProtocolServer, policy: CompactionPolicy, summary: str) -> list[Any]:
    tools = _long_run(server, summary)
    rec = Recorder()
    spec = spec_for("openai", server, tools=tools, max_turns=10, compaction=policy)
    spec.model_info = TINY
    result = await AgentLoop(spec, rec).run(RunInput("read all pages"))
    assert result.outcome.status is TaskStatus.COMPLETED, result.outcome.error
    return [d["compaction"] for d in rec.of(EventType.LOG) if "compaction" in d]


async def test_compaction_can_be_switched_off(server: ProtocolServer) -> None:
    assert await _run(server, CompactionPolicy(), "Summary.")  # this run needs compaction
    assert await _run(server, CompactionPolicy(enabled=False), "Summary.") == []
    last = server.requests[-1].all_text()
    assert "cleared to save context" not in last and last.count("page ") >= 12


async def test_without_clearing_compaction_summarises_and_caps_the_summary(
    server: ProtocolServer,
) -> None:
    long_summary = "Summary: " + "pages were fetched and read. " * 100
    policy = CompactionPolicy(clear_tool_results=False, summary_max_chars=200)
    compactions = await _run(server, policy, long_summary)
    assert compactions and all(c["cleared_tool_results"] == 0 for c in compactions)
    assert any(c["summarised_messages"] for c in compactions)
    asks = [r for r in server.requests if r.all_text().startswith("You compress")]
    assert asks and "Write at most 200 characters." in asks[0].all_text()
    summaries = [
        m["text"]
        for r in server.requests
        for m in r.conversation()
        if m.get("text", "").startswith(SUMMARY_PREFIX)
    ]
    assert summaries and all(len(s) <= len(SUMMARY_PREFIX) + 200 for s in summaries)
