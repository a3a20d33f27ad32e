"""Screenshot references of the main screens: start, agents list, an agent, a chat with a short
conversation and usage, in the light and the dark theme at 1366x768, and the chat and the agents
list on a phone (390x844). Each screenshot is compared with its PNG in tests/web/references/ with
a tolerant pixel comparison (decoded and compared in the browser: no imaging library needed).

Regenerate every reference after a deliberate change of the screens (one command):

    UPDATE_REFERENCES=1 PYTHONPATH=src python -m pytest -n 0 tests/web/test_screenshots.py

The data is fixed (names, the model's reply, token counts) and shown to one user of its own;
what still changes from run to run (dates, times, ids, counts of records other tests made) is
masked before the comparison.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page

from tests.engine.protocol_server import ProtocolServer, Turn
from tests.web.conftest import ARTIFACTS, Dashboard
from tests.web.ui import goto

REFERENCES = Path(__file__).parent / "references"
UPDATE = os.environ.get("UPDATE_REFERENCES") == "1"
UPDATE_COMMAND = (
    "UPDATE_REFERENCES=1 PYTHONPATH=src python -m pytest -n 0 tests/web/test_screenshots.py"
)
#: A pixel differs when one of its channels differs by more than this (0-255): anti-aliasing
#: and sub-pixel font rendering move edges by a few levels.
CHANNEL_TOLERANCE = 40
#: At most this share of the pixels may differ (a caret, a rounding of a border).
MAX_DIFFERENT = 0.005

LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
AGENT = "Screens research assistant"
OTHER_AGENT = "Screens release notes writer"
REPLY = (
    "Here is a short plan:\n\n1. Read the **release notes**.\n2. List the breaking changes.\n\n"
    "Shall I start with `v2.0`?"
)

COMPARE = """async ([actual, expected, tolerance]) => {
  const load = (b64) => new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("not a PNG"));
    img.src = "data:image/png;base64," + b64;
  });
  const [a, e] = await Promise.all([load(actual), load(expected)]);
  if (a.width !== e.width || a.height !== e.height) {
    return { size: [a.width, a.height, e.width, e.height] };
  }
  const pixels = (img) => {
    const c = document.createElement("canvas");
    c.width = img.width; c.height = img.height;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    return g.getImageData(0, 0, img.width, img.height);
  };
  const pa = pixels(a), pe = pixels(e);
  const out = new ImageData(a.width, a.height);
  let different = 0;
  for (let i = 0; i < pa.data.length; i += 4) {
    const d = Math.max(Math.abs(pa.data[i] - pe.data[i]), Math.abs(pa.data[i + 1] - pe.data[i + 1]),
      Math.abs(pa.data[i + 2] - pe.data[i + 2]));
    if (d > tolerance) { different += 1; out.data.set([255, 0, 0, 255], i); }
    else { const v = 255 - (255 - pe.data[i + 1]) / 4; out.data.set([v, v, v, 255], i); }
  }
  const c = document.createElement("canvas");
  c.width = a.width; c.height = a.height;
  c.getContext("2d").putImageData(out, 0, 0);
  return { different, total: a.width * a.height, diff: c.toDataURL("image/png").split(",")[1] };
}"""


@dataclass
class Scene:
    user_key: str
    admin_key: str
    agent_id: str
    session_id: str


def call(
    dashboard: Dashboard, key: str, method: str, path: str, **kwargs: object
) -> httpx.Response:
    response = httpx.request(
        method,
        dashboard.base + path,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
        **kwargs,  # type: ignore[arg-type]
    )
    assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
    return response


@pytest.fixture(scope="module")
def scene(dashboard: Dashboard, model_server: ProtocolServer) -> Scene:
    """Two agents (one with a provider on the local model server) and a chat of one exchange,
    made by the admin (only an admin's provider may reach an internal address); and a user of
    its own holding one token, whose start and usage screens no other test changes."""
    key = dashboard.key
    user_key = dashboard.new_key("screens-user")
    call(
        dashboard,
        user_key,
        "POST",
        "/api/tokens",
        json={"name": "screens-user-key", "value": "sk-user"},
    )
    call(
        dashboard,
        dashboard.key,
        "POST",
        "/api/tokens",
        json={"name": "screens-key", "value": "sk-screens"},
    )
    provider = call(
        dashboard,
        dashboard.key,
        "POST",
        "/api/providers",
        json={
            "name": "screens-local",
            "provider_type": "custom",
            "base_url": f"{model_server.url}/v1",
            "api_key_token_name": "screens-key",
            "default_model": "llama3.1",
        },
    ).json()
    agent = call(
        dashboard,
        key,
        "POST",
        "/api/agents",
        json={
            "name": AGENT,
            "description": "Reads release notes and answers questions about them.",
            "system_prompt": "You are a careful research assistant.",
            "provider_id": provider["id"],
            "model": "llama3.1",
        },
    ).json()
    call(
        dashboard,
        key,
        "POST",
        "/api/agents",
        json={"name": OTHER_AGENT, "description": "Drafts release notes from merged changes."},
    )
    model_server.reset()
    model_server.script(Turn(text=REPLY, usage=(120, 36)))
    call(
        dashboard,
        key,
        "POST",
        f"/api/agents/{agent['id']}/chat",
        json={"message": "What changed in the last release?"},
    )
    sessions = call(dashboard, key, "GET", f"/api/agents/{agent['id']}/chat/sessions").json()
    session = sessions[0]["id"]
    return Scene(user_key=user_key, admin_key=key, agent_id=agent["id"], session_id=session)


def open_page(browser: Browser, viewport: dict[str, int], scheme: str) -> Page:
    context = browser.new_context(viewport=viewport, color_scheme=scheme)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    return context.new_page()


def sign_in_as(page: Page, dashboard: Dashboard, key: str) -> None:
    if page.get_by_role("button", name="Sign out").count():
        page.get_by_role("button", name="Sign out").click()
    else:
        page.goto(dashboard.base + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#main[data-rendered]").wait_for()


def volatile(page: Page) -> list[Locator]:
    """What changes from run to run: times, dates, ids, counts of other tests' records."""
    return [
        page.locator("time"),
        page.locator("[data-volatile]"),
        page.locator("input[type='date']"),
        page.locator(".toolbar [role='status']"),
        page.locator(".chart-figure"),
        page.locator(".usage-period"),
        page.locator(".message .who"),
        page.locator(".sessions .small"),
        page.locator("#usage-results-title"),
        # Budgets other tests make may apply to every user.
        page.locator(".budgets-panel"),
    ]


def compare(browser: Browser, page: Page, name: str) -> str | None:
    """Screenshot `page` and compare it with references/<name>.png: None when it matches, or
    what is wrong."""
    page.evaluate("document.fonts.ready")
    actual = page.screenshot(
        animations="disabled", caret="hide", mask=volatile(page), mask_color="#808080"
    )
    reference = REFERENCES / f"{name}.png"
    if UPDATE:
        REFERENCES.mkdir(exist_ok=True)
        reference.write_bytes(actual)
        return None
    ARTIFACTS.mkdir(exist_ok=True)
    if not reference.exists():
        (ARTIFACTS / f"{name}.actual.png").write_bytes(actual)
        return f"{name}: no reference {reference.relative_to(Path.cwd()) if reference.is_relative_to(Path.cwd()) else reference}; create it with: {UPDATE_COMMAND}"
    blank = browser.new_page()
    try:
        result = blank.evaluate(
            COMPARE,
            [
                base64.b64encode(actual).decode(),
                base64.b64encode(reference.read_bytes()).decode(),
                CHANNEL_TOLERANCE,
            ],
        )
    finally:
        blank.close()
    if "size" in result:
        (ARTIFACTS / f"{name}.actual.png").write_bytes(actual)
        return (
            f"{name}: size {result['size'][:2]} differs from the reference's {result['size'][2:]}"
        )
    share = result["different"] / result["total"]
    if share > MAX_DIFFERENT:
        (ARTIFACTS / f"{name}.actual.png").write_bytes(actual)
        (ARTIFACTS / f"{name}.diff.png").write_bytes(base64.b64decode(result["diff"]))
        return (
            f"{name}: {share:.2%} of the pixels differ (allowed {MAX_DIFFERENT:.2%}); see "
            f"tests/web/artifacts/{name}.actual.png and .diff.png; if the change is wanted: "
            f"{UPDATE_COMMAND}"
        )
    return None


def show_agents(page: Page, dashboard: Dashboard) -> None:
    goto(page, dashboard, "agents")
    page.get_by_role("searchbox").fill("Screens ")
    page.locator("table.records tbody tr").nth(1).wait_for()


def show_chat(page: Page, dashboard: Dashboard, scene: Scene) -> None:
    goto(page, dashboard, f"chat/{scene.agent_id}/{scene.session_id}")
    page.locator(".message-assistant").filter(has_text="Shall I start").wait_for()
    page.locator("#main").focus()


def check(failures: list[str | None]) -> None:
    found = [f for f in failures if f]
    assert not found, "screens differ from their references:\n" + "\n".join(found)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_laptop_screens_match_their_references(
    browser: Browser, dashboard: Dashboard, scene: Scene, scheme: str
) -> None:
    failures: list[str | None] = []
    page = open_page(browser, LAPTOP, scheme)
    try:
        sign_in_as(page, dashboard, scene.user_key)
        page.locator("#main").focus()
        failures.append(compare(browser, page, f"start-{scheme}"))
        goto(page, dashboard, "usage")
        page.locator("#main").focus()
        failures.append(compare(browser, page, f"usage-{scheme}"))
        sign_in_as(page, dashboard, scene.admin_key)
        show_agents(page, dashboard)
        failures.append(compare(browser, page, f"agents-{scheme}"))
        goto(page, dashboard, f"agents/{scene.agent_id}")
        page.locator("#main").focus()
        failures.append(compare(browser, page, f"agent-{scheme}"))
        show_chat(page, dashboard, scene)
        failures.append(compare(browser, page, f"chat-{scheme}"))
    finally:
        page.context.close()
    check(failures)


def test_phone_screens_match_their_references(
    browser: Browser, dashboard: Dashboard, scene: Scene
) -> None:
    failures: list[str | None] = []
    page = open_page(browser, PHONE, "light")
    try:
        sign_in_as(page, dashboard, scene.admin_key)
        show_agents(page, dashboard)
        page.locator("#main").focus()
        failures.append(compare(browser, page, "agents-phone"))
        show_chat(page, dashboard, scene)
        failures.append(compare(browser, page, "chat-phone"))
    finally:
        page.context.close()
    check(failures)
