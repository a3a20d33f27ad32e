"""Secrets: encrypted at rest, never in a response, a log line or a bundle; key rotation."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tbd_agents.api import create_app
from tbd_agents.cli import app as cli
from tbd_agents.domain.models import Token
from tbd_agents.security.cipher import (
    KeyFile,
    SecretUnreadable,
    TokenCipher,
    generate_fernet_key,
    key_file_path,
)
from tbd_agents.services.tokens import reencrypt_all, resolve_tree
from tbd_agents.storage.protocol import Query, eq
from tests.api.conftest import Api, make_settings
from tests.api.factory import uniq

SECRET = "SuperSecret-7f3a9c2e-do-not-leak"
PASSWORD = "pw-b81d44e0-hidden"


async def test_no_secret_in_responses_logs_or_bundles(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[bytes] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        bodies.append(response.content)

    key = await api.key()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app),
        base_url="http://api",
        headers={"Authorization": f"Bearer {key}"},
        event_hooks={"response": [keep]},
    ) as client:
        token = (
            await client.post("/api/tokens", json={"name": uniq("tok"), "value": SECRET})
        ).json()
        await client.get(f"/api/tokens/{token['id']}")
        await client.get("/api/tokens")
        await client.patch(f"/api/tokens/{token['id']}", json={"value": SECRET + "-2"})
        await client.post("/api/tokens", json={"name": token["name"], "value": SECRET})  # 409
        await client.post("/api/tokens", json={"name": "", "value": SECRET})  # 422
        await client.post(
            "/api/tokens", json={"name": "x", "value": SECRET, "extra": SECRET}
        )  # 422
        await client.post(
            "/api/tokens",
            content=b'{"value": "' + SECRET.encode() + b'"',
            headers={"content-type": "application/json"},
        )
        dsn = f"postgresql://app:{PASSWORD}@db.internal:5432/docs"
        mcp = (
            await client.post(
                "/api/mcps",
                json={
                    "name": uniq("mcp"),
                    "transport_type": "streamable_http",
                    "connection_config": {
                        "url": "https://mcp.example/x",
                        "env": {"DATABASE_URL": dsn},
                    },
                },
            )
        ).json()
        source = (
            await client.post(
                "/api/knowledge-sources",
                json={
                    "name": uniq("ks"),
                    "source_type": "pgvector",
                    "connection_config": {"dsn": dsn},
                },
            )
        ).json()
        provider = (
            await client.post(
                "/api/providers",
                json={
                    "name": uniq("p"),
                    "base_url": f"https://user:{PASSWORD}@llm.example/v1",
                    "api_key_token_name": token["name"],
                },
            )
        ).json()
        await client.get(f"/api/mcps/{mcp['id']}")
        await client.get("/api/knowledge-sources")
        await client.get(f"/api/providers/{provider['id']}")
        await client.get("/api/export", params={"include_items": True})
        await client.get("/api/providers/" + provider["id"] + "/models")

    assert mcp["connection_config"]["env"]["DATABASE_URL"].startswith("{{token:conn.mcp_servers.")
    assert source["connection_config"]["dsn"].startswith("{{token:conn.knowledge_sources.")
    assert provider["base_url"].startswith("{{token:conn.providers.")
    everything = b"\n".join(bodies).decode() + "\n" + caplog.text
    for secret in (SECRET, PASSWORD):
        assert secret not in everything
    assert len(bodies) >= 16

    async with api.store.unit_of_work() as repos:
        stored = await repos.tokens.find_one(eq("id", token["id"]))
        assert stored is not None and SECRET not in stored.encrypted_value
        mcp_row = await repos.mcp_servers.get(mcp["id"])
        assert PASSWORD not in str(mcp_row.connection_config)
        # Resolved only at use time, for the record's owner.
        resolved = await resolve_tree(
            repos, api.app.state.ctx.cipher(), mcp["created_by"], mcp_row.connection_config
        )
        assert resolved["env"]["DATABASE_URL"] == dsn
        assert (
            await resolve_tree(
                repos,
                api.app.state.ctx.cipher(),
                mcp["created_by"],
                "{{token:" + token["name"] + "}}",
            )
            == SECRET + "-2"
        )

    async with await api.user() as other:  # deleting the MCP server removes the tokens it made
        assert (await other.delete(f"/api/mcps/{mcp['id']}")).status_code == 404
    async with api.client(key) as owner:
        assert (await owner.delete(f"/api/mcps/{mcp['id']}")).status_code == 204
    async with api.store.unit_of_work() as repos:
        names = [
            t.name
            async for t in repos.tokens.iterate(
                Query(filters=(eq("created_by", mcp["created_by"]),))
            )
        ]
    assert not [n for n in names if n.startswith(f"conn.mcp_servers.{mcp['id']}")]
    assert [n for n in names if n.startswith(f"conn.knowledge_sources.{source['id']}")]


async def test_reencrypt_makes_tokens_readable_with_the_new_key_only(fresh_api: Api) -> None:
    api = fresh_api
    old, new = generate_fernet_key(), generate_fernet_key()
    old_cipher = TokenCipher({1: old})
    names = [uniq("rot") for _ in range(3)]
    async with api.store.unit_of_work() as repos:
        for name in names:
            value, version = old_cipher.encrypt(f"value-of-{name}")
            await repos.tokens.create(Token(name=name, encrypted_value=value, key_version=version))
    new_only = TokenCipher({2: new})

    async def read(cipher: TokenCipher) -> list[str]:
        async with api.store.unit_of_work() as repos:
            rows = [await repos.tokens.find_one(eq("name", n)) for n in names]
        return [cipher.decrypt(r.encrypted_value) for r in rows if r is not None]

    with pytest.raises(SecretUnreadable):
        await read(new_only)
    both = TokenCipher({1: old, 2: new})
    assert await read(both) == [f"value-of-{n}" for n in names]  # both keys accepted meanwhile
    assert await reencrypt_all(api.store, both, batch_size=2) >= 3
    assert await read(new_only) == [f"value-of-{n}" for n in names]
    with pytest.raises(SecretUnreadable):
        await read(old_cipher)
    assert await reencrypt_all(api.store, both) == 0


async def test_rotate_key_cli_with_the_key_file(
    fresh_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = fresh_api
    db_url = api.store.url
    settings = make_settings(tmp_path, token_encryption_key=None)
    app = create_app(settings, api.store)
    async with app.router.lifespan_context(app):
        key_file = KeyFile(key_file_path(settings))
        assert stat.S_IMODE(os.stat(key_file.path).st_mode) == 0o600
        key = await api.key()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://x",
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            name = uniq("cli")
            assert (
                await client.post("/api/tokens", json={"name": name, "value": "v1"})
            ).status_code == 201
            before = key_file.read()
            monkeypatch.setenv("POSTGRES_URI", db_url.render_as_string(hide_password=False))
            monkeypatch.setenv("DATA_DIR", str(tmp_path))
            monkeypatch.delenv("TOKEN_ENCRYPTION_KEY", raising=False)
            result = await _run_cli(["tokens", "rotate-key"])
            assert result.exit_code == 0, result.output
            after = key_file.read()
            assert list(after) == [max(before) + 1]
            assert stat.S_IMODE(os.stat(key_file.path).st_mode) == 0o600
            ctx = app.state.ctx
            assert ctx.cipher().current_version == max(
                after
            )  # the running server followed the file
            async with api.store.unit_of_work() as repos:
                row = await repos.tokens.find_one(eq("name", name))
            assert row is not None and row.key_version == max(after)
            assert TokenCipher(after).decrypt(row.encrypted_value) == "v1"
            with pytest.raises(SecretUnreadable):
                TokenCipher(before).decrypt(row.encrypted_value)
            second = (
                await client.post("/api/tokens", json={"name": uniq("cli"), "value": "v2"})
            ).json()
            assert second["key_version"] == max(after)


async def _run_cli(args: list[str]) -> object:
    import asyncio

    return await asyncio.to_thread(CliRunner().invoke, cli, args)
