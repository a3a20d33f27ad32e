"""First run: the Start page's wizard connects a provider from its API key (a refused key says
what to do), creates a first agent on one of its models, and ends in a chat that streams an
answer. Also the one-step provider form (#/setup/provider)."""

from __future__ import annotations

import uuid

import httpx
from playwright.sync_api import Page, expect

from tbd_agents.domain.auth import KeyScope
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, goto, rendered

GOOD_KEY = "sk-onboarding-good"


def test_wizard_from_nothing_to_a_streamed_answer(
    page: Page, dashboard: Dashboard, model_server: ProtocolServer
) -> None:
    model_server.reset()
    model_server.copilot.issued.append(GOOD_KEY)  # /v1/models answers this key only
    model_server.copilot.models = [{"id": "qwen2.5"}, {"id": "llama3.1"}]
    newcomer = f"newcomer-{uuid.uuid4().hex[:6]}"
    sign_in(page, dashboard, dashboard.new_key(newcomer, KeyScope.ADMIN))
    wizard = page.get_by_role("region", name="Set up your hub")
    expect(wizard.get_by_role("heading", name="Connect a model provider")).to_be_visible()
    expect(wizard.locator("[aria-current='step']")).to_have_text("1. Provider")

    wizard.get_by_label("Kind").select_option(
        label="OpenAI-compatible server (Ollama, vLLM, LM Studio, …)"
    )
    expect(wizard.get_by_label("Name")).to_have_value("Local models")
    name = f"Local {newcomer}"
    wizard.get_by_label("Name").fill(name)
    # the address is needed for a compatible server
    wizard.get_by_label("API key").fill("sk-wrong")
    wizard.get_by_role("button", name="Test connection").click()
    expect(wizard.get_by_role("alert")).to_have_text(
        "Enter the server's base URL (for example http://localhost:11434/v1)."
    )
    expect(wizard.get_by_label("Base URL")).to_be_focused()
    wizard.get_by_label("Base URL").fill(f"{model_server.url}/v1")
    wizard.get_by_role("button", name="Test connection").click()
    expect(wizard.get_by_role("alert")).to_have_text(
        "The provider refused the key (401). Check the key and try again."
    )
    expect(wizard.get_by_label("API key")).to_be_focused()
    # a refused key on save stores nothing
    wizard.get_by_role("button", name="Save and continue").click()
    expect(wizard.get_by_role("alert")).to_contain_text("refused the key (401)")
    mine = api(dashboard, "GET", "/api/providers", params={"owner": newcomer}).json()
    assert (
        mine == [] and api(dashboard, "GET", "/api/tokens", params={"owner": newcomer}).json() == []
    )

    wizard.get_by_label("API key").fill("sk-\u00e9t\u00e9")  # not something a header carries
    wizard.get_by_role("button", name="Test connection").click()
    expect(wizard.get_by_role("alert")).to_contain_text("API key: an API key is printable ASCII")
    wizard.get_by_label("API key").fill(GOOD_KEY)
    wizard.get_by_role("button", name="Test connection").click()
    expect(wizard.get_by_text("The provider offers 2 models.")).to_be_visible()
    shot(page, "onboarding-provider")
    wizard.get_by_role("button", name="Save and continue").click()

    heading = wizard.get_by_role("heading", name="Create your first agent")
    expect(heading).to_be_focused()
    expect(wizard.locator("[aria-current='step']")).to_have_text("2. Agent")
    (provider,) = api(dashboard, "GET", "/api/providers", params={"owner": newcomer}).json()
    assert provider["name"] == name and provider["models"] == ["llama3.1", "qwen2.5"]
    (token,) = api(dashboard, "GET", "/api/tokens", params={"owner": newcomer}).json()
    assert provider["api_key_token_name"] == token["name"]
    assert GOOD_KEY not in page.content()
    model = wizard.get_by_label("Model")
    expect(model).to_have_value("llama3.1")
    model.select_option("qwen2.5")
    expect(wizard.get_by_label("System prompt")).to_have_value(
        "You are a helpful assistant. Answer clearly and concisely, and say so when you are not sure."
    )
    wizard.get_by_label("Agent name").fill("")
    wizard.get_by_role("button", name="Create agent and start chatting").click()
    expect(wizard.get_by_role("alert")).to_have_text("Give the agent a name.")
    wizard.get_by_label("Agent name").fill(f"Helper {newcomer}")
    wizard.get_by_role("button", name="Create agent and start chatting").click()

    page.wait_for_url("**#/chat/*")
    rendered(page)
    (agent,) = api(dashboard, "GET", "/api/agents", params={"owner": newcomer}).json()
    assert page.url.endswith(f"#/chat/{agent['id']}")
    assert agent["provider_id"] == provider["id"] and agent["model"] == "qwen2.5"
    model_server.script(Turn(text="Hello from your **new agent**.", chunk_chars=5, delay=0.02))
    box = page.get_by_label("Message to")
    box.fill("Hi!")
    box.press("Enter")
    reply = page.locator(".message-assistant").last
    expect(reply.locator("strong")).to_have_text("new agent")
    request = model_server.requests[-1]
    assert request.headers["authorization"] == f"Bearer {GOOD_KEY}"
    assert request.body["model"] == "qwen2.5" and "Hi!" in request.all_text()

    # no longer a first run: the Start page lists the next steps
    goto(page, dashboard, "")
    expect(page.get_by_role("region", name="Set up your hub")).to_have_count(0)
    expect(page.locator("[data-step='agents']")).to_contain_text("Done")
    # the wizard fits a phone screen
    page.set_viewport_size({"width": 390, "height": 844})
    goto(page, dashboard, "setup/provider")
    save = page.get_by_role("button", name="Save and continue")
    save.scroll_into_view_if_needed()
    box = save.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    shot(page, "setup-provider-phone")


def test_provider_from_its_key_in_one_step(
    page: Page, dashboard: Dashboard, model_server: ProtocolServer
) -> None:
    model_server.reset()
    model_server.copilot.issued.append(GOOD_KEY)
    model_server.copilot.models = [{"id": "m1"}]
    sign_in(page, dashboard)
    goto(page, dashboard, "providers")  # the providers list leads to the one-step form
    page.get_by_role("link", name="Add a provider from its API key").click()
    rendered(page, "#/setup/provider")
    name = f"keyed-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Kind").select_option("custom")
    page.get_by_label("Name").fill(name)
    page.get_by_label("API key").fill(GOOD_KEY)
    page.get_by_label("Base URL").fill(f"{model_server.url}/v1")
    page.get_by_role("button", name="Save and continue").click()
    page.wait_for_url("**#/providers/*")
    rendered(page)
    provider_id = page.url.rsplit("/", 1)[1]
    provider = api(dashboard, "GET", f"/api/providers/{provider_id}").json()
    assert provider["name"] == name and provider["api_key_token_name"] == f"{name}-api-key"
    # the same name again: refused, and no second token is left behind
    tokens = len(api(dashboard, "GET", "/api/tokens").json())
    goto(page, dashboard, "setup/provider")
    page.get_by_label("Kind").select_option("custom")
    page.get_by_label("Name").fill(name)
    page.get_by_label("API key").fill(GOOD_KEY)
    page.get_by_label("Base URL").fill(f"{model_server.url}/v1")
    page.get_by_role("button", name="Save and continue").click()
    expect(page.get_by_role("alert")).to_contain_text("Choose another name.")
    expect(page.get_by_label("Name")).to_be_focused()
    assert len(api(dashboard, "GET", "/api/tokens").json()) == tokens


def test_wizard_with_a_provider_already_there(page: Page, dashboard: Dashboard) -> None:
    owner = f"returning-{uuid.uuid4().hex[:6]}"
    key = dashboard.new_key(owner, KeyScope.ADMIN)
    provider = httpx.post(
        f"{dashboard.base}/api/providers",
        headers={"Authorization": f"Bearer {key}"},
        json={"name": f"kept-{owner}", "provider_type": "custom",
              "base_url": "http://127.0.0.1:9/v1", "models": ["m-kept"], "auth_type": "none"},
        timeout=30,
    ).json()  # fmt: skip
    sign_in(page, dashboard, key)
    wizard = page.get_by_role("region", name="Set up your hub")
    wizard.get_by_label("Provider", exact=True).select_option(label=f"kept-{owner}")
    wizard.get_by_role("button", name="Use this provider").click()
    expect(wizard.get_by_role("heading", name="Create your first agent")).to_be_focused()
    expect(wizard.get_by_label("Model")).to_have_value("m-kept")
    wizard.get_by_role("button", name="Create agent and start chatting").click()
    page.wait_for_url("**#/chat/*")
    (agent,) = api(dashboard, "GET", "/api/agents", params={"owner": owner}).json()
    assert agent["name"] == "Assistant" and agent["provider_id"] == provider["id"]
    assert agent["model"] == "m-kept"
