"""Authorization attacks over the real API (embedded PostgreSQL, real keys): who may make the
server run code (C1), whose knowledge a tag search returns (H1), GitHub logins that collide with
key owners (H3), keys outliving their creator (L2), unthrottled guessing (L3), and imports that
skipped the save-time checks (M6)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.models import CustomTool, McpServer, Token
from tbd_agents.domain.types import utcnow
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import eq
from tests.api.conftest import Api, make_settings
from tests.support import pg
from tests.support.http_stub import StubHandler, serve

SERVERS = Path(__file__).parents[1] / "engine" / "servers"


@pytest.fixture(scope="module")
def authz_db(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, prefix="authz")
    yield url
    pg.drop_database(url)


@pytest.fixture(scope="module")
async def authz_store(authz_db: URL) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(create_engine(authz_db, pool_size=4, max_overflow=4), url=authz_db)
    yield store
    await store.close()


async def _app(store: PostgresStore, tmp: Path, **settings: Any) -> AsyncIterator[Api]:
    # the product's defaults (tests/api's settings turn the opt-ins on)
    values: dict[str, Any] = {
        "auth_failure_limit": 1000,
        "user_stdio_mcp_commands": "",
        "allow_user_custom_tools": False,
    }
    values.update(settings)
    conf = make_settings(tmp, **values)
    app = create_app(conf, store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, conf)


@pytest.fixture
async def hub(authz_store: PostgresStore, tmp_path: Path) -> AsyncIterator[Api]:
    """The product's defaults: no stdio commands for users, no user custom tools."""
    async for api in _app(authz_store, tmp_path):
        yield api


def _name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def _shell(marker: Path) -> dict[str, Any]:
    return {"command": "/bin/sh", "args": ["-c", f"touch {marker}"]}


# --- C1: stdio MCP servers ------------------------------------------------------------------
async def test_user_cannot_make_the_server_run_a_command(hub: Api, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    async with await hub.user() as user, await hub.user(_name("adm"), KeyScope.ADMIN) as admin:
        made = await user.post(
            "/api/mcps", json={"name": _name("sh"), "connection_config": _shell(marker)}
        )
        assert made.status_code == 403, made.text
        assert "USER_STDIO_MCP_COMMANDS" in made.json()["error"]["message"]
        # switching an existing http server to stdio is refused the same way
        http = await user.post(
            "/api/mcps",
            json={
                "name": _name("h"),
                "transport_type": "streamable_http",
                "connection_config": {"url": "http://mcp.example:9/mcp"},
            },
        )
        assert http.status_code == 201, http.text
        patched = await user.patch(
            f"/api/mcps/{http.json()['id']}",
            json={"transport_type": "stdio", "connection_config": _shell(marker)},
        )
        assert patched.status_code == 403, patched.text
        assert not marker.exists()

        # the same sequence by an admin runs the command (it is not an MCP server: ok=false)
        made = await admin.post(
            "/api/mcps", json={"name": _name("sh"), "connection_config": _shell(marker)}
        )
        assert made.status_code == 201, made.text
        tested = await admin.post(f"/api/mcps/{made.json()['id']}/test")
        assert tested.status_code == 200 and tested.json()["ok"] is False
        assert marker.exists()


async def test_migrated_user_stdio_server_is_not_started_by_a_test(
    hub: Api, tmp_path: Path
) -> None:
    marker = tmp_path / "migrated"
    owner = _name("mig")
    async with hub.store.unit_of_work() as repos:
        server = await repos.mcp_servers.create(
            McpServer(name=_name("old"), connection_config=_shell(marker), created_by=owner)
        )
    async with await hub.user(owner) as user:
        tested = await user.post(f"/api/mcps/{server.id}/test")
        assert tested.status_code == 403, tested.text
        changed = await user.patch(f"/api/mcps/{server.id}", json={"description": "x"})
        assert changed.status_code == 403
        assert (await user.delete(f"/api/mcps/{server.id}")).status_code == 204
    assert not marker.exists()


async def test_allow_listed_command_works_for_a_user(
    authz_store: PostgresStore, tmp_path: Path
) -> None:
    async for api in _app(authz_store, tmp_path, user_stdio_mcp_commands=sys.executable):
        async with await api.user() as user:
            # A user's allow-listed server runs confined: it sees no test tree, so its source
            # travels in the arguments.
            source = (SERVERS / "demo_mcp.py").read_text()
            config = {"command": sys.executable, "args": ["-I", "-c", source, "stdio"]}
            made = await user.post(
                "/api/mcps", json={"name": _name("ok"), "connection_config": config}
            )
            assert made.status_code == 201, made.text
            tested = (await user.post(f"/api/mcps/{made.json()['id']}/test")).json()
            assert tested["ok"] is True and tested["tools"], tested
            other = await user.post(
                "/api/mcps",
                json={"name": _name("no"), "connection_config": _shell(tmp_path / "m")},
            )
            assert other.status_code == 403
            # a token cannot smuggle another command past the list
            smuggled = await user.post(
                "/api/mcps",
                json={"name": _name("tok"), "connection_config": {"command": "{{token:x}}"}},
            )
            assert smuggled.status_code == 403


# --- custom tools ---------------------------------------------------------------------------
TOOL = "def run(**kwargs):\n    return {'ran': True}\n"


async def test_custom_tools_are_admin_only_by_default(hub: Api) -> None:
    owner = _name("u")
    async with await hub.user(owner) as user, await hub.user(_name("a"), KeyScope.ADMIN) as admin:
        body = {"name": "run", "source_code": TOOL}
        denied = await user.post("/api/custom-tools", json={**body, "name": _name("t")})
        assert denied.status_code == 403 and "ALLOW_USER_CUSTOM_TOOLS" in denied.text
        checked = await user.post("/api/custom-tools/validate", json=body)
        assert checked.status_code == 403
        async with hub.store.unit_of_work() as repos:  # as migrated
            old = await repos.custom_tools.create(
                CustomTool(name=_name("old"), source_code=TOOL, created_by=owner)
            )
        assert (await user.post(f"/api/custom-tools/{old.id}/run", json={})).status_code == 403
        # an admin running the user's tool is refused too: runs check the owner
        assert (await admin.post(f"/api/custom-tools/{old.id}/run", json={})).status_code == 403

        mine = await admin.post("/api/custom-tools", json={**body, "name": _name("t")})
        assert mine.status_code == 201, mine.text
        assert (await admin.post("/api/custom-tools/validate", json=body)).json()["ok"] is True
        ran = await admin.post(f"/api/custom-tools/{mine.json()['id']}/run", json={})
        assert ran.json()["value"] == {"ran": True}, ran.text


async def test_operator_may_let_users_write_custom_tools(
    authz_store: PostgresStore, tmp_path: Path
) -> None:
    async for api in _app(authz_store, tmp_path, allow_user_custom_tools=True):
        async with await api.user() as user:
            made = await user.post(
                "/api/custom-tools", json={"name": _name("t"), "source_code": TOOL}
            )
            assert made.status_code == 201, made.text


async def test_read_only_keys_unchanged(hub: Api) -> None:
    async with await hub.user(scope=KeyScope.READ_ONLY) as reader:
        made = await reader.post("/api/skills", json={"name": _name("s")})
        assert made.status_code == 403 and "read-only" in made.text
        key = await reader.post("/api/keys", json={})
        assert key.status_code == 403


# --- H1: knowledge search by tags -----------------------------------------------------------
async def test_tag_search_returns_only_the_callers_knowledge(hub: Api) -> None:
    tag = _name("tag")
    async with await hub.user() as alice, await hub.user() as bob:
        source = await alice.post("/api/knowledge-sources", json={"name": _name("src")})
        item = await alice.post(
            "/api/knowledge-items",
            json={
                "source_id": source.json()["id"],
                "name": "secret",
                "text_content": "The vault combination is quokka-4471.",
                "tags": [tag],
            },
        )
        assert item.status_code == 201, item.text
        mine = await alice.post(
            "/api/knowledge/search", json={"query": "vault combination", "tags": [tag]}
        )
        assert mine.json() and "quokka" in mine.json()[0]["text"]
        theirs = await bob.post(
            "/api/knowledge/search", json={"query": "vault combination quokka", "tags": [tag]}
        )
        assert theirs.status_code == 200 and theirs.json() == []
        async with await hub.user(_name("adm"), KeyScope.ADMIN) as admin:
            seen = await admin.post(
                "/api/knowledge/search", json={"query": "vault combination", "tags": [tag]}
            )
            assert seen.json(), "admins search everything"


# --- H3: GitHub logins ----------------------------------------------------------------------
class _FakeGitHub(StubHandler):
    logins: dict[str, str] = {}

    def do_GET(self) -> None:
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        login = self.logins.get(token)
        body = json.dumps({"login": login} if login else {"message": "Bad credentials"}).encode()
        self.reply(200 if login else 401, body)


@pytest.fixture(scope="module")
def github_url() -> Iterator[str]:
    with serve(_FakeGitHub) as address:
        yield f"http://{address}"


async def test_github_login_cannot_take_a_key_owners_identity(
    authz_store: PostgresStore, tmp_path: Path, github_url: str
) -> None:
    alice, octo, linked = _name("alice"), _name("octo"), _name("linked")
    _FakeGitHub.logins.update(
        {"gh-admin": "admin", "gh-local": "local", "gh-alice": alice, "gh-octo": octo,
         "gh-linked": linked}
    )  # fmt: skip
    async for api in _app(authz_store, tmp_path, github_auth=True, github_api_url=github_url):
        await api.key(alice)  # an ordinary API-key user
        await api.key("admin", KeyScope.ADMIN)
        async with api.store.unit_of_work() as repos:
            await ApiKeys(repos).create(linked, github=True)
        for token in ("gh-admin", "gh-local", "gh-alice"):
            async with api.client(token) as gh:
                me = await gh.get("/api/me")
                assert me.status_code == 403, (token, me.text)
                assert "--github" in me.json()["error"]["message"]
        async with api.client("gh-octo") as gh:  # a plain GitHub user
            me = await gh.get("/api/me")
            assert me.status_code == 200 and me.json()["identity"] == octo
        async with api.client("gh-linked") as gh:  # linked by an admin: same identity
            assert (await gh.get("/api/me")).json()["identity"] == linked


# --- L2 / L3: keys --------------------------------------------------------------------------
async def test_expiring_key_cannot_mint_a_longer_lived_key(hub: Api) -> None:
    owner = _name("exp")
    soon = utcnow() + timedelta(hours=1)
    async with hub.store.unit_of_work() as repos:
        made = await ApiKeys(repos).create(owner, expires_at=soon)
    async with hub.client(made.plaintext) as user:
        forever = await user.post("/api/keys", json={})
        assert (
            forever.status_code == 422
            and forever.json()["error"]["details"]["field"] == "expires_at"
        )
        later = (soon + timedelta(days=1)).isoformat()
        assert (await user.post("/api/keys", json={"expires_at": later})).status_code == 422
        earlier = (soon - timedelta(minutes=5)).isoformat()
        ok = await user.post("/api/keys", json={"expires_at": earlier})
        assert ok.status_code == 201, ok.text


async def test_failed_authentications_are_throttled(
    authz_store: PostgresStore, tmp_path: Path
) -> None:
    async for api in _app(authz_store, tmp_path, auth_failure_limit=20):
        good = await api.key()
        async with api.client("tbd_" + "x" * 40) as bad:
            codes = [(await bad.get("/api/me")).status_code for _ in range(21)]
            assert codes[:20] == [401] * 20 and codes[20] == 429, codes
            throttled = await bad.get("/api/me")
            assert int(throttled.headers["Retry-After"]) >= 1
        async with api.client(good) as ok:  # same client address, valid key
            assert (await ok.get("/api/me")).status_code == 200


# --- M6: import -----------------------------------------------------------------------------
def _bundle(**resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": "tbd-agents-bundle", "version": 1, "resources": resources}


async def test_import_applies_the_save_checks(hub: Api, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    async with await hub.user() as user:
        pw = "postgresql://app:hunter2-secret@db.internal:5432/app"
        src = {"name": _name("src"), "source_type": "pgvector", "connection_config": {"url": pw}}
        done = await user.post("/api/import", json=_bundle(knowledge_sources=[src]))
        assert done.status_code == 200, done.text
        (new_id,) = done.json()["knowledge_sources"]["ids"]
        shown = await user.get(f"/api/knowledge-sources/{new_id}")
        assert "hunter2" not in shown.text and "{{token:" in shown.text
        async with hub.store.unit_of_work() as repos:
            row = await repos.knowledge_sources.get(new_id)
            assert "hunter2" not in json.dumps(row.connection_config)
            secret = await repos.for_model(Token).find_one(eq("created_by", row.created_by))
            assert secret is not None and "hunter2" not in secret.encrypted_value

        # A refused item is reported in its kind's `errors` and not created; the rest imports.
        redos = {"name": _name("g"), "patterns": ["(a+)+$"]}
        bad = await user.post("/api/import", json=_bundle(guardrails=[redos]))
        assert bad.status_code == 200 and bad.json()["guardrails"]["created"] == 0, bad.text
        assert "catastrophic backtracking" in bad.json()["guardrails"]["errors"][0]
        big = {"name": _name("a"), "max_turns": 2**40}
        over = await user.post("/api/import", json=_bundle(agents=[big]))
        assert "max_turns" in over.json()["agents"]["errors"][0], over.text
        shell = {"name": _name("sh"), "connection_config": _shell(marker)}
        stdio = await user.post("/api/import", json=_bundle(mcp_servers=[shell]))
        (refused,) = stdio.json()["mcp_servers"]["errors"]
        assert "only admins may use them" in refused, refused
        tool = {"name": _name("t"), "source_code": TOOL}
        tools = await user.post("/api/import", json=_bundle(custom_tools=[tool]))
        assert tools.json()["custom_tools"]["created"] == 0
        assert "only admins may create" in tools.json()["custom_tools"]["errors"][0]
        dry = await user.post("/api/import?dry_run=true", json=_bundle(mcp_servers=[shell]))
        assert dry.json()["mcp_servers"]["created"] == 0 and dry.json()["mcp_servers"]["errors"]
        for path in ("/api/guardrails", "/api/agents", "/api/mcps", "/api/custom-tools"):
            listed = (await user.get(path)).json()
            assert (listed["items"] if isinstance(listed, dict) else listed) == [], path
    assert not marker.exists()
