"""The hub the chat fault tests talk to: the API with a user, an agent on the scripted model.

On PostgreSQL the API runs on a real socket (`tests.api.live.live_server`, the in-process
runtime and scheduler included); on the MongoDB backend (in-process emulation) it is served
through the ASGI transport, as the other MongoDB API tests do.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import ProviderType
from tbd_agents.domain.models import Agent, Provider, Token
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import DocumentStore
from tests.api.conftest import make_settings
from tests.api.live import live_server
from tests.support import pg
from tests.support.mongo import make_mongo_store

OWNER = "chat-faults"
FERNET = f"1:{Fernet.generate_key().decode()}"


@dataclass
class PgHub:
    base: str
    settings: Settings
    url: URL


def pg_hub(server_uri: str, data_dir: Path, prefix: str, **overrides: Any) -> Iterator[PgHub]:
    """A migrated database and the API serving it on a socket (a generator for a fixture)."""
    url = pg.create_migrated_database(server_uri, prefix=prefix)
    settings = Settings(
        postgres_uri=url.render_as_string(hide_password=False),
        token_encryption_key=FERNET,
        data_dir=data_dir,
        embedding_provider="hashing",
        outbound_allowed_hosts="127.0.0.1",  # the user's provider is the local scripted model
        plugins_enabled=False,
        **overrides,
    )
    try:
        with live_server(settings) as base:
            yield PgHub(base, settings, url)
    finally:
        pg.drop_database(url)


@dataclass
class Hub:
    client: httpx.AsyncClient
    store: DocumentStore
    settings: Settings
    agent_id: str


async def make_agent(
    store: DocumentStore, settings: Settings, kind: str, model_url: str, **fields: Any
) -> str:
    """An agent of OWNER on the scripted model (`kind`: openai or anthropic wire format)."""
    value, version = KeyRingProvider(settings).cipher().encrypt("sk-faults")
    suffix = time.monotonic_ns()
    anthropic = kind == "anthropic"
    async with store.unit_of_work() as repos:
        await repos.tokens.create(
            Token(name=f"k{suffix}", encrypted_value=value, key_version=version, created_by=OWNER)
        )
        provider = await repos.providers.create(
            Provider(
                name=f"p{suffix}",
                provider_type=ProviderType.ANTHROPIC if anthropic else ProviderType.OPENAI,
                api_key_token_name=f"k{suffix}",
                base_url=model_url if anthropic else f"{model_url}/v1",
                created_by=OWNER,
            )
        )
        agent = await repos.agents.create(
            Agent(
                **{
                    "name": f"agent-{suffix}",
                    "model": "claude-sonnet-4-5" if anthropic else "gpt-4o",
                    "provider_id": provider.id,
                    "memory_enabled": False,
                    "created_by": OWNER,
                    **fields,
                }
            )
        )
    return agent.id


@asynccontextmanager
async def hub(
    backend: str, kind: str, model_url: str, pg: PgHub | None, tmp_path: Path, **agent: Any
) -> AsyncIterator[Hub]:
    """The API with an agent on `kind`'s protocol (module docstring)."""
    if backend == "postgres":
        assert pg is not None
        store: Any = PostgresStore(create_engine(pg.url, pool_size=2), url=pg.url)
        try:
            agent_id = await make_agent(store, pg.settings, kind, model_url, **agent)
            async with store.unit_of_work() as repos:
                key = (await ApiKeys(repos).create(OWNER, name=f"k{time.monotonic_ns()}")).plaintext
            async with httpx.AsyncClient(
                base_url=pg.base, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as client:
                yield Hub(client, store, pg.settings, agent_id)
        finally:
            await store.close()
        return
    store = await make_mongo_store()
    settings = make_settings(
        tmp_path, db_backend="mongo", postgres_uri=None, outbound_allowed_hosts="127.0.0.1"
    )
    try:
        agent_id = await make_agent(store, settings, kind, model_url, **agent)
        app = create_app(settings, store)
        async with app.router.lifespan_context(app):
            async with store.unit_of_work() as repos:
                key = (await ApiKeys(repos).create(OWNER, scope=KeyScope.USER)).plaintext
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://mongo-hub",
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            ) as client:
                yield Hub(client, store, settings, agent_id)
    finally:
        await store.close()


def frames(body: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of each frame of an SSE body with `event:` lines."""
    out = []
    name = None
    for line in body.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            out.append((name, json.loads(line[6:])))
    return out


def legacy_frames(body: str) -> list[dict[str, Any]]:
    """The `data` of each frame of the existing workflow stream (`id:` and `data:` lines)."""
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def chat(
    h: Hub, message: str, session_id: str | None = None
) -> tuple[httpx.Response, list[tuple[str, dict[str, Any]]]]:
    """One chat turn: the response and its frames."""
    body = {"message": message, **({"session_id": session_id} if session_id else {})}
    response = await h.client.post(f"/api/agents/{h.agent_id}/chat", json=body)
    return response, frames(response.text) if response.status_code == 200 else []


async def listed(h: Hub, session_id: str, page_size: int = 5) -> list[dict[str, Any]]:
    """Every message of the session through the list API, `page_size` per page (keyset)."""
    out: list[dict[str, Any]] = []
    url: str | None = f"/api/chat/sessions/{session_id}/messages?limit={page_size}"
    while url:
        page = await h.client.get(url)
        assert page.status_code == 200, page.text
        out.extend(page.json())
        nxt = page.links.get("next")
        url = nxt["url"] if nxt else None
    return out
