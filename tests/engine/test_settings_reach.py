"""Settings of the existing TBD Agents reach the code that uses them, end to end: a workflow run
started through the runtime (as the API starts it) with DEFAULT_MODEL and the prompt budgets set
in the environment, and GITHUB_TOKEN as the key of the operator's Copilot provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tbd_agents.config import Settings, load_settings
from tbd_agents.domain.enums import AuthType, ProviderType, TaskStatus
from tbd_agents.domain.models import Agent, Provider, Workflow
from tbd_agents.engine.builder import load_plan
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.tokens import count_text
from tbd_agents.runtime import leases
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.support import pg

TOKEN = "ghp_" + "Q" * 36


@pytest.fixture(scope="module")
def reach_db(pg18_server: str):
    url = pg.create_migrated_database(pg18_server, prefix="reach")
    yield url
    pg.drop_database(url)


@pytest.fixture
def settings(reach_db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The settings start-up builds from an existing deployment's environment."""
    monkeypatch.chdir(tmp_path)
    env = {
        "POSTGRES_URI": reach_db.render_as_string(hide_password=False),
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),  # the existing bare form
        "DEFAULT_MODEL": "model-from-settings",
        "PROMPT_CONTEXT_CHAR_BUDGET": "2000",  # 500 tokens
        "GITHUB_TOKEN": TOKEN,
        "OUTBOUND_ALLOWED_HOSTS": "127.0.0.1",
        "DATA_DIR": str(tmp_path),
        "EMBEDDING_PROVIDER": "hashing",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
async def runtime(settings: Settings, reach_db) -> AsyncIterator[tuple[Runtime, PostgresStore]]:
    engine = create_engine(reach_db, application_name="settings-reach-tests", pool_size=4)
    store = PostgresStore(engine, owns_engine=False)
    rt = await Runtime.open(settings, engine, role="api", store=store)
    await rt.start()
    yield rt, store
    await rt.aclose(drain_seconds=5)
    await engine.dispose()


async def test_default_model_and_prompt_budget_reach_a_workflow_run(
    settings: Settings, runtime, protocol_server: ProtocolServer
) -> None:
    rt, store = runtime
    protocol_server.reset()
    async with store.unit_of_work() as repos:
        provider = await repos.providers.create(
            Provider(
                name="local-no-default",
                provider_type=ProviderType.CUSTOM,
                base_url=f"{protocol_server.url}/v1",
                auth_type=AuthType.NONE,
                created_by="alice",
            )
        )
        agent = await repos.agents.create(  # no model, and the provider has no default_model
            Agent(
                name="modelless",
                provider_id=provider.id,
                system_prompt="Be brief. " + "background detail " * 2000,
                created_by="alice",
            )
        )
        workflow = await repos.workflows.create(
            Workflow(agent_id=agent.id, github_user="alice", max_turns=2)
        )
    protocol_server.script(Turn(text="Done."))
    task = await rt.start_run(workflow.id, "hello")
    await asyncio.wait_for(_drain(rt, task.id), 30)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.COMPLETED, row.error
    [request] = protocol_server.requests
    assert request.body["model"] == "model-from-settings"
    system = request.conversation()[0]["text"]
    assert system.startswith("Be brief.") and count_text(system) <= 500


async def _drain(rt: Runtime, task_id: str) -> None:
    async for _ in rt.follow(task_id, 0):
        pass


async def test_github_token_is_the_key_of_the_operators_copilot_provider_only(
    settings: Settings, runtime
) -> None:
    _, store = runtime
    cipher = KeyRingProvider(settings).cipher()
    config = EngineConfig.from_settings(settings)
    keys = {}
    async with store.unit_of_work() as repos:
        for label, owner, base_url in (
            ("operator", None, None),
            ("user", "bob", None),
            ("elsewhere", None, "http://127.0.0.1:9/v1"),
        ):
            provider = await repos.providers.create(
                Provider(
                    name=f"copilot-{label}",
                    provider_type=ProviderType.GITHUB_COPILOT,
                    default_model="gpt-4o",
                    base_url=base_url,
                    created_by=owner,
                )
            )
            agent = await repos.agents.create(
                Agent(name=f"a-{label}", provider_id=provider.id, created_by=owner)
            )
            plan = await load_plan(repos, cipher, agent, config)
            keys[label] = plan.provider.api_key
    # A user's provider, or one sending requests elsewhere, never gets the server's token.
    assert keys == {"operator": TOKEN, "user": None, "elsewhere": None}
