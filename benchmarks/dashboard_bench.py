"""Dashboard: first paint of the chat screen and send → first token on screen (issue #18; run by
hand, results in RESULTS.md).

    PYTHONPATH=src .venv/bin/python benchmarks/dashboard_bench.py [--loads 30] [--sends 30]

Sets up what the browser tests use: an embedded PostgreSQL 18 (temporary), the API with the
dashboard (uvicorn in a thread), the engine tests' local OpenAI-protocol server as the model, and
Debian's Chromium driven headless by Playwright, all on this machine.

(a) First paint: `#/chat/<agent>` loaded with a signed-in key (set by an init script, as a tab
    that signed in earlier has it). Paint Timing API (`first-paint`, `first-contentful-paint`,
    ms since navigation start) and "interactive": when the chat's message box is in the page
    with the screen marked rendered (a MutationObserver started before the page's own code).
    Cold: a new browser context per load (empty HTTP cache, as a first visit). Warm: the same
    context, leaving to about:blank and coming back (the hashed assets come from the cache).
(b) Send → first token: the protocol server notes (time.monotonic, turned into wall-clock time
    with this process's offset) when it writes its first content delta; the page notes
    (MutationObserver, `performance.timeOrigin + performance.now()`) when the first text appears
    in the streaming reply. The browser's clock is checked against Python's before every send
    (the shortest of 5 round trips; half of it is the uncertainty, reported) and the difference
    corrected by it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from playwright.sync_api import Browser, sync_playwright
from tests.api.live import live_server
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.support import pg
from tests.web.conftest import CHROMIUM, LAUNCH_ARGS, VIEWPORT, Dashboard

from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope

#: Before the page's code: the key of a tab that signed in earlier, and an observer noting when
#: the chat screen is usable and when the streaming reply shows its first text.
INIT = """
window.sessionStorage.setItem("tbd-agents.api-key", %(key)s);
window.__bench = { interactive: null, firstToken: null, armed: false };
new MutationObserver(() => {
  const b = window.__bench;
  if (b.interactive === null) {
    const main = document.getElementById("main");
    if (main && main.dataset.rendered && document.querySelector("textarea")) b.interactive = performance.now();
  }
  if (b.armed && b.firstToken === null) {
    const el = document.querySelector('.message-assistant[data-streaming="true"] .bubble-body');
    if (el && el.textContent.length > 0) b.firstToken = performance.timeOrigin + performance.now();
  }
}).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
"""

PAINTS = """() => {
  const out = {};
  for (const e of performance.getEntriesByType("paint")) out[e.name] = e.startTime;
  const nav = performance.getEntriesByType("navigation")[0];
  const css = performance.getEntriesByType("resource").find((e) => e.name.endsWith("/app.css"));
  return { fp: out["first-paint"], fcp: out["first-contentful-paint"], interactive: window.__bench.interactive,
           html: nav.responseEnd, css: css ? css.responseEnd : NaN };
}"""

READY = (
    "() => window.__bench.interactive !== null && performance.getEntriesByType('paint').length >= 2"
)


def stats(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"median {statistics.median(ordered):7.1f}  p95 {p95:7.1f}  "
        f"min {ordered[0]:7.1f}  max {ordered[-1]:7.1f}  (n={len(ordered)})"
    )


def set_up(board: Dashboard, model: ProtocolServer) -> str:
    """A token, a provider at the protocol server and an agent; returns the agent id."""
    headers = {"Authorization": f"Bearer {board.key}"}

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(board.base + path, json=body, headers=headers, timeout=30)
        response.raise_for_status()
        return response.json()

    suffix = uuid.uuid4().hex[:6]
    post("/api/tokens", {"name": f"bench-{suffix}", "value": "sk-bench"})
    provider = post(
        "/api/providers",
        {
            "name": f"bench-{suffix}",
            "provider_type": "custom",
            "base_url": f"{model.url}/v1",
            "api_key_token_name": f"bench-{suffix}",
            "default_model": "llama3.1",
        },
    )
    agent = post(
        "/api/agents",
        {"name": f"bench-{suffix}", "provider_id": provider["id"], "model": "llama3.1"},
    )
    return str(agent["id"])


def first_paint(browser: Browser, board: Dashboard, agent_id: str, loads: int) -> None:
    url = f"{board.base}/#/chat/{agent_id}"
    init = INIT % {"key": repr(board.key)}

    def load(page: Any) -> dict[str, float]:
        page.goto(url)
        page.wait_for_function(READY)
        return page.evaluate(PAINTS)

    cold: list[dict[str, float]] = []
    for _ in range(loads + 1):  # the first one also warms the server's own caches
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(init)
        cold.append(load(context.new_page()))
        context.close()
    cold = cold[1:]
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(init)
    page = context.new_page()
    load(page)
    warm = []
    for _ in range(loads):
        page.goto("about:blank")
        warm.append(load(page))
    context.close()
    for name, runs in (("cold", cold), ("warm", warm)):
        print(f"chat screen, {name} cache (ms since navigation start):")
        for key, label in (("html", "page received"), ("css", "app.css received"),
                           ("fp", "first paint"), ("fcp", "first contentful paint"),
                           ("interactive", "interactive")):  # fmt: skip
            print(f"  {label:24s} {stats([r[key] for r in runs])}")


def first_token(
    browser: Browser, board: Dashboard, model: ProtocolServer, agent_id: str, sends: int
) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(INIT % {"key": repr(board.key)})
    page = context.new_page()
    offset = time.time() - time.monotonic()  # the protocol server's clock → wall clock
    gaps: list[float] = []
    skews: list[float] = []
    for i in range(sends):
        page.goto(f"{board.base}/#/chat/{agent_id}")  # a new conversation each time
        if i:
            page.reload()
        page.wait_for_function(READY)
        # The browser's wall clock against ours: mid-point of the shortest of 5 round trips.
        checks = []
        for _ in range(5):
            before = time.time()
            browser_now = page.evaluate("() => performance.timeOrigin + performance.now()")
            after = time.time()
            checks.append((after - before, browser_now - (before + after) / 2 * 1000))
        trip, skew = min(checks)
        skews.append(trip / 2 * 1000)
        model.script(Turn(text="Hello there, this is the first token and then some more.",
                          chunk_chars=6, delay=0.01))  # fmt: skip
        page.evaluate("() => { window.__bench.armed = true; window.__bench.firstToken = null; }")
        box = page.get_by_label("Message to")
        box.fill(f"ping {i}")
        before_count = len(model.first_chunk_at)
        box.press("Enter")
        page.wait_for_function("() => window.__bench.firstToken !== null")
        shown = page.evaluate("() => window.__bench.firstToken")
        page.wait_for_function(
            "() => !document.querySelector('.message-assistant[data-streaming=\"true\"]')"
        )
        assert len(model.first_chunk_at) == before_count + 1
        sent_wall_ms = (model.first_chunk_at[-1] + offset) * 1000
        gaps.append(shown - skew - sent_wall_ms)
    context.close()
    print("send → first token on screen, after the model server's first delta (ms):")
    print(f"  {'first token':24s} {stats(gaps)}")
    print(f"  {'clock check ±':24s} {stats(skews)}")


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    chromium = subprocess.run(
        [str(CHROMIUM), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"{os.cpu_count()} CPU ({cpu}), {chromium}, load average {os.getloadavg()}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loads", type=int, default=30)
    parser.add_argument("--sends", type=int, default=30)
    args = parser.parse_args()
    print(machine())
    uri = pg.start_embedded()
    model = ProtocolServer().start()
    try:
        url = pg.create_migrated_database(uri, prefix="bench")
        settings = Settings(
            postgres_uri=url.render_as_string(hide_password=False),
            token_encryption_key=f"1:{Fernet.generate_key().decode()}",
            data_dir=Path(tempfile.mkdtemp(prefix="tbd-bench-")),
            embedding_provider="hashing",
        )
        with live_server(settings) as base, sync_playwright() as p:
            board = Dashboard(base, "", settings, url)
            board.key = board.new_key("bench-admin", KeyScope.ADMIN)
            agent_id = set_up(board, model)
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
            )
            first_paint(browser, board, agent_id, args.loads)
            first_token(browser, board, model, agent_id, args.sends)
            browser.close()
        print("load average at the end", os.getloadavg())
    finally:
        model.stop()
        pg.stop_embedded(uri)


if __name__ == "__main__":
    main()
