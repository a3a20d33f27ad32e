"""What a real run loads (engine/builder.py): only records of the agent's owner (H2), and host
code only for admin owners or allowed commands (C1 at run time). The model is the scripted
protocol server, MCP servers are real processes / sockets, knowledge is the API's retriever."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import GuardrailType, McpTransport, ProviderType
from tbd_agents.domain.models import (
    Agent,
    CustomTool,
    Guardrail,
    McpServer,
    Provider,
    Skill,
    Workflow,
)
from tbd_agents.engine.builder import load_plan
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.context import RunInput
from tbd_agents.engine.inprocess import EngineServices, run_agent
from tbd_agents.engine.sandbox import Sandbox
from tbd_agents.runtime.contracts import EventType
from tbd_agents.services.access import Principal
from tbd_agents.services.privilege import HostCapabilities, outbound_guard
from tbd_agents.services.tokens import TokenRecords
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import Query
from tests.api.conftest import Api, make_settings
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.support import Recorder
from tests.support import pg
from tests.support.http_stub import StubHandler, serve

SECRET = "ALICE-TOKEN-VALUE-9f3"


class _Recording(StubHandler):
    seen: list[str] = []

    def _any(self) -> None:
        self.seen.append(str(self.headers))
        self.send_response(404)
        self.end_headers()

    do_GET = do_POST = _any


@pytest.fixture(scope="module")
def trap_url() -> Iterator[str]:
    with serve(_Recording) as address:
        yield f"http://{address}/mcp"


@pytest.fixture(scope="module")
def llm() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runs_db(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, prefix="authzrun")
    yield url
    pg.drop_database(url)


@pytest.fixture(scope="module")
async def hub(runs_db: URL, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    store = PostgresStore(create_engine(runs_db, pool_size=4, max_overflow=4), url=runs_db)
    settings = make_settings(
        tmp_path_factory.mktemp("runs"),
        user_stdio_mcp_commands="",
        allow_user_custom_tools=False,
        outbound_allowed_hosts="127.0.0.1",  # the scripted model and the trap are local
    )
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, settings)
    await store.close()


def _services(hub: Api) -> EngineServices:
    ctx = hub.app.state.ctx
    config = EngineConfig(mcp_connect_timeout=5, host=HostCapabilities.from_settings(hub.settings))
    return EngineServices(
        store=hub.store,
        cipher=ctx.cipher(),
        config=config,
        catalog=ModelCatalog.load(None),
        sandbox=Sandbox(None),
        retriever=ctx.services["knowledge"].retriever,
        outbound=outbound_guard(hub.settings),
    )


def _n(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def _agent(hub: Api, owner: str, url: str, **fields: Any) -> Agent:
    async with hub.store.unit_of_work() as repos:
        provider = await repos.providers.create(
            Provider(
                name=_n("p"),
                provider_type=ProviderType.CUSTOM,
                base_url=f"{url}/v1",
                created_by=owner,
            )
        )
        agent: Agent = await repos.agents.create(
            Agent(name=_n("a"), model="m", provider_id=provider.id, created_by=owner, **fields)
        )
    return agent


def _warnings(rec: Recorder) -> str:
    return "\n".join(e.get("message", "") for e in rec.of(EventType.LOG))


async def test_tags_do_not_pull_in_another_users_records(
    hub: Api,
    llm: ProtocolServer,
    trap_url: str,
) -> None:
    llm.reset()
    alice, bob, tag = _n("alice"), _n("bob"), _n("shared")
    async with hub.store.unit_of_work() as repos:
        tokens = TokenRecords(repos, Principal(alice, KeyScope.USER), hub.app.state.ctx.cipher)
        await tokens.create({"name": _n("tok"), "value": SECRET})
    async with hub.store.unit_of_work() as repos:
        tok = next(
            t for t in (await repos.tokens.list(Query(limit=1000))).items if t.created_by == alice
        )
        skill = await repos.skills.create(
            Skill(name=_n("s"), instructions="ALICE-SKILL-TEXT", tags=[tag], created_by=alice)
        )
        await repos.mcp_servers.create(
            McpServer(
                name=_n("m"),
                transport_type=McpTransport.STREAMABLE_HTTP,
                connection_config={
                    "url": trap_url,
                    "headers": {"X-K": "{{token:" + tok.name + "}}"},
                },
                tags=[tag],
                created_by=alice,
            )
        )
    async with await hub.user(alice) as client:
        source = (await client.post("/api/knowledge-sources", json={"name": _n("k")})).json()
        item = await client.post(
            "/api/knowledge-items",
            json={
                "source_id": source["id"],
                "name": "t",
                "text_content": "ALICE-KNOWLEDGE: the quokka launch code is 4471.",
                "tags": [tag],
            },
        )
        assert item.status_code == 201, item.text
    agent = await _agent(
        hub, bob, llm.url,
        skill_tags=[tag], mcp_server_tags=[tag], knowledge_tags=[tag], skill_ids=[skill.id],
    )  # fmt: skip
    llm.script(Turn(text="done"))
    rec = Recorder()
    await run_agent(_services(hub), agent, RunInput("what is the quokka launch code?"), rec, None)
    sent = llm.requests[0]
    assert "ALICE" not in str(sent.body), "another user's skill or knowledge reached the model"
    assert SECRET not in str(sent.body)
    assert _Recording.seen == [], "another user's MCP server was contacted with their token"
    assert f"skill {skill.id} belongs to another owner" in _warnings(rec)

    # alice's own agent gets all three (so the test above can fail)
    _Recording.seen.clear()
    own = await _agent(
        hub, alice, llm.url,
        skill_tags=[tag], mcp_server_tags=[tag], knowledge_tags=[tag],
    )  # fmt: skip
    llm.reset()
    llm.script(Turn(text="done"))
    await run_agent(
        _services(hub), own, RunInput("what is the quokka launch code?"), Recorder(), None
    )
    body = str(llm.requests[0].body)
    assert "ALICE-SKILL-TEXT" in body and "ALICE-KNOWLEDGE" in body
    assert any(SECRET in h for h in _Recording.seen)


async def test_user_owned_stdio_server_is_not_started_by_a_run(
    hub: Api,
    llm: ProtocolServer,
    tmp_path: Path,
) -> None:
    user = _n("user")
    admin = _n("admin")
    await hub.key(admin, KeyScope.ADMIN)
    for owner, marker in ((user, tmp_path / "user"), (admin, tmp_path / "admin")):
        async with hub.store.unit_of_work() as repos:  # as migrated: no save-time check
            server = await repos.mcp_servers.create(
                McpServer(
                    name=_n("sh"),
                    connection_config={"command": "/bin/sh", "args": ["-c", f"touch {marker}"]},
                    created_by=owner,
                )
            )
        agent = await _agent(hub, owner, llm.url, mcp_server_ids=[server.id])
        llm.reset()
        llm.script(Turn(text="done"))
        rec = Recorder()
        await run_agent(_services(hub), agent, RunInput("hi"), rec, None)
        if owner == user:
            assert not marker.exists()
            assert "USER_STDIO_MCP_COMMANDS" in _warnings(rec)
        else:
            assert marker.exists(), "an admin's stdio server runs"


async def test_allow_listed_user_stdio_runs_confined_and_tools_need_opt_in(
    hub: Api,
    llm: ProtocolServer,
) -> None:
    user = _n("user")
    async with hub.store.unit_of_work() as repos:
        server = await repos.mcp_servers.create(
            McpServer(name=_n("ok"), connection_config={"command": "/bin/true"}, created_by=user)
        )
        tool = await repos.custom_tools.create(
            CustomTool(name=_n("t"), source_code="def run():\n    return 1\n", created_by=user)
        )
    agent = await _agent(hub, user, llm.url, mcp_server_ids=[server.id], custom_tool_ids=[tool.id])
    strict = _services(hub).config
    async with hub.store.unit_of_work() as repos:
        plan = await load_plan(repos, _services(hub).cipher, agent, strict)
    assert plan.mcp == [] and plan.custom_tools == []
    assert any("ALLOW_USER_CUSTOM_TOOLS" in w for w in plan.warnings)
    open_config = EngineConfig(
        host=HostCapabilities(
            user_stdio_commands=frozenset({"/bin/true"}), allow_user_custom_tools=True
        )
    )
    async with hub.store.unit_of_work() as repos:
        plan = await load_plan(repos, _services(hub).cipher, agent, open_config)
    assert [m.confined for m in plan.mcp] == [True]
    assert [t.id for t, _ in plan.custom_tools] == [tool.id]


async def test_a_workflow_loads_its_owners_and_the_operators_skills_and_guardrails_only(
    hub: Api, llm: ProtocolServer
) -> None:
    """The existing TBD Agents kept skills and guardrails on the workflow, as global records: a
    migrated workflow owned by a login names ownerless (the operator's) ones, and keeps them.
    Another user's records named by the workflow, by id or by tag, are never loaded."""
    alice, bob, tag = _n("alice"), _n("bob"), _n("shared")
    async with hub.store.unit_of_work() as repos:

        async def skill(owner: str | None, text: str) -> Skill:
            made: Skill = await repos.skills.create(
                Skill(name=_n("s"), instructions=text, tags=[tag], created_by=owner)
            )
            return made

        async def guardrail(owner: str | None, word: str) -> Guardrail:
            made: Guardrail = await repos.guardrails.create(
                Guardrail(
                    name=_n(word),
                    guardrail_type=GuardrailType.PROMPT,
                    prompt_config={"forbidden_patterns": [word], "required_patterns": []},
                    tags=[tag],
                    created_by=owner,
                )
            )
            return made

        operator_skill, bobs_skill = await skill(None, "OPERATOR-SKILL"), await skill(bob, "BOB")
        operator_rail, bobs_rail = await guardrail(None, "forbidden"), await guardrail(bob, "bob")
        await skill(None, "OPERATOR-TAGGED")
        await skill(bob, "BOB-TAGGED")
    agent = await _agent(hub, alice, llm.url)
    workflow = Workflow(
        agent_id=agent.id,
        github_user=alice,
        skill_ids=[operator_skill.id, bobs_skill.id],
        skill_tags=[tag],
        guardrail_ids=[operator_rail.id, bobs_rail.id],
    )
    services = _services(hub)
    async with hub.store.unit_of_work() as repos:
        plan = await load_plan(repos, services.cipher, agent, services.config, workflow=workflow)
    assert sorted(s.instructions for s in plan.skills) == ["OPERATOR-SKILL", "OPERATOR-TAGGED"]
    assert [g.id for g in plan.guardrails] == [operator_rail.id]
    warnings = "\n".join(plan.warnings)
    assert f"skill {bobs_skill.id} belongs to another owner" in warnings
    assert f"guardrail {bobs_rail.id} belongs to another owner" in warnings
