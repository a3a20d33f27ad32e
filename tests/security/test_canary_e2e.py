"""End-to-end canary scans (issue #12, M5 / M7): secrets never reach logs, events, task records,
API responses or webhooks, whatever a hostile upstream echoes back.

Canary secrets (long, unique, shaped so that no generic key pattern hides them: only the real
redaction of the values we send can) are stored the way users store them: a token made by
`POST /api/tokens` as a provider's API key, another one referenced as `{{token:…}}` by an extra
header, a password in the provider's base_url (moved into a token by the save path). The
provider is a local server that answers 500 then 401 with a body and response headers echoing
the credentials it received (tests/support/echo_provider.py). Workflows run through the API and
the runtime with the real engine, their webhooks go to a local receiver, and everything that
comes back is scanned: API responses, the SSE replay, the task record, the webhook requests,
and the log records at DEBUG (HTTP client loggers included); then the same against a real
`tbd-agents serve` process, whose output is scanned, with a database failure (500) caused by a
row holding a secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import ProviderType
from tbd_agents.engine.messages import ChatRequest, Message
from tbd_agents.engine.providers import ProviderSettings, build_provider
from tbd_agents.errors import UpstreamAuthError
from tbd_agents.logs import HTTP_LOGGERS, configure_logging
from tbd_agents.security.outbound import OutboundPolicy
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.live import free_port, live_server
from tests.engine.conftest import FAST
from tests.runtime.conftest import FERNET, ROOT, runtime_settings
from tests.support import pg
from tests.support.echo_provider import EchoProvider, echo_provider
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver

OWNER = "canary-user"
BASIC_USER = "proxyuser"


def canary(label: str, sep: str = ".") -> str:
    """A unique secret no pattern recognises: 8-character groups (never a key-like run)."""
    h = uuid.uuid4().hex
    return sep.join([f"canary-{label}", h[:8], h[8:16], h[16:24], h[24:]])


@dataclass
class Canaries:
    api_key: str = field(default_factory=lambda: canary("apikey"))
    header: str = field(default_factory=lambda: canary("header"))
    #: "~~~~~" holds a whole 3-byte group `~~~` whatever its offset, so the Basic credential
    #: (base64 of "user:password") has a `+` every few characters: no key-like run hides it.
    url_password: str = field(default_factory=lambda: canary("urlpw", "~~~~~"))
    row: str = field(default_factory=lambda: canary("row"))

    def forms(self) -> dict[str, str]:
        """Every canary, and each 24-character piece of the `Authorization: Basic` credential
        httpx derives from the URL password (18 bytes of it; a partial match is a leak too)."""
        basic = base64.b64encode(f"{BASIC_USER}:{self.url_password}".encode()).decode()
        pieces = {f"basic[{i}:]": basic[i : i + 24] for i in range(0, len(basic) - 24, 4)}
        return {**vars(self), **pieces}

    def assert_clean(self, where: str, content: str) -> None:
        for name, value in self.forms().items():
            at = content.find(value)
            assert at < 0, f"{name} leaked into {where}: …{content[max(0, at - 300) : at + 200]}…"


async def api_key(url: URL) -> str:
    store = PostgresStore(create_engine(url, pool_size=1), url=url)
    try:
        async with store.unit_of_work() as repos:
            created = await ApiKeys(repos).create(OWNER, scope=KeyScope.USER, name="canary")
        return created.plaintext
    finally:
        await store.close()


class Session:
    """An API client that keeps every response body for the final scan."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.bodies: list[str] = []

    async def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, timeout=90, **kwargs)
        self.bodies.append(f"{method} {path} → {response.status_code}\n{response.text}")
        assert response.status_code == expect, response.text
        return response.json() if "json" in response.headers.get("content-type", "") else None

    async def raw(self, method: str, path: str, **kwargs: Any) -> str:
        """A streamed answer (SSE), read to its end."""
        response = await self.client.request(method, path, timeout=90, **kwargs)
        assert response.status_code == 200, response.text
        self.bodies.append(f"{method} {path}\n{response.text}")
        return response.text

    def everything(self) -> str:
        return "\n".join(self.bodies)


async def make_provider(
    api: Session, kind: str, c: Canaries, echo: EchoProvider, *, url_password: bool
) -> str:
    """A provider keyed by token (API key and X-Org), its base_url with a password or not."""
    tag = uuid.uuid4().hex[:8]
    await api.call("POST", "/api/tokens", 201, json={"name": f"key-{tag}", "value": c.api_key})
    await api.call("POST", "/api/tokens", 201, json={"name": f"org-{tag}", "value": c.header})
    userinfo = f"{BASIC_USER}:{c.url_password}@" if url_password else ""
    provider = await api.call(
        "POST",
        "/api/providers",
        201,
        json={
            "name": f"echo-{kind}-{tag}",
            "provider_type": kind,
            "api_key_token_name": f"key-{tag}",
            "base_url": f"http://{userinfo}{echo.netloc}/v1",
            "extra_headers": {"X-Org": "{{token:org-" + tag + "}}"},
            "default_model": "echo-model",
        },
    )
    assert c.url_password not in json.dumps(provider)
    if url_password:  # the save path moved the password into a token
        assert provider["base_url"].startswith("{{token:conn.providers."), provider
    return str(provider["id"])


async def make_workflow(api: Session, provider_id: str, hooks: WebhookReceiver) -> str:
    agent = await api.call(
        "POST",
        "/api/agents",
        201,
        json={"name": f"a-{provider_id[:8]}", "provider_id": provider_id},
    )
    workflow = await api.call(
        "POST",
        "/api/workflows",
        201,
        json={
            "agent_id": agent["id"],
            "title": "canary workflow",
            "max_turns": 2,
            "webhook_url": hooks.url("/done"),
            "error_webhook_url": hooks.url("/failed"),
        },
    )
    return str(workflow["id"])


async def run_failing(api: Session, workflow: str, echo: EchoProvider) -> dict[str, Any]:
    """Prompt the workflow with the upstream answering 500 (retried) then 401; return the task."""
    echo.statuses.extend([500, 401])
    before = len(echo.seen)
    started = await api.call(
        "POST", f"/api/workflows/{workflow}/prompt", 201, json={"prompt": "hi"}
    )
    stream = await api.raw("GET", f"/api/workflows/{workflow}/stream")
    assert '"status":"failed"' in stream, stream
    task: dict[str, Any] = await api.call("GET", f"/api/tasks/{started['task_id']}", 200)
    assert task["status"] == "failed" and len(echo.seen) == before + 2, (task, echo.seen)
    # The upstream's echo was read (so redaction, not a missing body, keeps the secrets out).
    assert "answered 401" in task["error"] and "Incorrect API key provided" in task["error"]
    assert "***" in task["error"], task["error"]
    return task


async def wait_webhook(api: Session, workflow: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        found = await api.call("GET", f"/api/workflows/{workflow}/webhook-deliveries", 200)
        if found and found[0]["status"] in ("delivered", "failed"):
            assert found[0]["status"] == "delivered", found
            return
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)


def assert_received(c: Canaries, echo: EchoProvider) -> None:
    """Not vacuous: the upstream really got each secret (API key, header, URL password)."""
    received = echo.received()
    for value in (c.api_key, c.header, f"{BASIC_USER}:{c.url_password}"):
        assert value in received, f"the upstream never saw {value[:14]}…: {received}"


@pytest.fixture(scope="module")
def canary_db(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, "canary")
    yield url
    pg.drop_database(url)


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """The logging of `serve`, at its most verbose, restored afterwards."""
    levels = {name: logging.getLogger(name).level for name in (*HTTP_LOGGERS, "")}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def engine_settings(url: URL, tmp: Path, **overrides: Any) -> Settings:
    return runtime_settings(
        url,
        run_executor=Settings.model_fields["run_executor"].default,
        run_lease_seconds=15.0,
        data_dir=tmp,
        embedding_provider="hashing",
        webhook_allowed_hosts="127.0.0.1",
        outbound_allowed_hosts="127.0.0.1",  # the echoing upstream is local; the owner a user
        log_level="DEBUG",
        log_http_level="DEBUG",
        engine_model_max_retries=1,
        **overrides,
    )


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_workflow_run_against_an_echoing_upstream_leaks_nothing(
    kind: str,
    canary_db: URL,
    tmp_path: Path,
    debug_logging: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Canaries()
    settings = engine_settings(canary_db, tmp_path)
    configure_logging(settings, handlers=False)
    caplog.set_level(logging.DEBUG)
    key = await api_key(canary_db)
    with echo_provider() as echo, webhook_receiver() as hooks, live_server(settings) as base:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}
        ) as client:
            api = Session(client)
            # httpx turns a URL password into `Authorization: Basic`, replacing the API key: one
            # provider of each kind so the upstream sees every secret.
            keyed = await make_provider(api, kind, c, echo, url_password=False)
            proxied = await make_provider(api, kind, c, echo, url_password=True)
            tasks = []
            for provider in (keyed, proxied):
                workflow = await make_workflow(api, provider, hooks)
                tasks.append(await run_failing(api, workflow, echo))
                await wait_webhook(api, workflow)
                await api.call("GET", f"/api/workflows/{workflow}", 200)
                await api.call("GET", f"/api/tasks/{tasks[-1]['id']}/webhook-deliveries", 200)
                await api.call("GET", f"/api/providers/{provider}/models?refresh=true", 502)
            agent = (await api.call("GET", f"/api/agents?provider_id={keyed}", 200))[0]
            chat = await api.raw("POST", f"/api/agents/{agent['id']}/chat", json={"message": "hi"})
            assert "event: error" in chat and "Incorrect API key provided" in chat, chat

    assert_received(c, echo)
    c.assert_clean("API responses and streams", api.everything())
    assert len(hooks.requests) == 2 and {r.path for r in hooks.requests} == {"/failed"}
    for hook in hooks.requests:
        assert json.loads(hook.body)["error"] in {t["error"] for t in tasks}
        c.assert_clean("a webhook", hook.dump())
    logged = caplog.text
    assert "HTTP Request: POST http://" in logged and "retry 1" in logged, logged[-3000:]
    assert "receive_response_headers.complete" in logged  # httpcore at DEBUG: headers logged
    c.assert_clean("the log", logged)


@pytest.mark.parametrize("kind", [ProviderType.OPENAI, ProviderType.ANTHROPIC])
async def test_the_basic_credential_of_a_url_password_is_masked_in_provider_errors(
    kind: ProviderType,
) -> None:
    """The excerpt masks what httpx sends for a URL password (base64 of `user:password`) by
    itself, with no token resolved (so nothing registered) in between."""
    c = Canaries()
    with echo_provider() as echo:
        provider = build_provider(
            ProviderSettings(
                name="direct",
                provider_type=kind,
                api_key=c.api_key,
                base_url=f"http://{BASIC_USER}:{c.url_password}@{echo.netloc}/v1",
                outbound=OutboundPolicy(trusted=True),  # a local upstream: an admin's record
            ),
            FAST,
        )
        request = ChatRequest(model="m", messages=[Message(role="user", content="hi")])
        try:
            with pytest.raises(UpstreamAuthError) as caught:
                async for _ in provider.stream(request):
                    pass
        finally:
            await provider.aclose()
    assert echo.seen[0].basic == f"{BASIC_USER}:{c.url_password}"
    # The Authorization header httpx built from the URL password is echoed (Anthropic's key goes
    # in x-api-key alone, OpenAI's Bearer is replaced by it): masked, never in clear.
    assert "Incorrect API key provided: Basic " in caught.value.message, caught.value.message
    c.assert_clean("the provider error", caught.value.message)


# --- the same against a real `tbd-agents serve` -------------------------------------------------


def serve_env(url: URL, data: Path, port: int) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return {
        **keep,
        "POSTGRES_URI": url.render_as_string(hide_password=False),
        "TOKEN_ENCRYPTION_KEY": FERNET,
        "DATA_DIR": str(data),
        "PORT": str(port),
        "EMBEDDING_PROVIDER": "hashing",
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "OUTBOUND_ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "DEBUG",
        "LOG_HTTP_LEVEL": "DEBUG",
        "ENGINE_MODEL_MAX_RETRIES": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
    }


@pytest.fixture
async def serve_db(pg18_server: str) -> AsyncIterator[URL]:
    """A database whose providers table refuses rows named `refuse-…` with an error quoting the
    row's extra_headers (a driver message carrying a secret, SQLSTATE P0001): a 500."""
    url = pg.create_migrated_database(pg18_server, "canaryserve")
    engine = create_engine(url, pool_size=1)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.name LIKE 'refuse-%' THEN "
                "RAISE EXCEPTION 'refused row %', NEW.extra_headers::text; END IF; "
                "RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON providers "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        )
    await engine.dispose()
    yield url
    pg.drop_database(url)


async def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(base_url=base) as client:
        while True:
            try:
                if (await client.get("/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.3)


async def test_the_output_of_serve_at_debug_holds_no_canary(serve_db: URL, tmp_path: Path) -> None:
    c = Canaries()
    key = await api_key(serve_db)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [sys.executable, "-c", "from tbd_agents.cli import app; app()", "serve"]
    with (
        echo_provider() as echo,
        webhook_receiver() as hooks,
        log.open("wb") as out,
    ):
        proc = subprocess.Popen(
            command, env=serve_env(serve_db, tmp_path, port), cwd=tmp_path, stdout=out, stderr=out
        )
        try:
            await wait_ready(base, proc, log)
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {key}"}
            ) as client:
                api = Session(client)
                for url_password in (False, True):
                    provider = await make_provider(
                        api, "openai", c, echo, url_password=url_password
                    )
                    workflow = await make_workflow(api, provider, hooks)
                    await run_failing(api, workflow, echo)
                    await wait_webhook(api, workflow)
                # A literal secret in a header not named like one, in a row the database
                # refuses with an error quoting it.
                refused = {
                    "name": f"refuse-{uuid.uuid4().hex[:6]}",
                    "extra_headers": {"X-Tenant": c.row},
                }
                for _ in range(2):  # the connection stays usable after a 500
                    failure = await api.call("POST", "/api/providers", 500, json=refused)
                    assert failure["error"]["code"] == "internal_error"
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    assert_received(c, echo)
    c.assert_clean("API responses", api.everything())
    output = log.read_text(errors="replace")
    # The log was really written, at DEBUG, with the lines a leak would be in.
    assert "DEBUG" in output and "HTTP Request: POST http://" in output, output[-3000:]
    assert "unhandled database error" in output and "SQLSTATE P0001" in output, output[-3000:]
    assert "receive_response_headers.complete" in output, output[-3000:]
    assert output.count('/chat/completions "HTTP/1.0 401') == 2, output[-3000:]
    assert output.count("answered 500: invalid_request_error") == 2, output[-3000:]
    c.assert_clean("the output of serve", output)
