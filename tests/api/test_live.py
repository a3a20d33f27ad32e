"""Over a real socket: uvicorn serving the app, which opens (and closes) its own store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.api.conftest import Api, make_settings
from tests.api.live import live_server


@pytest.fixture(scope="module")
def live_url(api_db: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(
        tmp_path_factory.mktemp("live"),
        postgres_uri=api_db.render_as_string(hide_password=False),
        postgres_pool_size=4,
    )
    with live_server(settings) as url:
        yield url


async def test_real_socket_round_trip(api: Api, live_url: str, tmp_path: Path) -> None:
    key = await api.key()
    async with httpx.AsyncClient(
        base_url=live_url, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = (await client.get("/health/ready")).json()
        assert ready["status"] == "ok"
        created = await client.post("/api/agents", json={"name": "over-tcp"})
        assert created.status_code == 201
        got = await client.get(f"/api/agents/{created.json()['id']}")
        assert got.json()["name"] == "over-tcp"
        openapi = (await client.get("/openapi.json")).json()
        assert "/api/agents" in openapi["paths"] and "/api/import" in openapi["paths"]
        assert (await client.get("/docs")).status_code == 200
    async with httpx.AsyncClient(base_url=live_url) as anonymous:
        assert (await anonymous.get("/api/agents")).status_code == 401
