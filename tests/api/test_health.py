"""/health and /health/ready: each dependency checked with its latency; 503 when one is down."""

from __future__ import annotations

from pathlib import Path

import httpx

from tbd_agents.api import create_app
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import Api, make_settings


async def _ready(app: object) -> httpx.Response:
    async with (
        app.router.lifespan_context(app),  # type: ignore[attr-defined]
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as client,  # type: ignore[arg-type]
    ):
        assert (await client.get("/health")).status_code == 200
        return await client.get("/health/ready")


async def test_unreachable_database_is_503(tmp_path: Path) -> None:
    store = PostgresStore(create_engine("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2))
    app = create_app(make_settings(tmp_path), store)
    response = await _ready(app)
    await store.close()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    database = next(c for c in body["checks"] if c["name"] == "database")
    assert database["ok"] is False and "127.0.0.1" in database["detail"]


async def test_redis_checked_when_configured(api: Api, tmp_path: Path) -> None:
    up = await _ready(
        create_app(make_settings(tmp_path / "a", redis_url="redis://127.0.0.1:6379/0"), api.store)
    )
    assert {c["name"]: c["ok"] for c in up.json()["checks"]}["redis"] is True
    down = await _ready(
        create_app(make_settings(tmp_path / "b", redis_url="redis://127.0.0.1:1/0"), api.store)
    )
    assert down.status_code == 503
    assert {c["name"]: c["ok"] for c in down.json()["checks"]} == {
        "database": True,
        "vector_store": True,
        "redis": False,
    }
