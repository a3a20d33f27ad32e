"""Chat sessions and turns in the dashboard: the sessions sidebar (search, Load more past the
first page, pin, rename and delete in place, export as Markdown and JSON), Stop keeps the partial
answer, regenerate and edit-and-resend keep versions the user can switch between (the model only
sees the active branch), and a failed send keeps its text with a Retry."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
from playwright.sync_api import Page, Route, expect

from tests.engine.protocol_server import ProtocolServer, Turn
from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, goto, rendered

STREAMING_LENGTH = """() => {
  const el = document.querySelector('.message-assistant[data-streaming="true"] .bubble-body');
  return el ? el.textContent.length : -1;
}"""


def test_sessions_sidebar_search_paging_pin_rename_export_delete(
    page: Page, dashboard: Dashboard
) -> None:
    agent = api(
        dashboard, "POST", "/api/agents", json={"name": f"sidebar-{uuid.uuid4().hex[:6]}"}
    ).json()
    headers = {"Authorization": f"Bearer {dashboard.key}"}
    with httpx.Client(base_url=dashboard.base, headers=headers, timeout=30) as client:
        for i in range(128):
            r = client.post(
                "/api/chat/sessions", json={"agent_id": agent["id"], "title": f"Chat {i:03d}"}
            )
            assert r.status_code == 201
        lemon = client.post(
            "/api/chat/sessions", json={"agent_id": agent["id"], "title": "Lemon recipe"}
        ).json()
        talk = client.post(
            "/api/chat/sessions", json={"agent_id": agent["id"], "title": "Travel notes"}
        ).json()
        messages = f"/api/chat/sessions/{talk['id']}/messages"
        client.post(messages, json={"role": "user", "content": "Book a zeppelin ride"})
        call = {"id": "call_1", "type": "function",
                "function": {"name": "lookup", "arguments": "{\"q\": \"zeppelin\"}"}}  # fmt: skip
        client.post(messages, json={"role": "assistant", "content": "", "tool_calls": [call]})
        client.post(
            messages,
            json={"role": "tool", "tool_call_id": "call_1", "name": "lookup", "content": "3 rides"},
        )
        client.post(
            messages,
            json={"role": "assistant", "content": "There are **3 rides**.",
                  "usage": {"input_tokens": 12, "output_tokens": 3, "cost_usd": 0}},
        )  # fmt: skip

    sign_in(page, dashboard)
    goto(page, dashboard, f"chat/{agent['id']}")
    # The composer asks for the focus when the chat opens (main.js gives it to
    # `data-autofocus` after a route change).
    expect(page.get_by_label("Message to")).to_have_attribute("data-autofocus", "")
    items = page.locator(".sessions .session-list li")
    expect(items).to_have_count(50)
    more = page.get_by_role("button", name="Load more")
    more.click()
    expect(items).to_have_count(100)
    more.click()
    expect(items).to_have_count(130)  # the oldest chats are reachable
    expect(more).to_be_hidden()
    expect(items.last).to_contain_text("Chat 000")

    # Search: by title and by message text, server-side.
    search = page.get_by_label("Search chats")
    search.fill("zeppelin")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("Travel notes")
    search.fill("LEMON")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("Lemon recipe")
    search.fill("no chat says this")
    expect(items).to_have_count(0)
    expect(page.locator(".sessions")).to_contain_text("No chats match")
    search.fill("")
    expect(items).to_have_count(50)

    # Open the older chat: its tools; pin it (listed first), rename it in place.
    page.get_by_role("link", name="Lemon recipe").click()
    rendered(page, f"#/chat/{agent['id']}/{lemon['id']}")
    page.get_by_role("button", name="Pin", exact=True).click()
    expect(page.get_by_role("button", name="Unpin")).to_have_attribute("aria-pressed", "true")
    expect(items.first).to_contain_text("Pinned: Lemon recipe")
    assert api(dashboard, "GET", f"/api/chat/sessions/{lemon['id']}").json()["metadata"] == {
        "pinned": True
    }
    page.evaluate("document.querySelector('.messages').dataset.probe = 'same view'")
    page.get_by_role("button", name="Rename").click()
    page.get_by_role("dialog").get_by_label("Title").fill("Lemon tart")
    page.get_by_role("dialog").get_by_role("button", name="Rename").click()
    expect(page.locator(".sessions a[aria-current=page]")).to_contain_text("Lemon tart")
    expect(page.locator(".messages")).to_have_attribute("data-probe", "same view")  # no reload

    # Export the chat with the tool call as Markdown and JSON.
    page.get_by_role("link", name="Travel notes").click()
    rendered(page, f"#/chat/{agent['id']}/{talk['id']}")
    with page.expect_download() as md:
        page.get_by_role("button", name="Export Markdown").click()
    assert md.value.suggested_filename == "travel-notes.md"
    text = Path(md.value.path()).read_text(encoding="utf-8")
    assert text.startswith("# Travel notes")
    assert "## You\n\nBook a zeppelin ride" in text
    assert "### Tool call: lookup" in text and "3 rides" in text
    assert "There are **3 rides**." in text and "_Usage: 12 in · 3 out tokens_" in text
    with page.expect_download() as js:
        page.get_by_role("button", name="Export JSON").click()
    data = json.loads(Path(js.value.path()).read_text(encoding="utf-8"))
    assert data["title"] == "Travel notes" and data["agent"]["id"] == agent["id"]
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert data["messages"][1]["tool_calls"][0]["function"]["name"] == "lookup"
    assert data["messages"][3]["usage"]["input_tokens"] == 12
    shot(page, "chat-sessions")

    # Delete: gone from the list and from the server.
    page.get_by_role("button", name="Delete chat").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    rendered(page, f"#/chat/{agent['id']}")
    expect(page.get_by_role("link", name="Travel notes")).to_have_count(0)
    assert api(dashboard, "GET", f"/api/chat/sessions/{talk['id']}").status_code == 404


def wait_streaming(page: Page, at_least: int) -> None:
    deadline = time.monotonic() + 20
    while page.evaluate(STREAMING_LENGTH) < at_least:
        assert time.monotonic() < deadline, "the answer did not start streaming"
        page.wait_for_timeout(20)


def finished(page: Page) -> None:
    """The turn has ended (the stream closed), not only shown its text."""
    expect(page.locator(".message[data-streaming]")).to_have_count(0)
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()


def test_stop_regenerate_edit_versions_and_failed_send(
    page: Page, dashboard: Dashboard, model_server: ProtocolServer
) -> None:
    model_server.reset()
    provider = api(
        dashboard,
        "POST",
        "/api/providers",
        json={"name": f"turns-{uuid.uuid4().hex[:6]}", "provider_type": "custom",
              "base_url": f"{model_server.url}/v1", "auth_type": "none", "default_model": "m"},
    ).json()  # fmt: skip
    agent = api(
        dashboard,
        "POST",
        "/api/agents",
        json={"name": f"turns-{uuid.uuid4().hex[:6]}", "provider_id": provider["id"], "model": "m"},
    ).json()
    sign_in(page, dashboard)
    goto(page, dashboard, f"chat/{agent['id']}")
    box = page.get_by_label("Message to")
    answers = page.locator(".messages .message-assistant")

    model_server.script(Turn(text="alpha answer"))
    box.fill("alpha question")
    box.press("Enter")
    expect(answers.last).to_contain_text("alpha answer")
    expect(box).to_be_focused()  # back in the composer for the next message
    # The new chat has its tools without a reload.
    expect(page.get_by_role("button", name="Rename")).to_be_visible()
    expect(page.get_by_role("button", name="Delete chat")).to_be_visible()
    page.wait_for_url(f"**/#/chat/{agent['id']}/*")
    session_id = page.url.rsplit("/", 1)[1]

    # Stop: the partial answer stays, marked, also after a reload.
    model_server.script(Turn(text="once upon a time " * 100, chunk_chars=4, delay=0.03))
    box.fill("tell a long story")
    box.press("Enter")
    wait_streaming(page, 20)
    page.get_by_role("button", name="Stop").click()
    expect(answers.last.locator(".stopped-mark")).to_be_visible()
    expect(page.locator(".chat-status")).to_contain_text("Stopped")
    detail = f"/api/agents/{agent['id']}/chat/sessions/{session_id}"
    deadline = time.monotonic() + 15
    while not [
        m for m in api(dashboard, "GET", detail).json()["messages"] if m["metadata"].get("stopped")
    ]:
        assert time.monotonic() < deadline, "the stopped answer was not stored"
        page.wait_for_timeout(50)
    page.reload()
    rendered(page)
    expect(answers).to_have_count(2)
    expect(answers.last).to_contain_text("once upon a time")
    expect(answers.last.locator(".stopped-mark")).to_contain_text("Stopped")

    # Regenerate the stopped answer; both versions stay and can be switched.
    model_server.script(Turn(text="a short story"))
    answers.last.get_by_role("button", name="Regenerate").click()
    expect(answers.last).to_contain_text("a short story")
    expect(answers.last.locator(".version-count")).to_have_text("2 / 2")
    sent = model_server.requests[-1].all_text()
    assert "tell a long story" in sent and "once upon" not in sent
    answers.last.get_by_role("button", name="Previous version of this answer").click()
    expect(answers.last).to_contain_text("once upon a time")
    expect(answers.last.locator(".version-count")).to_have_text("1 / 2")
    answers.last.get_by_role("button", name="Next version of this answer").click()
    expect(answers.last).to_contain_text("a short story")

    # Edit the first message and send it again: a branch; the model sees only that branch.
    first = page.locator(".messages .message-user").first
    first.get_by_role("button", name="Edit").click()
    edit = first.get_by_label("Edit message")
    expect(edit).to_be_focused()
    edit.fill("alpha edited")
    model_server.script(Turn(text="edited answer"))
    first.get_by_role("button", name="Send edit").click()
    expect(answers.last).to_contain_text("edited answer")
    users = page.locator(".messages .message-user")
    expect(users).to_have_count(1)
    expect(users.first.locator(".version-count")).to_have_text("2 / 2")
    sent = model_server.requests[-1].all_text()
    assert "alpha edited" in sent and "alpha question" not in sent and "story" not in sent
    model_server.script(Turn(text="noted"))
    box.fill("follow up")
    box.press("Enter")
    expect(answers.last).to_contain_text("noted")
    finished(page)
    sent = model_server.requests[-1].all_text()
    assert "edited answer" in sent and "follow up" in sent
    assert "alpha answer" not in sent and "story" not in sent
    # The first version is still there.
    users.first.get_by_role("button", name="Previous version of this message").click()
    expect(users.first.locator(".bubble-body")).to_have_text("alpha question")
    expect(page.locator(".messages")).to_contain_text("a short story")
    users.first.get_by_role("button", name="Next version of this message").click()
    expect(answers.last).to_contain_text("noted")
    finished(page)
    shot(page, "chat-versions")

    # A send that fails keeps the text and offers Retry.
    def refuse(route: Route) -> None:
        route.abort()

    page.route("**/api/agents/*/chat", refuse)
    box.fill("will this arrive?")
    box.press("Enter")
    expect(page.locator(".composer textarea + .field-error")).to_contain_text("Not sent")
    expect(box).to_have_value("will this arrive?")
    expect(page.locator(".messages")).not_to_contain_text("will this arrive?")
    page.unroute("**/api/agents/*/chat", refuse)
    model_server.script(Turn(text="it arrived"))
    page.get_by_role("button", name="Retry").click()
    expect(answers.last).to_contain_text("it arrived")
    expect(box).to_have_value("")
    expect(page.get_by_role("button", name="Retry")).to_be_hidden()

    # At phone width the chat still fits and works.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(box).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "chat-phone")
