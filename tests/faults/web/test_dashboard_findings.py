"""Finding 14 of the fault hunt (issue #16), in headless Chromium against the API on a real
socket: a 5 MB paste into the chat box is refused in the page, before it is rendered or sent
(it froze the tab for seconds, then the API answered 422), and `/openapi.json` is revalidated
with its ETag instead of downloaded again on every page load."""

from __future__ import annotations

import uuid

import httpx
from playwright.sync_api import Page, Request, expect

from tests.web.conftest import Dashboard, sign_in
from tests.web.ui import api, goto, rendered

FIVE_MB = 5 * 1024 * 1024


def _agent(dashboard: Dashboard) -> str:
    provider = api(
        dashboard,
        "POST",
        "/api/providers",
        json={"name": f"p-{uuid.uuid4().hex[:6]}", "provider_type": "custom",
              "base_url": "http://127.0.0.1:9/v1", "auth_type": "none", "default_model": "m"},
    ).json()  # fmt: skip
    agent = api(
        dashboard,
        "POST",
        "/api/agents",
        json={"name": f"a-{uuid.uuid4().hex[:6]}", "provider_id": provider["id"], "model": "m"},
    ).json()
    return str(agent["id"])


def test_a_huge_paste_is_refused_in_the_page(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    agent_id = _agent(dashboard)
    goto(page, dashboard, f"chat/{agent_id}")
    rendered(page, f"#/chat/{agent_id}")
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if r.url.endswith("/chat") else None)
    box = page.get_by_label("Message to")
    # As a paste does: the value set at once, then one input event.
    box.evaluate(
        "(el, n) => { el.value = 'x'.repeat(n); el.dispatchEvent(new Event('input')); }", FIVE_MB
    )
    error = page.locator(".composer textarea + .field-error")  # the message box's own
    expect(error).to_be_visible()
    expect(error).to_contain_text("the limit is 200,000")
    send = page.get_by_role("button", name="Send")
    expect(send).to_be_disabled()
    box.press("Enter")  # the keyboard path is refused too
    page.wait_for_timeout(300)
    assert sent == []
    assert page.locator(".message-user").count() == 0  # nothing rendered
    assert box.evaluate("el => el.value.length") == FIVE_MB  # the text is kept
    box.fill("a short question")
    expect(error).to_be_hidden()
    expect(send).to_be_enabled()


def test_the_openapi_document_is_revalidated_not_downloaded_again(dashboard: Dashboard) -> None:
    first = httpx.get(dashboard.base + "/openapi.json")
    assert first.status_code == 200 and first.json()["paths"]
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = httpx.get(dashboard.base + "/openapi.json", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == tag
    other = httpx.get(dashboard.base + "/openapi.json", headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200 and other.content == first.content


def test_a_page_reload_gets_a_304_for_the_openapi_document(
    page: Page, dashboard: Dashboard
) -> None:
    sign_in(page, dashboard)
    agent_id = _agent(dashboard)
    bodies: list[int] = []  # bytes of the document that crossed the network, per fetch
    page.on(
        "requestfinished",
        lambda r: (
            bodies.append(r.sizes()["responseBodySize"])
            if r.url.endswith("/openapi.json")
            else None
        ),
    )
    goto(page, dashboard, f"chat/{agent_id}")  # the chat page reads the document
    rendered(page, f"#/chat/{agent_id}")
    page.wait_for_load_state("networkidle")
    page.reload()
    rendered(page, f"#/chat/{agent_id}")
    page.wait_for_load_state("networkidle")
    assert bodies and bodies[0] > 100_000, bodies  # the first load downloads it
    # the reload does not download it again: kept for the tab (sessionStorage), or a 304
    assert sum(bodies[1:]) == 0, bodies
