"""What a chat message shows beyond its text, against the local OpenAI-protocol server: copy
buttons (message and code block), highlighted code, the numbered sources of an answer with the
passage in a dialog, a tool call's MCP origin and duration, and the per-chat model choice (the
model server receives the chosen model; the session keeps it)."""

from __future__ import annotations

import base64
import sys
import uuid
from typing import Any

from playwright.sync_api import Browser, Page, expect

from tests.engine.mcp_fixtures import SERVERS
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.web.conftest import VIEWPORT, Dashboard, shot, sign_in
from tests.web.ui import api, goto, rendered

PASSAGE = "The aurora-42 gateway restarts every night at 03:15 UTC to rotate its certificates."
CODE_REPLY = (
    'Here is how:\n\n```python\ndef restart(gateway):\n    return gateway.reboot(at="03:15")\n```\n\n'
    "See the runbook [1]."
)


def _setup(dashboard: Dashboard, model_server: ProtocolServer) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:6]
    provider = api(
        dashboard,
        "POST",
        "/api/providers",
        json={"name": f"local-{suffix}", "provider_type": "custom", "auth_type": "none",
              "base_url": f"{model_server.url}/v1", "default_model": "llama3.1",
              "models": ["llama3.1", "qwen2.5-coder"]},
    ).json()  # fmt: skip
    source = api(
        dashboard, "POST", "/api/knowledge-sources", json={"name": f"runbooks-{suffix}"}
    ).json()
    item = api(
        dashboard,
        "POST",
        "/api/knowledge-items",
        json={"source_id": source["id"], "name": "Gateway runbook", "text_content": PASSAGE},
    ).json()
    assert item["status"] == "indexed"
    server = api(
        dashboard,
        "POST",
        "/api/mcps",
        json={"name": f"demo-{suffix}", "connection_config": {
            "command": sys.executable, "args": [str(SERVERS / "demo_mcp.py"), "stdio"]}},
    ).json()  # fmt: skip
    agent = api(
        dashboard,
        "POST",
        "/api/agents",
        json={"name": f"ops-{suffix}", "provider_id": provider["id"], "model": "llama3.1",
              "knowledge_source_ids": [source["id"]], "mcp_server_ids": [server["id"]]},
    ).json()  # fmt: skip
    return {"agent": agent, "item": item, "server": server, "provider": provider}


def test_copy_code_sources_tool_origin_and_model_choice(
    browser: Browser, dashboard: Dashboard, model_server: ProtocolServer
) -> None:
    model_server.reset()
    setup = _setup(dashboard, model_server)
    agent, server = setup["agent"], setup["server"]
    context = browser.new_context(viewport=VIEWPORT)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dashboard.base)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(  # as the `page` fixture: an error status is expected, any other error is a bug
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        _scenario(page, dashboard, model_server, agent, server, setup["item"])
    finally:
        context.close()
    assert not errors, errors


def _scenario(
    page: Page,
    dashboard: Dashboard,
    model_server: ProtocolServer,
    agent: dict[str, Any],
    server: dict[str, Any],
    item: dict[str, Any],
) -> None:
    sign_in(page, dashboard)
    goto(page, dashboard, f"chat/{agent['id']}")
    picker = page.get_by_label("Model", exact=True)
    expect(picker).to_have_value("llama3.1")
    picker.select_option("qwen2.5-coder")

    # Turn 1: the model calls the MCP server's `add`, then answers with code and a citation.
    model_server.script(Turn(tool_calls=[("add", {"a": 2, "b": 3})]), Turn(text=CODE_REPLY))
    page.get_by_label("Message to").fill("When does the aurora-42 gateway restart?")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".message-assistant").last
    expect(reply).to_contain_text("See the runbook")
    expect(reply).not_to_have_attribute("data-streaming", "true")
    # The chosen model reached the model server, and the passage was in its context.
    assert {r.body["model"] for r in model_server.requests} == {"qwen2.5-coder"}
    assert PASSAGE in model_server.requests[0].all_text()

    # Tool call: origin (the MCP server's name) and duration.
    call = reply.locator("details.tool-call")
    expect(call.locator(".tool-meta")).to_contain_text(f"MCP server {server['name']}")
    expect(call.locator(".tool-meta")).to_contain_text(" ms")

    # Code: highlighted spans, and a copy button that puts the code on the clipboard.
    code = reply.locator(".code-block pre code")
    expect(code.locator("span.hljs-keyword").first).to_have_text("def")
    expect(code).to_have_attribute("data-language", "python")
    reply.get_by_role("button", name="Copy code block 1").click()
    expect(reply.get_by_role("button", name="Copy code block 1")).to_have_attribute(
        "data-state", "copied"
    )
    expect(page.locator("#live")).to_contain_text("Copied")
    clip = page.evaluate("navigator.clipboard.readText()")
    assert clip == 'def restart(gateway):\n    return gateway.reboot(at="03:15")'

    # The whole answer's copy button copies its Markdown source.
    reply.get_by_role("button", name="Copy the answer").click()
    assert page.evaluate("navigator.clipboard.readText()") == CODE_REPLY

    # Sources: numbered under the answer; the passage opens in a dialog.
    sources = reply.get_by_role("region", name="Sources")
    expect(sources.locator("li")).to_have_count(1)
    sources.get_by_role("button", name="Gateway runbook").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading")).to_have_text("[1] Gateway runbook")
    expect(dialog.locator(".passage-text")).to_have_text(PASSAGE)
    link = dialog.get_by_role("link", name="Open the knowledge item")
    expect(link).to_have_attribute("href", f"#/knowledge-items/{item['id']}")
    shot(page, "chat-content-passage")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)

    # The session keeps the choice, and the history shows the same parts after a reload.
    page.wait_for_url(f"**/#/chat/{agent['id']}/*")
    session_id = page.url.rsplit("/", 1)[1]
    session = api(dashboard, "GET", f"/api/chat/sessions/{session_id}").json()
    assert session["metadata"]["model"] == "qwen2.5-coder"
    page.reload()
    expect(page.get_by_label("Model", exact=True)).to_have_value("qwen2.5-coder")
    reply = page.locator(".message-assistant").last
    expect(reply.locator(".tool-meta")).to_contain_text(f"MCP server {server['name']}")
    expect(reply.get_by_role("region", name="Sources").locator("li")).to_have_count(1)
    expect(reply.locator(".code-block span.hljs-keyword").first).to_have_text("def")
    shot(page, "chat-content-history")

    # On a phone the header, code blocks and sources fit the width.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_label("Model", exact=True)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "chat-content-phone")


#: A 1 by 1 pixel PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf000000030101005c2d3a6a0000000049454e44ae426082"
)
NOTE = "Zebra enclosure access code: the gate opens with code 7413 after the keeper's call."


def test_attachments_text_becomes_session_knowledge_and_images_reach_vision_models(
    page: Page, dashboard: Dashboard, model_server: ProtocolServer
) -> None:
    model_server.reset()
    suffix = uuid.uuid4().hex[:6]
    provider = api(
        dashboard,
        "POST",
        "/api/providers",
        json={"name": f"vision-{suffix}", "provider_type": "custom", "auth_type": "none",
              "base_url": f"{model_server.url}/v1", "default_model": "llama3.1",
              "models": ["llama3.1", "gpt-4o"]},
    ).json()  # fmt: skip
    agent = api(
        dashboard,
        "POST",
        "/api/agents",
        json={"name": f"keeper-{suffix}", "provider_id": provider["id"], "model": "llama3.1"},
    ).json()
    sign_in(page, dashboard)
    goto(page, dashboard, f"chat/{agent['id']}")
    attach = page.get_by_label("Attach files")
    errors = page.locator(".attach .field-error")

    # Client-side checks: an unsupported type and an image over the limit never leave the page.
    attach.set_input_files(
        [
            {"name": "tool.exe", "mimeType": "application/octet-stream", "buffer": b"MZ"},
            {"name": "huge.png", "mimeType": "image/png", "buffer": b"\0" * (5 * 1024 * 1024 + 1)},
        ]
    )
    expect(errors).to_contain_text("tool.exe: only text files, PDFs and images can be attached.")
    expect(errors).to_contain_text("huge.png has 5.0 MB; the limit is 5.0 MB.")
    expect(page.get_by_role("list", name="Attached files")).to_be_hidden()

    # A text file: indexed for this session; the next turn's context holds its passage.
    attach.set_input_files(
        {"name": "zoo-notes.md", "mimeType": "text/markdown", "buffer": NOTE.encode()}
    )
    expect(errors).to_be_hidden()
    expect(page.locator(".attach li")).to_contain_text("zoo-notes.md (1 KB)")
    model_server.script(Turn(text="The code is 7413 [1]."))
    page.get_by_label("Message to").fill("What is the zebra enclosure access code?")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".message-assistant").last
    expect(reply).to_contain_text("The code is 7413")
    expect(page.locator(".message-user").last.locator(".attachments")).to_have_text("zoo-notes.md")
    assert NOTE in model_server.requests[-1].all_text()
    expect(reply.get_by_role("region", name="Sources")).to_contain_text("zoo-notes.md")
    page.wait_for_url(f"**/#/chat/{agent['id']}/*")

    # An image with a model not known to take images: refused with a clear message.
    model_server.script(Turn(text="unused"))
    attach.set_input_files({"name": "map.png", "mimeType": "image/png", "buffer": PNG})
    expect(page.locator(".attach li img")).to_have_count(1)
    page.get_by_label("Message to").fill("What does this map show?")
    page.get_by_role("button", name="Send").click()
    # (a send the server refuses is "not sent": the text stays in the box, nothing is stored)
    expect(page.locator(".composer textarea + .field-error")).to_contain_text(
        "is not known to accept images"
    )
    expect(page.get_by_label("Message to")).to_have_value("What does this map show?")
    assert len(model_server.requests) == 1

    # With a vision model the image reaches the model as an image part of the user message.
    page.get_by_label("Model", exact=True).select_option("gpt-4o")
    attach.set_input_files({"name": "map.png", "mimeType": "image/png", "buffer": PNG})
    page.get_by_label("Message to").fill("And now?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message-assistant").last).to_contain_text("unused")
    sent = model_server.requests[-1].body
    assert sent["model"] == "gpt-4o"
    parts = sent["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "And now?"}
    assert parts[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert NOTE in model_server.requests[-1].all_text()  # the session's file is still searched

    # After a reload the history names each message's files (the refused turn stored nothing).
    page.reload()
    rendered(page)
    users = page.locator(".message-user")
    expect(users).to_have_count(2)
    expect(users.nth(0).locator(".attachments")).to_have_text("zoo-notes.md")
    expect(users.nth(1).locator(".attachments")).to_have_text("map.png")
    expect(page.get_by_label("Model", exact=True)).to_have_value("gpt-4o")

    # Another chat with the same agent does not see this session's file.
    model_server.script(Turn(text="No idea."))
    page.get_by_role("link", name="New chat").click()
    rendered(page, f"#/chat/{agent['id']}")
    page.get_by_label("Message to").fill("What is the zebra enclosure access code?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message-assistant").last).to_contain_text("No idea.")
    assert NOTE not in model_server.requests[-1].all_text()
    shot(page, "chat-attachments")
