"""`tbd-agents keys …`, `tokens generate-key` and `serve`'s refusals, against a migrated database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner, Result

from tbd_agents.cli import app as cli
from tbd_agents.cli.serve import has_api_keys
from tests.api.conftest import Api


async def _cli(args: list[str]) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, args)


@pytest.fixture
def cli_env(fresh_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Api:
    monkeypatch.setenv("POSTGRES_URI", fresh_api.store.url.render_as_string(hide_password=False))
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    return fresh_api


async def test_keys_create_list_revoke(cli_env: Api) -> None:
    api = cli_env
    api.app.state.ctx.auth.cache_seconds = 0.2  # revocation from another process: within this
    assert await has_api_keys(api.store) is False
    created = await _cli(["keys", "create", "--admin", "--name", "ops laptop"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("tbd_")
    assert await has_api_keys(api.store) is True
    async with api.client(key) as client:
        assert (await client.get("/api/me")).json() == {
            "identity": "admin",
            "scope": "admin",
            "via": "api_key",
        }

    user = await _cli(["keys", "create", "--owner", "dana", "--read-only"])
    assert user.exit_code == 0
    listed = await _cli(["keys", "list"])
    assert listed.exit_code == 0
    assert (
        "ops laptop" in listed.stdout and "dana" in listed.stdout and "read_only" in listed.stdout
    )
    assert key not in listed.stdout

    revoked = await _cli(["keys", "revoke", key[:12]])
    assert revoked.exit_code == 0, revoked.output
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app),
        base_url="http://x",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        await asyncio.sleep(0.3)
        assert (await client.get("/api/me")).status_code == 401


async def test_keys_create_needs_an_owner_and_one_scope(cli_env: Api) -> None:
    missing = await _cli(["keys", "create"])
    assert missing.exit_code == 1 and "--owner" in missing.output
    both = await _cli(["keys", "create", "--admin", "--read-only"])
    assert both.exit_code == 1
    unknown = await _cli(["keys", "revoke", "no-such-key"])
    assert unknown.exit_code == 1 and "Traceback" not in unknown.output


def test_generate_key_prints_a_fernet_key() -> None:
    result = CliRunner().invoke(cli, ["tokens", "generate-key"])
    assert result.exit_code == 0
    Fernet(result.stdout.strip().encode())


def test_serve_refuses_open_access_off_loopback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ALLOW_UNAUTHENTICATED", "true")
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 1
    assert "loopback" in result.output and "Traceback" not in result.output
