"""Anthropic extended thinking from `reasoning_effort`: the real `anthropic` SDK through our
provider against the local protocol server (which streams thinking blocks with signatures), the
agent loop across a tool turn, the workflow executor path on PostgreSQL, and the pieces the loop
relies on (budgets, the wire form, stored messages, compaction)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest

from tbd_agents.domain.enums import ProviderType, TaskStatus
from tbd_agents.domain.models import Agent, Provider, Workflow
from tbd_agents.engine import thinking
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.engine.compaction import CompactionPolicy, compact
from tbd_agents.engine.context import RunInput, RunSpec
from tbd_agents.engine.loop import AgentLoop
from tbd_agents.engine.messages import Message, ToolCall, ToolSpec
from tbd_agents.engine.options import RunOptions
from tbd_agents.engine.providers import build_provider
from tbd_agents.engine.providers.anthropic import to_wire
from tbd_agents.engine.tools.base import FunctionTool, ToolContext, ToolResult, Toolset
from tbd_agents.runtime.contracts import EventType
from tests.engine.conftest import FAST, provider_settings
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.support import Recorder
from tests.engine.test_workflow_runs import add_token, finish, runs_db, runtime_of  # noqa: F401

CATALOG = ModelCatalog.load()
THOUGHT_1 = "The user wants the weather; I should call the lookup tool first."
THOUGHT_2 = "The tool said sunny, so I can answer now."
SIG_1 = "EqQBCkYIARgCKkBsig-one"
SIG_2 = "EqQBCkYIARgCKkBsig-two"


async def _lookup(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    return ToolResult(f"{args.get('city')}: sunny, 21 C")


def spec_of(server: ProtocolServer, model: str, **kw: Any) -> RunSpec:
    provider = build_provider(provider_settings("anthropic", server.url), kw.pop("config", FAST))
    tools = Toolset()
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools.add(FunctionTool(ToolSpec("lookup", "Weather of a city", schema), _lookup))
    return RunSpec(
        provider=provider,
        model=model,
        model_info=CATALOG.get(model),
        config=FAST,
        tools=tools,
        **kw,
    )


def tool_turns() -> tuple[Turn, Turn]:
    return (
        Turn(
            thinking=[(THOUGHT_1, SIG_1)],
            text="Let me check.",
            tool_calls=[("lookup", {"city": "Oslo"})],
            usage=(120, 345),
        ),
        Turn(thinking=[(THOUGHT_2, SIG_2)], redacted_thinking=["opaque=="], text="Sunny, 21 C."),
    )


async def test_thinking_budget_and_blocks_carried_across_a_tool_turn(
    server: ProtocolServer,
) -> None:
    server.script(*tool_turns())
    spec = spec_of(
        server,
        "claude-sonnet-4-5",
        temperature=0.3,
        options=RunOptions(reasoning_effort="high"),
    )
    rec = Recorder()
    result = await AgentLoop(spec, rec).run(RunInput("Weather in Oslo?"))
    assert result.outcome.status is TaskStatus.COMPLETED

    first, second = (r.body for r in server.requests)
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert 16384 < first["max_tokens"] <= 64000  # capped at the model's output limit
    assert "temperature" not in first and "temperature" not in second
    assert second["thinking"] == first["thinking"]
    # the assistant turn goes back led by its thinking block, unchanged, before tool_use
    assistant = [m for m in second["messages"] if m["role"] == "assistant"][-1]["content"]
    assert [b["type"] for b in assistant] == ["thinking", "text", "tool_use"]
    assert assistant[0] == {"type": "thinking", "thinking": THOUGHT_1, "signature": SIG_1}

    # thinking never reaches the answer text or the streamed deltas
    deltas = "".join(d["delta"] for d in rec.of(EventType.MESSAGE_DELTA))
    assert result.outcome.result == "Sunny, 21 C."
    for thought in (THOUGHT_1, THOUGHT_2):
        assert thought not in deltas and thought not in str(rec.of(EventType.MESSAGE))
    # ...but it is kept on the assistant messages the run stores
    stored = [m for m in result.messages if m.role == "assistant"]
    assert stored[0].reasoning == [{"type": "thinking", "thinking": THOUGHT_1, "signature": SIG_1}]
    assert stored[1].reasoning == [
        {"type": "thinking", "thinking": THOUGHT_2, "signature": SIG_2},
        {"type": "redacted_thinking", "data": "opaque=="},
    ]
    # thinking tokens are in the output tokens Anthropic reports
    assert rec.of(EventType.USAGE)[0]["output_tokens"] == 345


@pytest.mark.parametrize(
    ("model", "effort"),
    [
        ("claude-sonnet-4-5", None),  # no effort: no thinking
        ("claude-3-5-haiku-latest", "high"),  # not a thinking model in the catalog
    ],
)
async def test_no_thinking_without_an_effort_or_on_a_model_without_it(
    server: ProtocolServer, model: str, effort: str | None
) -> None:
    server.script(*tool_turns())
    spec = spec_of(server, model, temperature=0.3, options=RunOptions(reasoning_effort=effort))
    result = await AgentLoop(spec, Recorder()).run(RunInput("Weather in Oslo?"))
    assert result.outcome.status is TaskStatus.COMPLETED
    for request in server.requests:
        assert "thinking" not in request.body
        assert "reasoning_effort" not in request.body
        assert request.body["temperature"] == 0.3
    # blocks a model streamed anyway are kept, but not sent back without thinking enabled
    second = server.requests[1].body["messages"]
    assert all(b["type"] != "thinking" for m in second for b in m["content"])


async def test_max_tokens_is_the_budget_plus_the_normal_allowance(
    server: ProtocolServer,
) -> None:
    server.script(Turn(thinking=[("hm", "s")], text="ok"))
    config = replace(FAST, anthropic_max_tokens=2000)
    spec = spec_of(
        server, "claude-opus-4-1", config=config, options=RunOptions(reasoning_effort="medium")
    )
    await AgentLoop(spec, Recorder()).run(RunInput("hi"))
    body = server.requests[0].body
    assert body["thinking"]["budget_tokens"] == 4096
    assert body["max_tokens"] == 4096 + 2000


def test_plan_fits_the_budget_into_the_models_output_limit() -> None:
    assert thinking.plan("low", 4096, 64000) == thinking.ThinkingPlan(1024, 5120)
    assert thinking.plan("high", 64000, 64000) == thinking.ThinkingPlan(16384, 64000)
    assert thinking.plan("high", 8000, 8192) == thinking.ThinkingPlan(4096, 8192)
    assert thinking.plan("low", 1000, 1500) == thinking.ThinkingPlan(1024, 1500)
    assert thinking.plan("medium", 500, 1800) is None  # no room for the minimum budget
    with pytest.raises(ValueError, match="low, medium, high"):
        thinking.plan("max", 4096, None)


def test_only_the_current_turns_thinking_is_sent_back() -> None:
    old = {"type": "thinking", "thinking": "old", "signature": "s0"}
    new = {"type": "thinking", "thinking": "new", "signature": "s1", "extra": "dropped"}
    call = ToolCall("t1", "lookup", {"city": "Oslo"})
    messages = [
        Message("system", "be brief"),
        Message("user", "first"),
        Message("assistant", "done", reasoning=[old]),
        Message("user", "second"),
        Message("assistant", "", tool_calls=[call], reasoning=[new]),
        Message("tool", "sunny", tool_call_id="t1", name="lookup"),
    ]
    _, turns = to_wire(messages, with_thinking=True)
    assert turns[1]["content"] == [{"type": "text", "text": "done"}]
    assert turns[3]["content"][0] == {"type": "thinking", "thinking": "new", "signature": "s1"}
    assert turns[3]["content"][1]["type"] == "tool_use"
    _, plain = to_wire(messages)
    assert all(b["type"] != "thinking" for t in plain for b in t["content"])


def test_reasoning_is_stored_only_when_present() -> None:
    block = {"type": "thinking", "thinking": "why", "signature": "sig"}
    plain = Message("assistant", "hi")
    assert "reasoning" not in plain.to_dict()
    thought = Message("assistant", "hi", reasoning=[block])
    assert thought.to_dict()["reasoning"] == [block]
    assert Message.from_dict(thought.to_dict()).reasoning == [block]
    assert Message.from_dict({"role": "assistant", "content": "x"}).reasoning == []


async def test_compaction_keeps_an_assistant_turn_with_its_thinking() -> None:
    block = {"type": "thinking", "thinking": "plan", "signature": "sig"}
    messages: list[Message] = [Message("user", "go")]
    for i in range(4):
        call = ToolCall(f"t{i}", "lookup", {})
        messages.append(Message("assistant", "", tool_calls=[call], reasoning=[block]))
        messages.append(Message("tool", "word " * 400, tool_call_id=f"t{i}", name="lookup"))
    out, report = await compact(messages, 1200, None, CompactionPolicy(keep_recent_tool_groups=1))
    assert report.cleared_tool_results > 0
    for m in out:
        if m.role == "assistant":
            assert m.reasoning == [block]
            assert m.tool_calls  # never separated from its call


async def test_a_workflow_run_on_anthropic_thinks_with_the_workflows_effort(
    runs_db: Any,  # noqa: F811 - the fixture imported above
    protocol_server: ProtocolServer,
) -> None:
    protocol_server.reset()
    async with runtime_of(runs_db) as (rt, store):
        key_name = f"key-{uuid.uuid4().hex[:8]}"
        await add_token(store, key_name, "sk-test", "alice")
        async with store.unit_of_work() as repos:
            provider = await repos.providers.create(
                Provider(name=f"p-{key_name}", provider_type=ProviderType.ANTHROPIC,
                         api_key_token_name=key_name, base_url=protocol_server.url,
                         created_by="alice")
            )  # fmt: skip
            made = await repos.agents.create(
                Agent(name="thinker", model="claude-sonnet-4-5", provider_id=provider.id,
                      created_by="alice", temperature=0.2, builtin_tools=["manage_todo_list"])
            )  # fmt: skip
            wf = await repos.workflows.create(
                Workflow(agent_id=made.id, title="think", github_user="alice", max_turns=4,
                         reasoning_effort="medium")
            )  # fmt: skip
        todos = [{"id": 1, "title": "answer", "status": "in-progress"}]
        protocol_server.script(
            Turn(thinking=[(THOUGHT_1, SIG_1)], tool_calls=[("manage_todo_list", {"todoList": todos})]),
            Turn(thinking=[(THOUGHT_2, SIG_2)], text="Done."),
        )  # fmt: skip
        task = await rt.start_run(wf.id, "work")
        events = await finish(rt, task.id)
        async with store.unit_of_work() as repos:
            stored = await repos.task_executions.get(task.id)
            conversation = (await repos.workflows.get(wf.id)).messages
    assert stored.status is TaskStatus.COMPLETED, stored.error
    assert stored.response is not None and "Done." in stored.response
    assert THOUGHT_2 not in stored.response
    # the workflow's conversation keeps the thinking blocks on its assistant messages; the
    # task's message view (role, content, tool calls) does not show them
    kept = [m.get("reasoning") for m in conversation if m.get("role") == "assistant"]
    assert kept[0] == [{"type": "thinking", "thinking": THOUGHT_1, "signature": SIG_1}]
    assert all("reasoning" not in m for m in stored.messages)
    first, second = (r.body for r in protocol_server.requests)
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "temperature" not in first
    assistant = [m for m in second["messages"] if m["role"] == "assistant"][-1]["content"]
    assert assistant[0] == {"type": "thinking", "thinking": THOUGHT_1, "signature": SIG_1}
    assert assistant[1]["type"] == "tool_use"
    streamed = " ".join(str(e.data) for e in events)
    assert THOUGHT_1 not in streamed and THOUGHT_2 not in streamed


def test_the_catalog_flags_anthropic_thinking_models_only() -> None:
    flagged = ("claude-sonnet-4-5", "claude-opus-4-1-20250805", "claude-3-7-sonnet-20250219")
    assert all(CATALOG.get(m).thinking for m in (*flagged, "claude-haiku-4-5"))
    for model in ("claude-3-5-haiku-latest", "claude-opus-4.1", "gpt-4o", "o3-mini"):
        assert not CATALOG.get(model).thinking
    # thinking models get no OpenAI reasoning_effort; reasoning models no thinking budget
    options = RunOptions(reasoning_effort="low")
    sonnet, o3 = CATALOG.get("claude-sonnet-4-5"), CATALOG.get("o3-mini")
    assert (options.effort_for(sonnet), options.thinking_for(sonnet)) == (None, "low")
    assert (options.effort_for(o3), options.thinking_for(o3)) == ("low", None)
