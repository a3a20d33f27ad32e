"""The activity documents of the generated legacy database (`tests.support.legacy_dump`):
agents, workflows, task executions, schedules, memories, chat sessions and messages; `_bulk`
adds one unit of ordinary volume and `build` puts the whole database together.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from bson import Decimal128, Int64, ObjectId

from tests.support.legacy_dump import UNICODE, LegacyDatabase, long_text
from tests.support.legacy_entities import (
    Builder,
    add_custom_tools,
    add_guardrails,
    add_knowledge_items,
    add_knowledge_sources,
    add_mcp_servers,
    add_providers,
    add_skills,
    add_tokens,
)

Doc = dict[str, Any]


def _agents(b: Builder, refs: dict[str, list[Any]], suffix: str = "") -> list[ObjectId]:
    mcp, skills, tools, sources, providers = (
        refs["mcp"],
        refs["skills"],
        refs["tools"],
        refs["sources"],
        refs["providers"],
    )
    a = b.new(
        "agents",
        "agent_full" if not suffix else None,
        name="Ops assistant 🤖" + suffix,
        description="Triage and runbooks — " + UNICODE,
        system_prompt="You are the on-call assistant.\nAlways cite the runbook.",
        model="gpt-4o",
        mcp_server_ids=mcp[:2],
        mcp_server_tags=["ops"],
        tool_definitions=[
            {
                "name": "lookup",
                "description": "find a runbook",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                "limits": {
                    "max_calls": Int64(2**40),
                    "price": Decimal128("0.000123456789012345678901234567"),
                },
                "added": datetime(2024, 1, 2, 3, 4, 5, 678000),
            }
        ],
        knowledge_source_ids=[str(s) for s in sources[:2]],
        knowledge_tags=["docs"],
        builtin_tools=["bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"],
        custom_tool_ids=tools[:2],
        provider_id=refs["providers"][1],
        **b.legacy_extras("agents"),
    )
    c = b.new(
        "agents",
        "agent_oid_refs" if not suffix else None,
        name="Claude coder" + suffix,
        description="",
        system_prompt="You are a helpful assistant.",
        model=None,
        mcp_server_ids=[ObjectId(mcp[2])],  # references stored as ObjectIds
        mcp_server_tags=[],
        tool_definitions=[],
        knowledge_source_ids=[sources[3]],
        knowledge_tags=[],
        builtin_tools=["bash"],
        custom_tool_ids=[],
        provider_id=ObjectId(providers[2]),
    )
    d = b.new(
        "agents", "agent_minimal" if not suffix else None, stamps=False, name="old agent" + suffix
    )
    e = b.new(
        "agents",
        name="تحليل البيانات" + suffix,  # RTL name
        description="e\u0301\u0301 combining, \u200d zero width joiner, \u202e bidi override",
        system_prompt="",
        tool_definitions=[{}],
        provider_id=None,
        skill_hint=skills[0],  # unknown field holding a reference
    )
    return [x["_id"] for x in (a, c, d, e)]


def _log(at: datetime, event: str, detail: str = "", **more: Any) -> Doc:
    return {"timestamp": at, "event": event, "detail": detail, **more}


def _conversation(at: datetime, *, long: bool = False) -> list[Doc]:
    return [
        {
            "role": "system",
            "content": "You are the on-call assistant.",
            "tool_calls": None,
            "tool_call_id": None,
            "name": None,
        },
        {"role": "user", "content": long_text() if long else "Why is the API slow? " + UNICODE},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "latency"}'},
                }
            ],
        },
        {
            "role": "tool",
            "content": '{"runbook": "RB-12"}',
            "tool_call_id": "call_1",
            "name": "lookup",
        },
        {"role": "assistant", "content": "See RB-12 ✓"},
    ]


_USAGE = {
    "total_premium_requests": 1.5,
    "total_input_tokens": 1234,
    "total_output_tokens": 567,
    "total_cache_read_tokens": 0,
    "total_cache_write_tokens": 0,
    "total_cost": 0.0123,
}

WORKFLOW_STATUSES = (
    "active",
    "inactive",
    "running",
    "completed",
    "failed",
    "halted",
    "max_turns_reached",
)
TASK_STATUSES = ("pending", "running", "completed", "failed", "halted", "max_turns_reached")


def _workflows(b: Builder, agents: list[ObjectId], refs: dict[str, list[Any]]) -> list[ObjectId]:
    full_agent, oid_agent, minimal_agent, rtl_agent = agents
    out = []
    start = b.when()
    full = b.new(
        "workflows",
        "workflow_full",
        title="Nightly triage 🌙",
        agent_id=str(full_agent),
        github_user="octocat",
        model="gpt-4o",
        max_turns=Int64(25),
        current_turn=3,
        session_id="copilot-session-7f3a",
        skill_ids=refs["skills"][:2],
        skill_tags=["ops"],
        messages=_conversation(start),
        logs=[
            _log(start, "prompt_received", "user prompt"),
            _log(
                start + timedelta(seconds=1),
                "tool_call",
                "lookup\x00RB-12",  # a NUL inside a nested log detail
                tool_input={"q": "latency", "limit": Int64(5)},
                tool_output='{"runbook": "RB-12"}',
            ),
            _log(start + timedelta(seconds=2), "completed", "", tool_input=None, tool_output=None),
        ],
        status="active",
        output_format="markdown",
        usage=dict(_USAGE),
        infinite_session=True,
        caveman=True,
        bypass_memory=False,
        auto_memory=True,
        tsv_tool_results=True,
        reasoning_effort="high",
        guardrail_ids=refs["guardrails"][:3],
        guardrail_tags=["security"],
        repo_url="https://github.com/example/service.git",
        repo_branch="main",
        repo_token_name="GITHUB_PAT",
        credential_overrides={"JIRA_TOKEN": "CUSTOM_LLM_KEY", "GH_TOKEN": "GITHUB_PAT"},
        webhook_url="https://hooks.example.com/done",
        error_webhook_url="https://hooks.example.com/error",
        **b.legacy_extras("workflows"),
    )
    out.append(full["_id"])
    for i, status in enumerate(WORKFLOW_STATUSES[1:], start=1):
        doc = b.new(
            "workflows",
            f"workflow_{status}",
            title=None if i % 2 else f"Workflow {status}",
            agent_id=oid_agent if i % 3 == 0 else str(rtl_agent),  # ObjectId or string reference
            github_user="local" if i % 2 else "server",
            model="claude-sonnet-4",
            max_turns=Decimal128("8") if i == 2 else 5,  # integral Decimal128 in an int field
            current_turn=0,
            session_id=None,
            skill_ids=[],
            skill_tags=[],
            messages=[],
            logs=[],
            status=status,
            output_format="json",
            usage=None
            if i % 2
            else {**_USAGE, "total_cost": Decimal128("0.0421"), "total_input_tokens": Int64(99)},
            infinite_session=bool(i % 2),
            caveman=False,
            bypass_memory=bool(i % 2),
            auto_memory=False,
            tsv_tool_results=False,
            reasoning_effort=None,
            guardrail_ids=[],
            guardrail_tags=[],
            repo_url=None,
            repo_branch=None,
            repo_token_name=None,
            credential_overrides={},
            webhook_url=None,
            error_webhook_url=None,
        )
        out.append(doc["_id"])
    # Older documents: only what the first version of the model had, no timestamps.
    old = b.new(
        "workflows",
        "workflow_old",
        stamps=False,
        agent_id=str(minimal_agent),
        github_user="local",
        model="gpt-4",
        status="inactive",
    )
    out.append(old["_id"])
    long = b.new(
        "workflows",
        "workflow_long_message",
        agent_id=str(full_agent),
        github_user="octocat",
        model="gpt-4o",
        messages=_conversation(start, long=True),  # a 100k-character message
        logs=[_log(start, "prompt_received")],
        status="running",
    )
    out.append(long["_id"])
    return out


def _direct_claude(b: Builder, refs: dict[str, list[Any]]) -> None:
    """An agent on the `anthropic` provider that calls api.anthropic.com with the default
    auth_type, and a workflow of it (single-user deployment: `github_user` is `local`)."""
    agent = b.new(
        "agents",
        "agent_claude_direct",
        name="Release notes writer",
        description="",
        system_prompt="You write release notes.",
        model="claude-3-5-sonnet-20241022",
        provider_id=refs["providers"][5],
        builtin_tools=[],
    )
    b.new(
        "workflows",
        "workflow_claude_direct",
        title="Release notes",
        agent_id=str(agent["_id"]),
        github_user="local",
        model="claude-3-5-sonnet-20241022",
        status="completed",  # as the last run left it
        output_format="markdown",
        messages=[],
        logs=[],
    )


def _tasks_and_schedules(b: Builder, workflows: list[ObjectId]) -> None:
    full_wf = workflows[0]
    deleted_wf = b.oid(b.when())  # a workflow deleted since: its runs and schedules stay
    b.db.ids["workflow_deleted"] = str(deleted_wf)
    schedule = b.new(
        "scheduled_agents",
        "schedule_full",
        name="Every 6 hours ⏰",
        workflow_id=str(full_wf),
        prompt="Check the error budget",
        interval_value=Int64(6),
        interval_unit="hours",
        start_at=datetime(2024, 1, 1, 0, 0),
        end_at=datetime(2030, 12, 31, 23, 59, 59, 999000),
        enabled=True,
        last_run_at=datetime(2024, 5, 1, 6, 0, 0, 12000),
        next_run_at=datetime(2024, 5, 1, 12, 0, 0, 12000),
        redbeat_key=None,
        **b.legacy_extras("scheduled_agents"),
    )
    schedule["redbeat_key"] = f"redbeat:scheduled_agent:{schedule['_id']}"
    b.new(
        "scheduled_agents",
        "schedule_minutes",
        name="",
        workflow_id=workflows[1],  # reference stored as an ObjectId
        prompt="ping",
        interval_value=15,
        interval_unit="minutes",
        start_at=datetime(2024, 2, 1, 0, 0),
        end_at=None,
        enabled=False,
        last_run_at=None,
        next_run_at=None,
    )
    b.new(
        "scheduled_agents",
        "schedule_orphan",
        stamps=False,
        name="weekly report of a deleted workflow",
        workflow_id=str(deleted_wf),
        prompt="weekly",
        interval_value=7,
        interval_unit="days",
        start_at=datetime(2023, 10, 1),
    )
    b.new(
        "scheduled_agents",
        "schedule_expired",
        name="Q1 2024 stand-up notes",
        workflow_id=str(full_wf),
        prompt="Summarise yesterday",
        interval_value=1,
        interval_unit="days",
        start_at=datetime(2024, 1, 1, 9, 0),
        end_at=datetime(2024, 3, 31, 23, 59),
        enabled=True,  # never disabled: the existing system only did so at the first tick after
        last_run_at=datetime(2024, 3, 30, 9, 0),
        next_run_at=datetime(2024, 3, 31, 9, 0),  # the last occurrence, missed
        redbeat_key=None,
    )
    # Old document: no `enabled` (default true), no next_run_at, no timestamps.
    b.new(
        "scheduled_agents",
        "schedule_old",
        stamps=False,
        name="daily digest",
        workflow_id=str(workflows[3]),
        prompt="digest",
        interval_value=1,
        interval_unit="days",
        start_at=datetime(2023, 11, 1, 6, 30),
    )
    at = b.when()
    for i, status in enumerate(TASK_STATUSES):
        done = status not in ("pending", "running")
        b.new(
            "task_executions",
            f"task_{status}",
            workflow_id=str(full_wf) if i % 2 else full_wf,  # string and ObjectId references
            prompt=f"Run {i}: {UNICODE}",
            status=status,
            celery_task_id=f"c{i:04d}-5f1e-4c1b-9a0a" if status != "pending" else None,
            worker="celery@worker-1" if status != "pending" else None,
            model="gpt-4o",
            reasoning_effort="medium" if i % 2 else None,
            tool_calls=Int64(i),
            response=("Done ✓ " + UNICODE) if done else None,
            progress={
                "todos": [
                    {"id": 1, "title": "Collect metrics", "status": "completed"},
                    {"id": 2, "title": "Compare with SLO", "status": "in-progress"},
                    {"id": Int64(3), "title": "Write report 📝", "status": "not-started"},
                ],
                "current_step": 2 if i % 2 else None,
                "percent_complete": 0.1 if i % 2 else Decimal128("0.5"),
            }
            if status != "pending"
            else None,
            logs=[
                _log(at, "started", f"task {i}"),
                _log(at + timedelta(seconds=i), "turn", "", tool_input={"i": i}),
            ],
            messages=_conversation(at)[1:] if done else [],
            usage=dict(_USAGE) if done else None,
            started_at=at if status != "pending" else None,
            finished_at=at + timedelta(minutes=2, milliseconds=5) if done else None,
            scheduled_agent_id=str(schedule["_id"]) if i == 2 else None,
            **(b.legacy_extras("task_executions") if i == 2 else {}),
        )
    # An old task: only the first model's fields.
    b.new(
        "task_executions",
        "task_old",
        stamps=False,
        workflow_id=str(workflows[1]),
        prompt="hello",
        status="completed",
    )
    # Runs of the deleted workflow: orphans are normal, the existing system never cascaded.
    b.new(
        "task_executions",
        "task_orphan",
        workflow_id=str(deleted_wf),
        prompt="weekly",
        status="completed",
        tool_calls=0,
        response="",
        logs=[],
        messages=[],
        started_at=at,
        finished_at=at,
        scheduled_agent_id=b.db.ids.get("schedule_orphan"),
    )
    b.new(
        "task_executions",
        stamps=False,
        workflow_id=deleted_wf,
        prompt='{"ticket": "OPS-1"}',
        status="failed",
        response="Error: model timeout",
    )


def _embedding(n: int, dims: int = 384) -> list[float]:
    return [round(math.sin((i + 1) * (n + 1) * 0.37) * 0.5, 6) for i in range(dims)]


def _memories(b: Builder, agents: list[ObjectId], workflows: list[ObjectId]) -> None:
    full_agent, oid_agent, _, rtl_agent = agents
    b.new(
        "memories",
        "memory_full",
        agent_id=str(full_agent),
        scope="agent",
        key="favourite runbook",
        value="RB-12 ✓ " + UNICODE,
        embedding=_embedding(1),
        metadata={
            "tags": ["ops", "runbook"],
            "workflow_id": str(workflows[0]),
            "source": {"kind": "auto"},
        },
        ttl=None,
        **b.legacy_extras("memories"),
    )
    b.new(
        "memories",
        "memory_session",
        agent_id=str(full_agent),
        scope="session",
        key="current incident",
        value="INC-42",
        embedding=None,
        metadata={},
        ttl=datetime(2024, 6, 1, 12, 0, 0, 500000),
    )
    b.new(
        "memories",
        "memory_global",
        agent_id=str(oid_agent),
        scope="global",
        key="company name",
        value="",
        embedding=_embedding(2),
        metadata={"tags": []},
    )
    b.new(
        "memories",
        "memory_old",
        stamps=False,
        agent_id=str(rtl_agent),
        scope="agent",
        key="k",
        value="v",
    )


def _chat(b: Builder, agents: list[ObjectId]) -> None:
    full_agent, oid_agent, _, _ = agents
    s1 = b.new(
        "chat_sessions",
        "session_full",
        agent_id=full_agent,  # an ObjectId in MongoDB (section 2.14)
        github_user="octocat",
        title="Why is the API slow? " + UNICODE[:40],
        message_count=Int64(4),
        **b.legacy_extras("chat_sessions"),
    )
    b.new(
        "chat_sessions",
        "session_string_ref",
        agent_id=str(oid_agent),
        github_user="local",
        title=None,
        message_count=0,
    )
    s3 = b.new(
        "chat_sessions", "session_old", stamps=False, agent_id=oid_agent, github_user="server"
    )
    b.new(
        "chat_messages",
        "message_full",
        session_id=str(s1["_id"]),
        role="user",
        content="Why is the API slow? " + UNICODE,
        usage=None,
        **b.legacy_extras("chat_messages"),
    )
    b.new(
        "chat_messages",
        "message_long",
        session_id=str(s1["_id"]),
        role="assistant",
        content=long_text(),  # a 100k-character answer
        usage={
            "prompt_tokens": Int64(12345),
            "completion_tokens": 99,
            "total_tokens": Int64(12444),
            "cost": Decimal128("0.001234"),
            "big": Int64(2**62 + 1),
            "exact": 2**53 + 1,
            "tiny": 1e-7,
            "huge": 1.7976931348623157e308,
            "details": {"cached_tokens": 0, "reasoning": []},
        },
    )
    b.new(
        "chat_messages",
        "message_nul",
        session_id=str(s1["_id"]),
        role="user",
        content="before\x00after \x00 end",  # NULs inside a chat message
    )
    b.new(
        "chat_messages",
        "message_empty",
        session_id=s1["_id"],  # reference stored as an ObjectId
        role="assistant",
        content="",
        usage={},
    )
    b.new(
        "chat_messages",
        "message_old",
        stamps=False,
        session_id=str(s3["_id"]),
        role="user",
        content="hi",
    )


# ------------------------------------------------------------------------------ volume


def _bulk(b: Builder, unit: int) -> None:
    """One unit of ordinary, realistic volume (what `scale` multiplies)."""
    rng, sfx = b.rng, f"-{unit:05d}"
    add_tokens(b, sfx)
    add_providers(b, sfx)
    mcp = add_mcp_servers(b, sfx)
    skills = add_skills(b, sfx)
    tools = add_custom_tools(b, sfx)
    guards = add_guardrails(b, sfx)
    sources = add_knowledge_sources(b, sfx)
    for k in range(3):
        b.new(
            "knowledge_items",
            source_id=str(sources[k % len(sources)]),
            name=f"note {unit}.{k}",
            content_type="text",
            text_content=" ".join(
                rng.choice(["alpha", "βeta", "γάμμα", "δ", "🚀"]) for _ in range(200)
            ),
            tags=[f"t{k}"],
            metadata={"chunk_index": k, "chunk_total": 3},
        )
    agents = []
    for k in range(3):
        agents.append(
            b.new(
                "agents",
                name=f"agent {unit}.{k}",
                description="bulk",
                model=rng.choice(["gpt-4o", "claude-sonnet-4", None]),
                mcp_server_ids=mcp[: k + 1],
                custom_tool_ids=tools[:k],
                knowledge_source_ids=[str(s) for s in sources[:k]],
                provider_id=None,
            )["_id"]
        )
    workflows = []
    for k in range(5):
        at = b.when()
        workflows.append(
            b.new(
                "workflows",
                title=f"workflow {unit}.{k}",
                agent_id=str(agents[k % 3]),
                github_user=rng.choice(["octocat", "local", "server"]),
                model="gpt-4o",
                max_turns=5,
                current_turn=rng.randint(0, 5),
                skill_ids=skills[:1],
                guardrail_ids=guards[:1],
                messages=_conversation(at),
                logs=[_log(at + timedelta(seconds=j), "turn", f"step {j}") for j in range(10)],
                status=rng.choice(WORKFLOW_STATUSES[:3]),
                output_format=rng.choice(["json", "markdown"]),
                usage=dict(_USAGE),
            )["_id"]
        )
    for k in range(20):
        at = b.when()
        status = rng.choice(TASK_STATUSES)
        b.new(
            "task_executions",
            workflow_id=str(workflows[k % 5]),
            prompt=f"prompt {k}",
            status=status,
            tool_calls=rng.randint(0, 9),
            response="ok" if status == "completed" else None,
            logs=[_log(at + timedelta(seconds=j), "turn", f"step {j}") for j in range(10)],
            messages=_conversation(at)[1:],
            usage=dict(_USAGE),
            started_at=at,
            finished_at=at + timedelta(seconds=30),
        )
    for k in range(2):
        b.new(
            "scheduled_agents",
            name=f"schedule {unit}.{k}",
            workflow_id=str(workflows[k]),
            prompt="scheduled",
            interval_value=rng.randint(1, 48),
            interval_unit=rng.choice(["minutes", "hours", "days"]),
            start_at=b.when(),
            enabled=True,
        )
    for k in range(10):
        b.new(
            "memories",
            agent_id=str(agents[k % 3]),
            scope=rng.choice(["session", "agent", "global"]),
            key=f"fact {unit}.{k}",
            value=f"value {k}",
            embedding=_embedding(unit * 10 + k),
            metadata={"tags": ["bulk"]},
        )
    for k in range(3):
        session = b.new(
            "chat_sessions",
            agent_id=agents[k],
            github_user="octocat",
            title=f"chat {k}",
            message_count=8,
        )
        for j in range(8):
            b.new(
                "chat_messages",
                session_id=str(session["_id"]),
                role="user" if j % 2 == 0 else "assistant",
                content=f"message {j} " + UNICODE,
                usage=None if j % 2 == 0 else {"prompt_tokens": 10 + j, "completion_tokens": 5},
            )


def build(scale: int, seed: int) -> LegacyDatabase:
    """The documents of `legacy_database(scale=scale, seed=seed)`."""
    b = Builder(scale, seed)
    add_tokens(b)
    add_providers(b)
    mcp = add_mcp_servers(b)
    skills = add_skills(b)
    tools = add_custom_tools(b)
    guardrails = add_guardrails(b)
    sources = add_knowledge_sources(b)
    add_knowledge_items(b, sources)
    refs: dict[str, list[Any]] = {
        "mcp": mcp,
        "skills": skills,
        "tools": tools,
        "guardrails": guardrails,
        "sources": sources,
        "providers": [str(d["_id"]) for d in b.db.documents["providers"]],
    }
    agents = _agents(b, refs)
    workflows = _workflows(b, agents, refs)
    _direct_claude(b, refs)
    _tasks_and_schedules(b, workflows)
    _memories(b, agents, workflows)
    _chat(b, agents)
    for unit in range(1, scale):
        _bulk(b, unit)
    return b.db
