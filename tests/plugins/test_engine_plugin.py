"""One run through the runtime and the engine (the workflow executor path): a user's agent
lists the operator's migrated `slack` plugin record in custom_tool_ids, the scripted model
(tests/engine/protocol_server.py) calls it, the plugin posts to the Slack fake with the token
resolved from the secret store, and the answer returns to the model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography.fernet import Fernet

from tbd_agents.config import Settings
from tbd_agents.domain.enums import ProviderType, TaskStatus
from tbd_agents.domain.models import Agent, CustomTool, Provider, Token, Workflow
from tbd_agents.plugins.loader import sync_plugins
from tbd_agents.runtime import leases
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.plugins.fakes import SLACK_TOKEN, SlackFake
from tests.support import pg

FERNET = f"1:{Fernet.generate_key().decode()}"


@pytest.fixture(scope="module")
def model() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    with SlackFake().running() as fake:
        yield fake


@pytest.fixture
async def runtime(pg18_server: str) -> AsyncIterator[tuple[Runtime, PostgresStore, Settings]]:
    url = pg.create_migrated_database(pg18_server, prefix="plugrun")
    settings = Settings(
        postgres_uri=url.render_as_string(hide_password=False),
        token_encryption_key=FERNET,
        outbound_allowed_hosts="127.0.0.1",  # the scripted model and the Slack fake
        redis_url=None,
        run_lease_seconds=5.0,
        embedding_provider="hashing",
    )
    engine = create_engine(url, application_name="plugin-run-tests", pool_size=4)
    store = PostgresStore(engine, owns_engine=False)
    rt = await Runtime.open(settings, engine, role="api", store=store)
    await rt.start()
    yield rt, store, settings
    await rt.aclose(drain_seconds=5)
    await engine.dispose()
    pg.drop_database(url)


async def test_a_users_agent_calls_the_operators_slack_plugin_in_a_workflow_run(
    runtime: tuple[Runtime, PostgresStore, Settings], model: ProtocolServer, slack: SlackFake
) -> None:
    rt, store, settings = runtime
    cipher = KeyRingProvider(settings).cipher()
    async with store.unit_of_work() as repos:
        for name, secret, owner in (
            ("openai-key", "sk-alice", "alice"),
            ("slack-bot-token", SLACK_TOKEN, None),  # the operator's token
        ):
            value, version = cipher.encrypt(secret)
            await repos.tokens.create(
                Token(name=name, encrypted_value=value, key_version=version, created_by=owner)
            )
        # a record migrated from the existing system: a shim that must not run
        shim = await repos.custom_tools.create(
            CustomTool(
                name="slack", is_plugin=True,
                source_code="from app.plugins.slack import SlackPlugin\nraise SystemExit(3)\n",
                env_config={"SLACK_BOT_TOKEN": "{{token:slack-bot-token}}",
                            "SLACK_API_URL": f"{slack.url}/api"},
            )
        )  # fmt: skip
        provider = await repos.providers.create(
            Provider(name="p", provider_type=ProviderType.OPENAI, api_key_token_name="openai-key",
                     base_url=f"{model.url}/v1", created_by="alice")
        )  # fmt: skip
        agent = await repos.agents.create(
            Agent(name="notifier", model="gpt-4o", provider_id=provider.id, created_by="alice",
                  custom_tool_ids=[shim.id])
        )  # fmt: skip
        wf = await repos.workflows.create(
            Workflow(agent_id=agent.id, title="wf", github_user="alice", max_turns=4)
        )
    await sync_plugins(store, settings)  # start-up: takes the shim record over in place

    model.reset()
    model.script(
        Turn(tool_calls=[("slack", {"operation": "send_message", "channel_id": "C1",
                                    "text": "Deploy finished"})]),
        Turn(text="Posted to #general."),
    )  # fmt: skip
    task = await rt.start_run(wf.id, "Tell #general the deploy finished")

    async def events() -> list:
        return [e async for e in rt.follow(task.id, 0)]

    seen = await asyncio.wait_for(events(), 60)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.COMPLETED, [e.data for e in seen if e.type == "error"]
    assert slack.posted == [{"channel": "C1", "text": "Deploy finished"}]
    assert slack.seen[-1].headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    # the tool offered to the model is the plugin's (schema with its operations)
    offered = {t["function"]["name"]: t["function"] for t in model.requests[0].body["tools"]}
    assert "send_message" in offered["slack"]["parameters"]["properties"]["operation"]["enum"]
    # the tool result the model read in its second turn
    result = next(e for e in seen if e.type == "tool_result")
    assert result.data["source"] == "plugin:slack" and result.data["is_error"] is False
    assert json.loads(result.data["content"])["ts"].startswith("17000001")
    assert "17000001" in model.requests[1].all_text()
    assert json.loads(row.response) == {"response": "Posted to #general."}


async def test_unknown_and_user_owned_plugin_records_are_not_offered(
    runtime: tuple[Runtime, PostgresStore, Settings], model: ProtocolServer, slack: SlackFake
) -> None:
    """A plugin record whose plugin is not installed, a plugin record a user owns (it could
    point installed code at hosts of the user's choosing), and the operator's record naming a
    token only a user has (everyone's runs would use it) are skipped with a warning."""
    rt, store, settings = runtime
    cipher = KeyRingProvider(settings).cipher()
    async with store.unit_of_work() as repos:
        value, version = cipher.encrypt("sk-bob")
        await repos.tokens.create(
            Token(name="bob-key", encrypted_value=value, key_version=version, created_by="bob")
        )
        ghost = await repos.custom_tools.create(
            CustomTool(name="ghost_plugin", is_plugin=True, source_code="")
        )
        value, version = cipher.encrypt("xoxb-bobs-own-workspace")
        await repos.tokens.create(
            Token(name="slack-bot-token", encrypted_value=value, key_version=version,
                  created_by="bob")
        )  # fmt: skip
        # the operator's record names a token only bob has: not resolved with bob's token
        operators = await repos.custom_tools.create(
            CustomTool(name="slack", is_plugin=True,
                       env_config={"SLACK_BOT_TOKEN": "{{token:slack-bot-token}}",
                                   "SLACK_API_URL": f"{slack.url}/api"})
        )  # fmt: skip
        bobs = await repos.custom_tools.create(
            CustomTool(name="slack", is_plugin=True, created_by="bob",
                       env_config={"SLACK_BOT_TOKEN": "x", "SLACK_API_URL": f"{slack.url}/api"})
        )  # fmt: skip
        provider = await repos.providers.create(
            Provider(name="pb", provider_type=ProviderType.OPENAI, api_key_token_name="bob-key",
                     base_url=f"{model.url}/v1", created_by="bob")
        )  # fmt: skip
        agent = await repos.agents.create(
            Agent(name="bobs", model="gpt-4o", provider_id=provider.id, created_by="bob",
                  custom_tool_ids=[ghost.id, bobs.id, operators.id])
        )  # fmt: skip
        wf = await repos.workflows.create(
            Workflow(agent_id=agent.id, title="wf", github_user="bob", max_turns=2)
        )
    model.reset()
    model.script(Turn(text="No tools here."))
    task = await rt.start_run(wf.id, "hi")

    async def events() -> list:
        return [e async for e in rt.follow(task.id, 0)]

    seen = await asyncio.wait_for(events(), 60)
    warnings = [e.data["message"] for e in seen if e.data.get("level") == "warning"]
    assert any("'ghost_plugin' is not installed on this server" in w for w in warnings), warnings
    assert any("belongs to a user" in w and bobs.id in w for w in warnings), warnings
    assert any("token 'slack-bot-token' belongs to a user" in w for w in warnings), warnings
    assert not model.requests[0].body.get("tools")
    assert slack.seen == []
