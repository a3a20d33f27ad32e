"""M5 / M7: no secret in the server log or in provider error messages.

Canary secrets go through the real thing: log records made by the configured logging (caplog at
DEBUG), a real SDK call to a local provider that echoes our Authorization header and API key in
its 401 / 500 error body, and a real 500 from the app on an embedded PostgreSQL whose `agents`
table is broken by a trigger (the failing row's bind parameters held the canary).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tbd_agents.api import create_app
from tbd_agents.domain.enums import ProviderType
from tbd_agents.domain.models import Agent
from tbd_agents.engine.messages import ChatRequest, Message
from tbd_agents.engine.providers import ProviderSettings, build_provider
from tbd_agents.errors import UpstreamError
from tbd_agents.logs import configure_logging
from tbd_agents.security.outbound import OutboundPolicy
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import Api, make_settings
from tests.engine.conftest import FAST
from tests.support import pg
from tests.support.http_stub import StubHandler, serve

API_KEY = "sk-canary-" + uuid.uuid4().hex  # a provider key
URL_PASSWORD = "pw-canary-" + uuid.uuid4().hex[:16]
HEADER_SECRET = "hdr-canary-" + uuid.uuid4().hex[:16]
OUR_KEY = "tbd_abcd1234_" + uuid.uuid4().hex + "Zz"
FERNET = "gAAAAAB" + uuid.uuid4().hex * 2
CONFIGURED = "cfg-canary-" + uuid.uuid4().hex[:16]  # e.g. the POSTGRES_URI password
PROMPT_SECRET = "prompt-canary-" + uuid.uuid4().hex[:16]
CANARIES = (API_KEY, URL_PASSWORD, HEADER_SECRET, OUR_KEY, FERNET, CONFIGURED, PROMPT_SECRET)


def assert_clean(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"secret {canary[:12]}… leaked: {text[:2000]}"


@pytest.fixture
def configured(tmp_path: Path) -> None:
    config = make_settings(
        tmp_path, postgres_uri=f"postgresql://app:{CONFIGURED}@127.0.0.1:1/unused"
    )
    configure_logging(config, handlers=False)
    for name in ("httpx", "httpcore", "openai", "anthropic"):
        logging.getLogger(name).setLevel(logging.DEBUG)


def test_log_records_are_redacted(configured: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("tbd_agents.test")
    log.info("HTTP Request: GET %s", f"https://u:{URL_PASSWORD}@h.example/v1?api_key={API_KEY}")
    log.info("sending Authorization: Bearer %s and X-Org: %s", API_KEY, HEADER_SECRET)
    log.warning("key %s token %s", OUR_KEY, FERNET)
    log.error("db at %s", f"postgresql://app:{CONFIGURED}@db/x")
    log.info("the value is " + CONFIGURED)
    log.info("%(k)s", {"k": f"sig={HEADER_SECRET}&x=1"})
    try:
        raise RuntimeError(f"failed with password={URL_PASSWORD} and {OUR_KEY}")
    except RuntimeError:
        log.exception("boom")
    assert len(caplog.records) == 7
    assert_clean(caplog.text)
    assert "***" in caplog.text and "input" not in caplog.text


class _Echo(StubHandler):
    """A provider that echoes our credentials in its error body (401 on /v1/chat, 500 else)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization") or self.headers.get("x-api-key") or ""
        status = 401 if "/auth/" in self.path else 500
        body = json.dumps(
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": f"bad_key_{auth}",
                    "message": f"Incorrect API key provided: {auth}; org {self.headers.get('X-Org')}",
                }
            }
        ).encode()
        self.reply(status, body)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    with serve(_Echo) as address:
        yield address


@pytest.mark.parametrize("kind", [ProviderType.OPENAI, ProviderType.ANTHROPIC])
@pytest.mark.parametrize("path", ["auth", "fail"])
async def test_provider_error_bodies_never_carry_our_key(
    configured: None,
    caplog: pytest.LogCaptureFixture,
    echo_server: str,
    kind: ProviderType,
    path: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = ProviderSettings(
        name="echo",
        provider_type=kind,
        api_key=API_KEY,
        base_url=f"http://user:{URL_PASSWORD}@{echo_server}/{path}/v1",
        extra_headers={"X-Org": HEADER_SECRET},
        outbound=OutboundPolicy(trusted=True),  # a local upstream: as an admin's record
    )
    provider = build_provider(settings, FAST)
    request = ChatRequest(model="m", messages=[Message(role="user", content="hi")])
    try:
        with pytest.raises(UpstreamError) as caught:
            async for _ in provider.stream(request):
                pass
    finally:
        await provider.aclose()
    message = caught.value.message
    assert_clean(message)
    assert ("401" if path == "auth" else "500") in message
    assert "invalid_request_error" in message and "Incorrect API key provided" in message
    assert len(message) < 600
    assert_clean(caplog.text)


@pytest.fixture
async def broken_api(pg18_server: str, tmp_path: Path) -> AsyncIterator[Api]:
    """An app on a private database whose agents table refuses every insert with an error the
    storage layer does not translate (SQLSTATE P0001), so the request is a 500."""
    url = pg.create_migrated_database(pg18_server, prefix="redact")
    engine = create_engine(url, pool_size=2, max_overflow=2)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'agents are broken'; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON agents FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        )
    store = PostgresStore(engine, url=url)
    app = create_app(make_settings(tmp_path), store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, app.state.ctx.settings)
    await store.close()
    pg.drop_database(url)


async def test_a_500_logs_the_statement_shape_never_the_row(
    configured: None, caplog: pytest.LogCaptureFixture, broken_api: Api
) -> None:
    caplog.set_level(logging.DEBUG)
    transport = httpx.ASGITransport(app=broken_api.app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {await broken_api.key()}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers=headers
    ) as client:
        got = await client.post(
            "/api/agents", json={"name": "a", "system_prompt": f"use {PROMPT_SECRET}"}
        )
    assert got.status_code == 500, got.text
    assert_clean(got.text)
    assert_clean(caplog.text)
    failure = next(r for r in caplog.records if "unhandled database error" in r.getMessage())
    line = failure.getMessage()
    assert "SQLSTATE P0001" in line and "INSERT INTO agents" in line, line
    assert Agent.collection in line


def test_prose_with_secret_words_stays_readable() -> None:
    """Only credential-looking values are masked after `word:` in prose (migration and error
    messages must stay useful), while `name=value` and quoted JSON pairs are always masked."""
    from tbd_agents.logs import redact

    assert redact("api keys: github flag (keys made for a login)").endswith(
        "github flag (keys made for a login)"
    )
    assert "abcd1234efgh" not in redact("token: abcd1234efgh")
    assert "hunter" not in redact("password=hunter2x")
    assert "plainword" not in redact('{"secret": "plainword"}')
