"""M4 over HTTP: owners cannot save limits above the operator's ceilings, and the saved
`allowed_hosts` reach the sandbox (real app, real embedded PostgreSQL, real sandbox run)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tbd_agents.api import create_app
from tbd_agents.engine.sandbox import Ceilings, set_save_ceilings
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import Api, make_settings
from tests.support import pg


@pytest.fixture
async def ceiling_api(pg18_server: str, tmp_path: Path) -> AsyncIterator[Api]:
    url = pg.create_migrated_database(pg18_server, prefix="sandboxapi")
    store = PostgresStore(create_engine(url, pool_size=2, max_overflow=2), url=url)
    settings = make_settings(tmp_path, sandbox_max_timeout_seconds=40, sandbox_max_memory_mb=300)
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, settings)
    await store.close()
    pg.drop_database(url)
    set_save_ceilings(Ceilings())


SRC = "import os\ndef run():\n    return os.environ.get('HTTP_PROXY', 'no proxy')\n"


async def test_limits_above_the_ceiling_are_refused_on_create_and_update(ceiling_api: Api) -> None:
    async with await ceiling_api.user() as client:
        for field, value, setting in (
            ("timeout_seconds", 3600, "SANDBOX_MAX_TIMEOUT_SECONDS=40"),
            ("memory_limit_mb", 65536, "SANDBOX_MAX_MEMORY_MB=300"),
        ):
            r = await client.post(
                "/api/custom-tools",
                json={"name": f"greedy-{field}", "source_code": SRC, field: value},
            )
            assert r.status_code == 422, r.text
            assert setting in r.json()["error"]["message"]
        r = await client.post(
            "/api/custom-tools",
            json={
                "name": "modest",
                "source_code": SRC,
                "timeout_seconds": 40,
                "memory_limit_mb": 300,
            },
        )
        assert r.status_code == 201, r.text
        tool_id = r.json()["id"]
        r = await client.patch(f"/api/custom-tools/{tool_id}", json={"timeout_seconds": 41})
        assert r.status_code == 422 and "SANDBOX_MAX_TIMEOUT_SECONDS" in r.text
        r = await client.patch(
            f"/api/custom-tools/{tool_id}", json={"allowed_hosts": ["https://x/"]}
        )
        assert r.status_code == 422 and "allowed_hosts" in r.text
        r = await client.patch(
            f"/api/custom-tools/{tool_id}", json={"allowed_hosts": ["api.example.com:443"]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["allowed_hosts"] == ["api.example.com:443"]
        # the saved allowed_hosts give the run its proxy (and nothing else)
        r = await client.post(f"/api/custom-tools/{tool_id}/run", json={"arguments": {}})
        assert r.status_code == 200, r.text
        assert r.json()["ok"] and r.json()["value"] == "http://127.0.0.1:3128", r.json()
