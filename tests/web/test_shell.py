"""The dashboard's shell: the theme (System / Light / Dark, contrast), the grouped navigation, the
drawer on a phone, no sideways scrolling on the main screens, the one notice area, the keyboard
shortcuts and error messages people can act on."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, goto, rendered

PHONE = {"width": 390, "height": 844}

ROOT_BACKGROUND = "() => getComputedStyle(document.documentElement).backgroundColor"

#: Text colour / background pairs of the palette that must reach 4.5:1 in both themes.
PAIRS = [
    ("--fg", "--bg"),
    ("--fg", "--surface"),
    ("--fg", "--surface-2"),
    ("--fg", "--code-bg"),
    ("--muted", "--bg"),
    ("--muted", "--surface"),
    ("--accent", "--bg"),
    ("--accent", "--surface"),
    ("--accent", "--accent-soft"),
    ("--accent-fg", "--accent"),
    ("--danger", "--surface"),
    ("--danger", "--danger-soft"),
    ("--ok", "--ok-soft"),
    ("--warn", "--warn-soft"),
    ("--info", "--info-soft"),
    ("--fg", "--chip"),
    ("--topbar-fg", "--topbar-bg"),
    ("--topbar-muted", "--topbar-bg"),
]


def luminance(hex_colour: str) -> float:
    value = hex_colour.strip().lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    channels = [int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def palette(page: Page) -> dict[str, str]:
    names = sorted({n for pair in PAIRS for n in pair})
    return page.evaluate(
        "(names) => Object.fromEntries(names.map((n) => "
        "[n, getComputedStyle(document.documentElement).getPropertyValue(n).trim()]))",
        names,
    )


def is_dark(rgb: str) -> bool:
    r, g, b = (int(x) for x in re.findall(r"\d+", rgb)[:3])
    return (r + g + b) / 3 < 100


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_theme_follows_the_system_and_the_choice_sticks(page: Page, dashboard: Dashboard) -> None:
    page.emulate_media(color_scheme="light")
    sign_in(page, dashboard)
    picker = page.get_by_label("Theme")
    expect(picker).to_have_value("system")
    assert not is_dark(page.evaluate(ROOT_BACKGROUND))
    light = palette(page)

    # "System" follows the system's preference as it changes.
    page.emulate_media(color_scheme="dark")
    page.wait_for_function(f"() => ({ROOT_BACKGROUND})() !== 'rgb(246, 247, 249)'")
    assert is_dark(page.evaluate(ROOT_BACKGROUND))
    dark = palette(page)
    shot(page, "shell-dark-system")

    # An explicit choice wins over the system and survives a reload (applied before the page's
    # modules run: the attribute is already there when the document is parsed).
    picker.select_option("light")
    assert not is_dark(page.evaluate(ROOT_BACKGROUND))
    page.reload()
    rendered(page, "#/")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    assert not is_dark(page.evaluate(ROOT_BACKGROUND))
    expect(page.get_by_label("Theme")).to_have_value("light")
    page.emulate_media(color_scheme="light")
    page.get_by_label("Theme").select_option("dark")
    assert is_dark(page.evaluate(ROOT_BACKGROUND))
    assert page.evaluate("localStorage.getItem('tbd-agents.theme')") == "dark"

    # Text keeps 4.5:1 contrast on its background in both palettes.
    assert light != dark
    for name, colours in (("light", light), ("dark", dark)):
        low = [
            f"{fg} on {bg}: {contrast(colours[fg], colours[bg]):.2f}"
            for fg, bg in PAIRS
            if contrast(colours[fg], colours[bg]) < 4.5
        ]
        assert not low, f"{name} theme: too little contrast: {low}"


def test_navigation_is_grouped_and_shortcuts_work(page: Page, dashboard: Dashboard) -> None:
    name = f"shortcut-{uuid.uuid4().hex[:6]}"
    api(dashboard, "POST", "/api/agents", json={"name": name}).raise_for_status()
    sign_in(page, dashboard)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("heading")).to_have_text(["Build", "Run", "Admin"])
    expect(nav.get_by_role("link").first).to_have_text("Start")
    expect(nav.get_by_role("list", name="Build").get_by_role("link")).to_have_text(
        ["Agents", "Skills", "MCP servers", "Custom tools", "Guardrails", "Knowledge", "Memories"]
    )
    expect(nav.get_by_role("list", name="Run").get_by_role("link")).to_contain_text(
        ["Chat", "Workflows", "Schedules", "Usage"]
    )
    expect(nav.get_by_role("list", name="Admin").get_by_role("link")).to_have_text(
        ["Providers", "Tokens", "API keys", "Import / export", "Status"]
    )

    # g a: agents; "/" focuses the search; keys typed there are text, not shortcuts.
    page.locator("#main").focus()
    page.keyboard.press("g")
    page.keyboard.press("a")
    rendered(page, "#/agents")
    page.keyboard.press("/")
    search = page.get_by_role("searchbox")
    expect(search).to_be_focused()
    page.keyboard.type("g")
    page.keyboard.type("c")
    page.keyboard.type("n")
    expect(search).to_have_value("gcn")
    assert page.url.endswith("#/agents")
    search.fill(name)
    expect(page.locator("table.records tbody tr")).to_have_count(1)

    # n: a new record on a list page.
    page.locator("#main").focus()
    page.keyboard.press("n")
    rendered(page, "#/agents/new")
    expect(page.get_by_role("heading", name="New agent")).to_be_visible()

    # ?: the list of shortcuts, in a dialog that Escape closes.
    page.locator("#main").focus()
    page.keyboard.press("?")
    help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(help_dialog).to_be_visible()
    expect(help_dialog).to_contain_text("Go to Chat")
    expect(help_dialog).to_contain_text("New record")
    page.keyboard.press("n")  # no shortcut while a dialog is open
    page.keyboard.press("Escape")
    expect(help_dialog).to_have_count(0)

    # g c: chat; opening a chat puts the focus in the composer (main.js does not take it back).
    page.locator("#main").focus()
    page.keyboard.press("g")
    page.keyboard.press("c")
    rendered(page, "#/chat")
    agent = api(dashboard, "GET", "/api/agents", params={"limit": 200}).json()
    agent_id = next(a["id"] for a in agent if a["name"] == name)
    page.evaluate("(h) => { window.location.hash = h; }", f"#/chat/{agent_id}")
    rendered(page, f"#/chat/{agent_id}")
    expect(page.get_by_label("Message to")).to_be_focused()


def test_notices_are_one_capped_area_cleared_on_navigation(
    page: Page, dashboard: Dashboard
) -> None:
    sign_in(page, dashboard)
    goto(page, dashboard, "skills")
    notices = page.locator("#notices .notice")
    shown = page.evaluate(
        """async () => {
          const { notify } = await import('/dashboard/assets/js/dom.js');
          notify('first error', 'error');
          notify('an update', 'info');
          notify('second error', 'error');
          notify('third error', 'error');
          notify('third error', 'error');
          return [...document.querySelectorAll('#notices .notice')].map((n) => n.dataset.message);
        }"""
    )
    # At most three (read at once: the info would go by itself later); the info made room
    # first; the repeated message is shown once.
    assert shown == ["first error", "second error", "third error"]
    expect(page.locator("#notices")).to_have_attribute("aria-live", "polite")
    expect(notices.first).to_have_attribute("role", "alert")
    # Errors stay until dismissed.
    notices.first.get_by_role("button", name="Dismiss").click()
    expect(notices).to_have_count(2)

    # The next page starts without the last page's notices...
    page.wait_for_function(
        "() => [...document.querySelectorAll('#notices .notice')]"
        ".every((n) => Date.now() - Number(n.dataset.born) > 1100)"
    )
    goto(page, dashboard, "agents")
    expect(notices).to_have_count(0)

    # ...but the notice of the action that moved to it stays.
    goto(page, dashboard, "skills/new")
    skill = f"noticed-{uuid.uuid4().hex[:6]}"
    page.locator("main form").get_by_label("Name", exact=True).fill(skill)
    page.locator("main form").get_by_label("Instructions", exact=True).fill("Say hi.")
    page.get_by_role("button", name="Create skill").click()
    page.wait_for_url(re.compile(r"#/skills/[0-9a-f-]{36}$"))
    rendered(page)
    expect(notices).to_have_count(1)
    expect(notices).to_contain_text(f"Created skill “{skill}”")
    expect(notices).to_have_attribute("role", "status")


def test_errors_say_what_happened_and_what_to_do(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    missing = str(uuid.uuid4())
    goto(page, dashboard, f"agents/{missing}")
    alert = page.locator("main [role=alert]")
    expect(alert).to_have_text(
        "This agent no longer exists: it may have been deleted. Go back to the list and reload it."
    )
    details = page.locator("main details.technical")
    expect(details).not_to_have_attribute("open", "")
    details.locator("summary").click()
    expect(details).to_contain_text(f"GET /api/agents/{missing} → 404 not_found")
    # The status and the technical text stay on the error for the screens that need them.
    status, technical = page.evaluate(
        """async (id) => {
          const { get } = await import('/dashboard/assets/js/api.js');
          try { await get(`/api/providers/${id}`); } catch (e) { return [e.status, e.technical]; }
        }""",
        missing,
    )
    assert status == 404 and f"/api/providers/{missing}" in technical
    said = page.evaluate(
        """async () => {
          const { friendlyMessage: say } = await import('/dashboard/assets/js/api.js');
          return [
            say(403, 'forbidden', 'Not your workflow', {}, 'GET', '/api/workflows/w1'),
            say(413, 'payload_too_large', 'too large', { limit_bytes: 10485760, setting: 'MAX_UPLOAD_BYTES' }, 'POST', '/api/knowledge-items'),
            say(422, 'validation_error', 'invalid request: body.max_turns: too big',
              { errors: [{ loc: ['body', 'max_turns'], msg: 'Input should be less than or equal to 2' }] }, 'POST', '/api/agents'),
            say(409, 'conflict', 'a provider named "x" already exists', {}, 'POST', '/api/providers'),
            say(404, 'not_found', "provider 'p9' was not found", { id: 'p9' }, 'PATCH', '/api/agents/a1'),
          ];
        }"""
    )
    assert said == [
        "You are not allowed to do this with your key (Not your workflow). Ask an admin for access.",
        "This is too large for the server (the limit is 10 MB). Send something smaller, or ask an "
        "admin to raise MAX_UPLOAD_BYTES.",
        "Check these fields: max turns: Input should be less than or equal to 2.",
        'A provider named "x" already exists.',
        # Another record the request names is missing, not the agent being edited.
        "Provider 'p9' was not found.",
    ]

    # The server cannot be reached.
    def cut(route: Route) -> None:
        route.abort("connectionrefused")

    page.route(re.compile(r".*/api/guardrails.*"), cut)
    goto(page, dashboard, "guardrails")
    expect(page.locator("main [role=alert]")).to_have_text(
        "Can't reach the server. Check it is running, then retry."
    )
    expect(page.get_by_role("heading", name="Something went wrong")).to_be_visible()
    page.unroute(re.compile(r".*/api/guardrails.*"))

    # A server failure: what to do, with the incident to look up in the log.
    def fail(route: Route) -> None:
        route.fulfill(
            status=500,
            json={
                "detail": "internal error (incident abc123); the server log has the details",
                "error": {
                    "code": "internal_error",
                    "message": "internal error (incident abc123); the server log has the details",
                    "details": {"incident": "abc123"},
                },
            },
        )

    page.route(re.compile(r".*/api/skills\?.*"), fail)
    goto(page, dashboard, "skills")
    expect(page.locator("main [role=alert]")).to_have_text(
        "The server failed to do this (incident abc123). Try again; "
        "if it keeps failing, the server log has the details."
    )


MAIN_SCREENS = [
    "",
    "agents",
    "chat",
    "workflows",
    "scheduled-agents",
    "knowledge-sources",
    "skills",
    "providers",
    "tokens",
    "keys",
    "usage",
    "transfer",
    "status",
    "runs",
    "setup/provider",
    "mcps",
    "custom-tools",
    "guardrails",
    "memories",
]


def test_phone_drawer_and_no_sideways_scrolling(phone: Page, dashboard: Dashboard) -> None:
    page = phone
    long_name = f"an-agent-with-a-rather-long-name-{uuid.uuid4().hex}"
    agent = api(
        dashboard,
        "POST",
        "/api/agents",
        json={"name": long_name, "description": "Answers questions " * 12},
    ).json()
    sign_in(page, dashboard)
    menu = page.get_by_role("button", name="Menu")
    nav = page.get_by_role("navigation", name="Main")
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(nav.get_by_role("link", name="Agents")).to_be_hidden()
    # The page comes first: its heading is on screen without opening anything.
    expect(page.get_by_role("heading", name="Welcome to TBD Agents")).to_be_in_viewport()

    # Keyboard: open, Escape closes and gives focus back to the button.
    menu.focus()
    page.keyboard.press("Enter")
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(nav.get_by_role("link", name="Agents")).to_be_visible()
    assert page.evaluate("document.activeElement.closest('nav') !== null")
    expect(page.locator(".content")).to_have_js_property("inert", True)
    shot(page, "shell-phone-drawer")
    page.keyboard.press("Escape")
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(menu).to_be_focused()
    expect(nav.get_by_role("link", name="Agents")).to_be_hidden()
    expect(page.locator(".content")).to_have_js_property("inert", False)

    # Following a link closes the drawer.
    menu.click()
    nav.get_by_role("link", name="Agents").click()
    rendered(page, "#/agents")
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(nav.get_by_role("link", name="Agents")).to_be_hidden()

    # Records are cards: each value labelled, no button cut off.
    page.get_by_role("searchbox").fill(long_name)
    row = page.locator("table.records tbody tr").first
    expect(row.locator("td").first).to_have_attribute("data-label", "Name")
    delete = row.get_by_role("button", name=f"Delete {long_name}")
    box = delete.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]

    overflow = "() => document.documentElement.scrollWidth - window.innerWidth"
    wide = []
    for route in [*MAIN_SCREENS, f"agents/{agent['id']}", f"chat/{agent['id']}"]:
        goto(page, dashboard, route)
        if page.evaluate(overflow) > 0:
            shot(page, f"shell-overflow-{route.replace('/', '-') or 'start'}")
            wide.append(f"#/{route}: {page.evaluate(overflow)} px")
    assert not wide, f"screens wider than the phone: {wide}"

    # The chat composer stays at the bottom of the screen.
    composer = page.locator("form.composer")
    assert composer.evaluate("(e) => getComputedStyle(e).position") == "sticky"
    box = composer.bounding_box()
    assert box is not None and box["y"] + box["height"] <= PHONE["height"] + 1
