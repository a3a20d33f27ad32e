"""Runs with the real engine on a runtime, on PostgreSQL or the MongoDB emulation, against the
local protocol server (helpers of the recording and budget tests)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy.engine import URL

from tbd_agents.config import Settings
from tbd_agents.domain.enums import ProviderType
from tbd_agents.domain.models import Agent, Provider, Token, Workflow
from tbd_agents.domain.types import utcnow
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.engine.config import EngineConfig
from tbd_agents.observability.usage.records import UsageFilter
from tbd_agents.observability.usage.store import UsageStore, usage_store_for
from tbd_agents.runtime.events import RunEvent
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import DocumentStore
from tests.support.mongo import make_mongo_store

FERNET = f"1:{Fernet.generate_key().decode()}"
PRICE = ModelCatalog.load(EngineConfig().model_catalog).get("gpt-4o")


def settings_for(url: URL | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "postgres_uri": url.render_as_string(hide_password=False) if url else None,
        "db_backend": "postgres" if url else "mongo",
        "token_encryption_key": FERNET,
        "outbound_allowed_hosts": "127.0.0.1",
        "webhook_allowed_hosts": "127.0.0.1",
        "redis_url": None,
        "run_lease_seconds": 5.0,
        "embedding_provider": "hashing",
        "memory_expiry_sweep_seconds": 0,
    }
    return Settings(**(values | overrides))


@dataclass
class Hub:
    """A runtime running the engine, its document store and its usage store."""

    rt: Runtime
    store: DocumentStore
    usage: UsageStore
    settings: Settings

    async def seed(self, url: str, owner: str, **workflow: Any) -> Workflow:
        """A provider of `owner` pointed at the protocol server, an agent and a workflow."""
        cipher = KeyRingProvider(self.settings).cipher()
        key_name = f"key-{uuid.uuid4().hex[:8]}"
        encrypted, version = cipher.encrypt("sk-test")
        async with self.store.unit_of_work() as repos:
            await repos.tokens.create(
                Token(name=key_name, encrypted_value=encrypted, key_version=version,
                      created_by=owner)
            )  # fmt: skip
            provider = await repos.providers.create(
                Provider(name=f"p-{key_name}", provider_type=ProviderType.OPENAI,
                         api_key_token_name=key_name, base_url=f"{url}/v1", created_by=owner)
            )  # fmt: skip
            agent = await repos.agents.create(
                Agent(name=f"agent-{key_name}", model="gpt-4o", provider_id=provider.id,
                      created_by=owner, builtin_tools=["manage_todo_list"])
            )  # fmt: skip
            return await repos.workflows.create(
                Workflow(agent_id=agent.id, title=f"wf-{key_name}", github_user=owner,
                         max_turns=4, **workflow)
            )  # fmt: skip

    async def events(self, task_id: str) -> list[RunEvent]:
        async def gather() -> list[RunEvent]:
            return [e async for e in self.rt.follow(task_id, 0)]

        return await asyncio.wait_for(gather(), 60)


@asynccontextmanager
async def hub(backend: str, url: URL | None, **overrides: Any) -> AsyncIterator[Hub]:
    """A runtime on `backend` ("pg": the database at `url`; "mongo": a fresh emulated one)."""
    settings = settings_for(url if backend == "pg" else None, **overrides)
    engine = None
    if backend == "pg":
        assert url is not None
        engine = create_engine(url, application_name="usage-tests", pool_size=4)
        store: Any = PostgresStore(engine, owns_engine=False)
    else:
        store = await make_mongo_store()
    rt = await Runtime.open(settings, engine or store, role="api", store=store)
    await rt.start()
    try:
        yield Hub(rt, store, usage_store_for(store), settings)
    finally:
        await rt.aclose(drain_seconds=5)
        if engine is not None:
            await engine.dispose()
        else:
            await store.close()


def today_filter(**values: tuple[str, ...]) -> UsageFilter:
    today = utcnow().astimezone(UTC).date()
    return UsageFilter(today, today, dict(values))


def now() -> datetime:
    return utcnow()
