"""Browser tests of the dashboard: Debian's Chromium driven headless by Playwright.

One browser and one API server for the tests of this package (uvicorn in a thread, on its own
migrated database of the embedded PostgreSQL 18), with the engine's local OpenAI-protocol server
standing in for the model. Each test gets a fresh browser context (empty sessionStorage).
Screenshots land in tests/web/artifacts/ (git-ignored).

While Playwright's sync API runs, it marks its event loop as the running loop of the main thread,
also between two calls; `asyncio.run` and pytest-asyncio's loops then refuse to start. So every
test that drives the browser lives under tests/web/ and Playwright is a package-scoped fixture:
pytest stops it as soon as the next test to run lies outside this package, and the other tests
never see its loop, whatever order they run in (xdist hands tests/web to one worker as a whole,
and other modules may run after it on that worker).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    WebSocket,
    expect,
    sync_playwright,
)
from sqlalchemy.engine import URL

from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.live import live_server
from tests.engine.protocol_server import ProtocolServer
from tests.support import pg

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: A laptop screen.
VIEWPORT = {"width": 1366, "height": 768}

# Assertions wait as long as actions do (the machine is shared; a screen may take a moment).
expect.set_options(timeout=15_000)


def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing (needs root; never a download of
    Playwright's own browser builds)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "chromium"],
        check=True,
        env=env,
        capture_output=True,
    )
    if not CHROMIUM.exists():
        raise RuntimeError("apt-get install chromium finished but /usr/bin/chromium is missing")
    return CHROMIUM


@pytest.fixture(scope="package")
def playwright_session() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p
    # Stopping Playwright runs its loop to the end, which clears the running-loop mark; if a
    # future Playwright left it set, every asyncio test after this package would fail.
    leftover = asyncio._get_running_loop()
    if leftover is not None:
        raise RuntimeError(
            f"Playwright left {leftover!r} marked as running on the main thread after it "
            "stopped: asyncio tests after tests/web would fail; check the Playwright version"
        )


@pytest.fixture(scope="package")
def browser(playwright_session: Playwright) -> Iterator[Browser]:
    path = ensure_chromium()
    browser = playwright_session.chromium.launch(
        executable_path=str(path), args=LAUNCH_ARGS, headless=True
    )
    watch_origins(browser)
    yield browser
    browser.close()


class RequestLog:
    """Every request (and WebSocket) of every browser context, for the origin check below."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bool]] = []  # (url, top-level navigation)
        self.dashboard: str | None = None  # the dashboard server's origin, when a test uses it

    def request(self, request: Request) -> None:
        try:
            top = request.is_navigation_request() and request.frame.parent_frame is None
        except Exception:  # a service worker's request has no frame
            top = False
        self.requests.append((request.url, top))

    def websocket(self, socket: WebSocket) -> None:
        self.requests.append((socket.url, False))

    def off_origin(self) -> list[str]:
        """URLs that left the server's origin. Allowed: the dashboard's origin, the top-level
        documents the test itself opened on this machine (another test server) and their
        origins, data:, blob: and about:."""
        loopback = {"127.0.0.1", "localhost", "::1"}
        allowed = {self.dashboard} if self.dashboard else set()
        for url, top in self.requests:
            if top and urlsplit(url).hostname in loopback:
                allowed.add(origin(url))
        return [
            url
            for url, _ in self.requests
            if urlsplit(url).scheme not in ("data", "blob", "about") and origin(url) not in allowed
        ]


def origin(url: str) -> str:
    """scheme://host:port of `url`, WebSockets counted as their HTTP origin."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{parts.hostname}:{port}"


REQUESTS = RequestLog()


def watch_origins(browser: Browser) -> None:
    """Record the requests of every context `browser` opens (also those of module fixtures)."""
    new_context = browser.new_context

    def watched(**kwargs: Any) -> BrowserContext:
        context = new_context(**kwargs)
        context.on("request", REQUESTS.request)
        context.on("page", lambda page: page.on("websocket", REQUESTS.websocket))
        return context

    browser.new_context = watched  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def no_off_origin_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test whose pages asked anything of another origin than the server's (a CDN, a
    font service, an analytics beacon): the dashboard must work offline and leak nothing."""
    REQUESTS.requests.clear()
    REQUESTS.dashboard = None
    yield
    if "dashboard" in request.fixturenames:
        REQUESTS.dashboard = origin(request.getfixturevalue("dashboard").base)
    leaked = REQUESTS.off_origin()
    REQUESTS.requests.clear()
    assert not leaked, f"requests that left the server's origin: {leaked}"


@pytest.fixture(scope="package")
def model_server() -> Iterator[ProtocolServer]:
    """The engine tests' local OpenAI/Anthropic-protocol server, playing scripted turns."""
    server = ProtocolServer().start()
    yield server
    server.stop()


@dataclass
class Dashboard:
    base: str
    key: str
    settings: Settings
    url: URL

    def new_key(self, owner: str, scope: KeyScope = KeyScope.USER) -> str:
        """A new API key of `owner`, written straight to the database (as the CLI does)."""

        async def create() -> str:
            # A store per call: an async engine belongs to the event loop that made it.
            store = PostgresStore(
                create_engine(self.url, pool_size=1, max_overflow=0), url=self.url
            )
            try:
                async with store.unit_of_work() as repos:
                    return (await ApiKeys(repos).create(owner, scope=scope, name="web")).plaintext
            finally:
                await store.close()

        return pg.run(create())


@pytest.fixture(scope="package")
def dashboard(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The API (with the dashboard) on a real socket, on a fresh migrated database: one for the
    whole browser suite (tests name their records uniquely and use their own users where they
    need an empty account)."""
    url = pg.create_migrated_database(pg18_server, prefix="web")
    settings = Settings(
        postgres_uri=url.render_as_string(hide_password=False),
        token_encryption_key=f"1:{Fernet.generate_key().decode()}",
        data_dir=tmp_path_factory.mktemp("web"),
        embedding_provider="hashing",
    )
    with live_server(settings) as base:
        board = Dashboard(base, "", settings, url)
        board.key = board.new_key("web-admin", KeyScope.ADMIN)
        yield board
    pg.drop_database(url)


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(message: ConsoleMessage) -> None:
        # Answers with an error status are expected in some tests (401, 404, 409, 422); anything
        # else logged as an error (a Content-Security-Policy refusal, a failed module) is a bug.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("console", console)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Page, name: str) -> None:
    """Keep a screenshot of the current screen as a test artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, dashboard: Dashboard, key: str | None = None) -> None:
    page.goto(dashboard.base + "/")
    page.get_by_label("API key").fill(key or dashboard.key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Welcome to TBD Agents").wait_for()
