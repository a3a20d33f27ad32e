"""Set up a provider, a token and an agent from the dashboard, then chat with the agent against
the local OpenAI-protocol server: the reply streams in incrementally, is rendered as Markdown,
tool calls are shown collapsed, usage is shown per message, and the history comes back."""

from __future__ import annotations

import time
import uuid

from playwright.sync_api import Page, expect

from tests.engine.protocol_server import ProtocolServer, Turn
from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, create, goto, rendered

REPLY = (
    "Hello **there**! Here is a list:\n\n- first point\n- second point\n\n"
    "And some `inline code` plus a <script>window.pwned = 1</script> that must stay text. "
    "This sentence is long enough to arrive in many small pieces over the stream."
)

STREAMING_LENGTH = """() => {
  const el = document.querySelector('.message-assistant[data-streaming="true"] .bubble-body');
  return el ? el.textContent.length : -1;
}"""


def set_up_agent(page: Page, dashboard: Dashboard, model_server: ProtocolServer) -> str:
    """Token → provider → agent, all through the dashboard's forms; returns the agent id."""
    suffix = uuid.uuid4().hex[:6]
    create(
        page,
        dashboard,
        "tokens",
        "token",
        {"Name": f"local-key-{suffix}", "Secret value": "sk-local-model"},
    )
    provider_id = create(
        page,
        dashboard,
        "providers",
        "provider",
        {
            "Name": f"local-{suffix}",
            "Type": "custom",
            "Base URL": f"{model_server.url}/v1",
            "API key token": f"local-key-{suffix}",
            "Default model": "llama3.1",
        },
    )
    agent_id = create(
        page,
        dashboard,
        "agents",
        "agent",
        {
            "Name": f"helper-{suffix}",
            "System prompt": "You are a helpful assistant.",
            "Provider": f"local-{suffix}",
            "Model": "llama3.1",
            "Built-in tools": ["update_todos"],
        },
    )
    assert api(dashboard, "GET", f"/api/agents/{agent_id}").json()["provider_id"] == provider_id
    return agent_id


def test_chat_streams_a_reply_incrementally(
    page: Page, dashboard: Dashboard, model_server: ProtocolServer
) -> None:
    model_server.reset()
    sign_in(page, dashboard)
    agent_id = set_up_agent(page, dashboard, model_server)
    page.get_by_role("link", name="Chat with this agent").click()
    rendered(page, f"#/chat/{agent_id}")
    shot(page, "chat-empty")
    model_server.script(Turn(text=REPLY, chunk_chars=6, delay=0.04, usage=(321, 45)))
    box = page.get_by_label("Message to")
    box.fill("Say hello with a list.")
    box.press("Enter")
    lengths: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        n = page.evaluate(STREAMING_LENGTH)
        if n == -1 and lengths:
            break
        if n >= 0:
            lengths.append(n)
        time.sleep(0.01)
    partial = sorted({n for n in lengths if 0 < n < 150})
    assert len(partial) >= 5, f"the reply did not arrive incrementally: {sorted(set(lengths))}"
    reply = page.locator(".message-assistant").last
    expect(reply.locator("strong")).to_have_text("there")
    expect(reply.locator("li")).to_have_count(2)
    expect(reply.locator("code")).to_have_text("inline code")
    expect(reply).to_contain_text("<script>window.pwned = 1</script>")
    assert page.evaluate("window.pwned") is None
    expect(reply.locator(".usage")).to_contain_text("321 in · 45 out tokens")
    expect(page.locator("#live")).to_contain_text("replied: Hello there!")  # said once, at the end
    # The model saw the user's message.
    assert "Say hello with a list." in model_server.requests[-1].all_text()
    assert model_server.requests[-1].headers["authorization"] == "Bearer sk-local-model"
    page.wait_for_url(f"**/#/chat/{agent_id}/*")
    shot(page, "chat")

    # A second turn in the same session, with a tool call shown collapsed.
    model_server.script(
        Turn(tool_calls=[("update_todos", {"todos": [{"title": "greet", "status": "done"}]})]),
        Turn(text="All done."),
    )
    box.fill("Track your steps.")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".message-assistant").last
    expect(reply).to_contain_text("All done.")
    call = reply.locator("details.tool-call")
    expect(call).to_have_count(1)
    expect(call).not_to_have_attribute("open", "")
    expect(call.locator("summary")).to_contain_text("update_todos")
    call.locator("summary").click()
    expect(call.locator(".tool-result")).to_contain_text("1/1 done")
    assert len(model_server.requests) == 3
    assert "Say hello with a list." in model_server.requests[-1].all_text()  # history kept

    # The session is listed and its history comes back after a reload.
    session_url = page.url
    page.reload()
    rendered(page)
    assert page.url == session_url
    expect(page.locator(".sessions a[aria-current=page]")).to_have_text("Say hello with a list.")
    messages = page.locator(".messages .message")
    expect(messages).to_have_count(4)
    expect(messages.nth(1).locator("strong")).to_have_text("there")
    expect(messages.nth(3).locator("details.tool-call summary")).to_contain_text("update_todos")
    expect(messages.nth(3)).to_contain_text("All done.")
    shot(page, "chat-history")


def test_chat_errors_are_shown_in_the_conversation(
    page: Page, dashboard: Dashboard, model_server: ProtocolServer
) -> None:
    model_server.reset()
    sign_in(page, dashboard)
    provider = api(
        dashboard,
        "POST",
        "/api/providers",
        json={"name": f"down-{uuid.uuid4().hex[:6]}", "provider_type": "custom",
              "base_url": f"{model_server.url}/v1", "auth_type": "none", "default_model": "m"},
    ).json()  # fmt: skip
    agent = api(
        dashboard,
        "POST",
        "/api/agents",
        json={"name": "grumpy", "provider_id": provider["id"], "model": "m"},
    ).json()
    model_server.script(
        *[Turn(status=400, error_body={"error": {"message": "bad request from test"}})] * 3
    )
    goto(page, dashboard, f"chat/{agent['id']}")
    page.get_by_label("Message to").fill("hello?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message-assistant .error")).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


def test_chat_without_agents_says_what_to_do_first(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard, dashboard.new_key(f"lonely-{uuid.uuid4().hex[:6]}"))
    goto(page, dashboard, "chat")
    expect(page.locator(".empty")).to_contain_text("create an agent")
    expect(page.get_by_role("link", name="Create an agent")).to_be_visible()


def test_rename_and_delete_a_chat_session(page: Page, dashboard: Dashboard) -> None:
    agent = api(
        dashboard, "POST", "/api/agents", json={"name": f"talker-{uuid.uuid4().hex[:6]}"}
    ).json()
    session = api(
        dashboard,
        "POST",
        "/api/chat/sessions",
        json={"agent_id": agent["id"], "title": "Old title"},
    ).json()
    api(
        dashboard,
        "POST",
        f"/api/chat/sessions/{session['id']}/messages",
        json={"role": "user", "content": "Hi there"},
    )
    sign_in(page, dashboard)
    goto(page, dashboard, f"chat/{agent['id']}/{session['id']}")
    expect(page.locator(".messages .message-user .bubble-body")).to_have_text("Hi there")
    expect(page.locator("#main .notice-info")).to_contain_text("no provider yet")
    page.get_by_role("button", name="Rename").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Title").fill("Greetings")
    dialog.get_by_role("button", name="Rename").click()
    expect(page.locator(".sessions a[aria-current=page]")).to_have_text("Greetings")
    assert (
        api(dashboard, "GET", f"/api/chat/sessions/{session['id']}").json()["title"] == "Greetings"
    )
    page.get_by_role("button", name="Delete chat").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    rendered(page, f"#/chat/{agent['id']}")
    assert api(dashboard, "GET", f"/api/chat/sessions/{session['id']}").status_code == 404
    expect(page.locator(".sessions")).to_contain_text("No earlier chats.")
