"""No N+1: every list endpoint issues the same number of SQL statements at page sizes 1 and 50."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from tbd_agents.domain.models import (
    Agent,
    ChatMessage,
    ChatSession,
    CustomTool,
    Guardrail,
    KnowledgeItem,
    KnowledgeSource,
    McpServer,
    Memory,
    Provider,
    ScheduledAgent,
    Skill,
    TaskExecution,
    Token,
    Workflow,
)
from tests.api.conftest import Api
from tests.support.statements import from_background

N = 60
OWNER = "statements-owner"

LISTS = [
    "/api/agents",
    "/api/skills",
    "/api/mcps",
    "/api/custom-tools",
    "/api/guardrails",
    "/api/providers",
    "/api/tokens",
    "/api/knowledge-sources",
    "/api/knowledge-items",
    "/api/memories",
    "/api/workflows",
    "/api/tasks",
    "/api/scheduled-agents",
    "/api/chat/sessions",
    "/api/keys",
    "MESSAGES",
]


@contextmanager
def counting(api: Api) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if not from_background():
            statements.append(statement)

    engine = api.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture(scope="module")
async def populated(api: Api) -> dict[str, str]:
    o = OWNER
    agent = Agent(name="parent", created_by=o)
    source = KnowledgeSource(name="src", created_by=o)
    workflow = Workflow(agent_id=agent.id, github_user=o)
    session = ChatSession(agent_id=agent.id, github_user=o)
    async with api.store.unit_of_work() as r:
        await r.agents.insert_many([agent, *(Agent(name=f"a{i}", created_by=o) for i in range(N))])
        await r.skills.insert_many([Skill(name=f"s{i}", created_by=o) for i in range(N)])
        await r.mcp_servers.insert_many([McpServer(name=f"m{i}", created_by=o) for i in range(N)])
        await r.custom_tools.insert_many([CustomTool(name=f"c{i}", created_by=o) for i in range(N)])
        await r.guardrails.insert_many([Guardrail(name=f"g{i}", created_by=o) for i in range(N)])
        await r.providers.insert_many([Provider(name=f"stmt-p{i}", created_by=o) for i in range(N)])
        await r.tokens.insert_many(
            [Token(name=f"stmt-t{i}", encrypted_value="x", created_by=o) for i in range(N)]
        )
        await r.knowledge_sources.insert_many(
            [source, *(KnowledgeSource(name=f"k{i}", created_by=o) for i in range(N))]
        )
        await r.knowledge_items.insert_many([KnowledgeItem(source_id=source.id) for _ in range(N)])
        await r.memories.insert_many(
            [Memory(agent_id=agent.id, key=f"k{i}", created_by=o) for i in range(N)]
        )
        await r.workflows.insert_many(
            [workflow, *(Workflow(agent_id=agent.id, github_user=o) for _ in range(N))]
        )
        await r.task_executions.insert_many(
            [TaskExecution(workflow_id=workflow.id) for _ in range(N)]
        )
        await r.scheduled_agents.insert_many(
            [ScheduledAgent(workflow_id=workflow.id, github_user=o) for _ in range(N)]
        )
        await r.chat_sessions.insert_many(
            [session, *(ChatSession(agent_id=agent.id, github_user=o) for _ in range(N))]
        )
        await r.chat_messages.insert_many(
            [ChatMessage(session_id=session.id, role="user") for _ in range(N)]
        )
    for _ in range(N):
        await api.key(OWNER)
    return {"session": session.id}


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("admin", [False, True], ids=["user", "admin"])
async def test_list_statement_count_is_independent_of_page_size(
    api: Api, populated: dict[str, str], path: str, admin: bool
) -> None:
    from tbd_agents.domain.auth import KeyScope

    if path == "MESSAGES":
        path = f"/api/chat/sessions/{populated['session']}/messages"
    scope = KeyScope.ADMIN if admin else KeyScope.USER
    async with await api.user(OWNER if not admin else "stmt-admin", scope) as client:
        # Authenticate once; the key stays cached for the test even on a stalled machine.
        api.app.state.ctx.auth.cache_seconds = 3600
        await client.get("/api/me")
        counts = {}
        for limit in (1, 50):
            with counting(api) as statements:
                response = await client.get(path, params={"limit": limit})
            assert response.status_code == 200, response.text
            assert len(response.json()) == limit
            counts[limit] = len(statements)
    assert counts[1] == counts[50], (path, counts)
    # Tasks add two lookups for their summary fields (the page's workflows, then their agents).
    assert counts[1] <= (5 if path == "/api/tasks" else 3), (path, counts)
