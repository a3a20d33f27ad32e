"""Every resource listed, created, edited and deleted from the dashboard; pickers; API errors
next to their field; secrets never shown after save; dependants shown on delete."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Response, expect

from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, create, fill_form, goto, rendered

SECRET = "sk-live-" + uuid.uuid4().hex


@pytest.fixture
def signed_in(page: Page, dashboard: Dashboard) -> Page:
    sign_in(page, dashboard)
    return page


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_token_values_are_write_only_and_never_displayed(
    signed_in: Page, dashboard: Dashboard
) -> None:
    page = signed_in
    bodies: list[str] = []

    def keep(response: Response) -> None:
        if "/api/" in response.url and response.request.method == "GET":
            bodies.append(response.text())

    page.on("response", keep)
    name = unique("secret")
    token_id = create(
        page,
        dashboard,
        "tokens",
        "token",
        {"Name": name, "Description": "for the test", "Secret value": SECRET},
    )
    value_field = page.get_by_label("Secret value")
    expect(value_field).to_have_value("")
    expect(value_field).to_have_attribute("type", "password")
    assert SECRET not in page.content()
    # Change the description only: the value stays as it was (not sent, not cleared).
    fill_form(page, {"Description": "changed"})
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    assert api(dashboard, "GET", f"/api/tokens/{token_id}").json()["description"] == "changed"
    # Replace the value: accepted, and the field is emptied again.
    fill_form(page, {"Secret value": SECRET + "-2"})
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    expect(value_field).to_have_value("")
    goto(page, dashboard, "tokens")
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_contain_text("••••••••")
    shot(page, "tokens")
    page.wait_for_load_state("networkidle")
    html = page.content()
    assert SECRET not in html
    assert bodies and not [b for b in bodies if SECRET in b]


def test_agent_pickers_save_the_chosen_records(signed_in: Page, dashboard: Dashboard) -> None:
    page = signed_in
    skill = api(
        dashboard,
        "POST",
        "/api/skills",
        json={"name": unique("skill"), "instructions": "Be brief."},
    ).json()
    guard = api(
        dashboard, "POST", "/api/guardrails", json={"name": unique("guard"), "patterns": ["secret"]}
    ).json()
    provider = api(
        dashboard,
        "POST",
        "/api/providers",
        json={
            "name": unique("prov"),
            "provider_type": "custom",
            "base_url": "http://127.0.0.1:9/v1",
            "models": ["alpha", "beta"],
            "auth_type": "none",
        },
    ).json()
    name = unique("agent")
    agent_id = create(
        page,
        dashboard,
        "agents",
        "agent",
        {
            "Name": name,
            "System prompt": "You answer briefly.",
            "Provider": provider["name"],
            "Skills": [skill["name"]],
            "Guardrails": [guard["name"]],
            "Built-in tools": ["update_todos"],
            "Temperature": "0.3",
            "Tags": "demo, test",
        },
    )
    saved = api(dashboard, "GET", f"/api/agents/{agent_id}").json()
    assert saved["provider_id"] == provider["id"]
    assert saved["skill_ids"] == [skill["id"]]
    assert saved["guardrail_ids"] == [guard["id"]]
    assert saved["builtin_tools"] == ["update_todos"]
    assert saved["temperature"] == 0.3
    assert saved["tags"] == ["demo", "test"]
    # The provider's models are offered for the model field.
    options = page.locator("datalist option")
    expect(options).to_have_count(2)
    assert options.evaluate_all("els => els.map(e => e.value)") == ["alpha", "beta"]
    # Pickers show what is saved when the record is opened again.
    page.reload()
    rendered(page)
    page.get_by_role("tab", name="Knowledge").click()  # the agent builder's tab of skills
    expect(
        page.get_by_role("group", name="Skills", exact=True).get_by_label(skill["name"])
    ).to_be_checked()
    expect(page.get_by_label("Provider", exact=True)).to_have_value(provider["id"])
    shot(page, "agent-edit")


def test_api_validation_errors_appear_next_to_their_field(
    signed_in: Page, dashboard: Dashboard
) -> None:
    page = signed_in
    goto(page, dashboard, "agents/new")
    fill_form(page, {"Name": unique("hot"), "Temperature": "5", "Max turns": "0"})
    page.get_by_role("button", name="Create agent").click()
    temperature = page.get_by_label("Temperature", exact=True)
    expect(temperature).to_have_attribute("aria-invalid", "true")
    error = page.locator(".field-temperature .field-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("less than or equal to 2")
    expect(page.locator(".field-max_turns .field-error")).to_contain_text(
        "greater than or equal to 1"
    )
    expect(page.locator(".form-errors")).to_be_visible()
    expect(temperature).to_be_focused()
    # A reference the server refuses is reported on its field too.
    goto(page, dashboard, "providers/new")
    page.get_by_label("API key token").wait_for()
    fill_form(page, {"Name": unique("p")})
    page.locator("main form").evaluate(
        "f => { const s = f.querySelector('select[name=api_key_token_name]'); s.append(new Option('ghost', 'ghost')); s.value = 'ghost'; }"
    )
    page.get_by_role("button", name="Create provider").click()
    expect(page.locator(".field-api_key_token_name .field-error")).to_contain_text("ghost")
    expect(page.locator(".form-errors")).not_to_contain_text("null")
    shot(page, "field-errors")


def test_json_fields_are_checked_before_sending(signed_in: Page, dashboard: Dashboard) -> None:
    page = signed_in
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.method) if "/api/mcps" in r.url else None)
    goto(page, dashboard, "mcps/new")
    fill_form(page, {"Name": unique("mcp"), "Connection (JSON)": "{not json"})
    page.get_by_role("button", name="Create MCP server").click()
    expect(page.locator(".field-connection_config .field-error")).to_contain_text("Not valid JSON")
    assert "POST" not in sent


CRUD: list[tuple[str, str, dict[str, Any], tuple[str, str, str, Any]]] = [
    (
        "skills",
        "skill",
        {"Instructions": "Say hi."},
        ("Description", "edited", "description", "edited"),
    ),
    (
        "mcps",
        "MCP server",
        {"Connection (JSON)": '{"command": "python", "args": ["-m", "srv"]}'},
        ("Allowed tools", "a\nb", "allowed_tools", ["a", "b"]),
    ),
    ("custom-tools", "custom tool", {}, ("Timeout (seconds)", "12", "timeout_seconds", 12)),
    (
        "guardrails",
        "guardrail",
        {"Patterns (regular expressions)": "password\\s*=\\s*\\S+"},
        ("Action", "redact", "action", "redact"),
    ),
    (
        "providers",
        "provider",
        {"Type": "custom", "Base URL": "http://127.0.0.1:9/v1"},
        ("Default model", "m-1", "default_model", "m-1"),
    ),
    ("knowledge-sources", "knowledge source", {}, ("Description", "docs", "description", "docs")),
    ("agents", "agent", {}, ("System prompt", "Be exact.", "system_prompt", "Be exact.")),
]


@pytest.mark.parametrize(("route", "singular", "extra", "edit"), CRUD, ids=[c[0] for c in CRUD])
def test_create_edit_list_delete(
    signed_in: Page,
    dashboard: Dashboard,
    route: str,
    singular: str,
    extra: dict[str, Any],
    edit: tuple[str, str, str, Any],
) -> None:
    page = signed_in
    name = unique(route)
    record_id = create(page, dashboard, route, singular, {"Name": name, **extra})
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    label, typed, field, stored = edit
    fill_form(page, {label: typed})
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    path = f"/api/{route}/{record_id}"
    assert api(dashboard, "GET", path).json()[field] == stored
    goto(page, dashboard, route)
    page.get_by_label("Search").fill(name)
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_have_count(1)
    row.get_by_role("button", name=f"Delete {name}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(name)
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator(".notice-success").last).to_contain_text("Deleted")
    expect(row).to_have_count(0)
    assert api(dashboard, "GET", path).status_code == 404


def test_child_records_workflow_schedule_memory_item(signed_in: Page, dashboard: Dashboard) -> None:
    page = signed_in
    agent = api(dashboard, "POST", "/api/agents", json={"name": unique("parent")}).json()
    source = api(dashboard, "POST", "/api/knowledge-sources", json={"name": unique("src")}).json()
    wf_name = unique("wf")
    wf_id = create(
        page,
        dashboard,
        "workflows",
        "workflow",
        {"Title": wf_name, "Agent": agent["name"], "Max turns": "3"},
    )
    assert api(dashboard, "GET", f"/api/workflows/{wf_id}").json()["agent_id"] == agent["id"]
    mem_id = create(
        page,
        dashboard,
        "memories",
        "memory",
        {"Agent": agent["name"], "Key": "favourite-colour", "Value": "teal"},
    )
    assert api(dashboard, "GET", f"/api/memories/{mem_id}").json()["value"] == "teal"
    fill_form(page, {"Value": "green"})
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    assert api(dashboard, "GET", f"/api/memories/{mem_id}").json()["value"] == "green"
    goto(page, dashboard, f"memories?agent_id={agent['id']}")
    expect(page.get_by_role("row").filter(has_text="favourite-colour")).to_contain_text(
        agent["name"]
    )
    shot(page, "memories")
    goto(page, dashboard, f"knowledge-items/new?source_id={source['id']}")
    fill_form(page, {"Name": "Handbook", "Text": "Holidays are booked in the portal."})
    page.get_by_role("button", name="Create knowledge item").click()
    page.wait_for_url(re.compile(r"#/knowledge-items/[0-9a-f-]{36}$"))
    items = api(dashboard, "GET", "/api/knowledge-items", params={"source_id": source["id"]}).json()
    assert [i["name"] for i in items] == ["Handbook"]
    # Deleting a workflow deletes its schedules too (the dialog says so).
    goto(page, dashboard, f"workflows/{wf_id}")
    expect(page.get_by_role("heading", level=1)).to_have_text(wf_name)
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_role("dialog")).to_contain_text("schedules are deleted with it")
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.wait_for_url("**/#/workflows")
    assert api(dashboard, "GET", f"/api/workflows/{wf_id}").status_code == 404


def test_delete_shows_the_dependants_that_block_it(signed_in: Page, dashboard: Dashboard) -> None:
    page = signed_in
    agent = api(dashboard, "POST", "/api/agents", json={"name": unique("busy")}).json()
    wf = api(
        dashboard, "POST", "/api/workflows", json={"title": "nightly", "agent_id": agent["id"]}
    ).json()
    goto(page, dashboard, "agents")
    page.get_by_role("button", name=f"Delete {agent['name']}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("link", name="workflow “nightly”")).to_have_attribute(
        "href", f"#/workflows/{wf['id']}"
    )
    dialog.get_by_role("button", name="Delete").click()
    refused = page.get_by_role("dialog")
    expect(refused).to_contain_text("Cannot delete")
    expect(refused.get_by_role("link", name=f"workflows: {wf['id']}")).to_be_visible()
    shot(page, "delete-refused")
    refused.get_by_role("button", name="Close").click()
    assert api(dashboard, "GET", f"/api/agents/{agent['id']}").status_code == 200
    # A provider lists the agents that use it.
    provider = api(dashboard, "POST", "/api/providers", json={"name": unique("used")}).json()
    api(dashboard, "PATCH", f"/api/agents/{agent['id']}", json={"provider_id": provider["id"]})
    goto(page, dashboard, "providers")
    page.get_by_role("button", name=f"Delete {provider['name']}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("link", name=f"agent “{agent['name']}”")).to_have_attribute(
        "href", f"#/agents/{agent['id']}"
    )
    dialog.get_by_role("button", name="Cancel").click()


def test_empty_states_tell_a_newcomer_what_to_do(page: Page, dashboard: Dashboard) -> None:
    newcomer = dashboard.new_key(unique("newcomer"))
    sign_in(page, dashboard, newcomer)
    goto(page, dashboard, "agents")
    empty = page.locator(".empty")
    expect(empty).to_contain_text("add a provider first")
    empty.get_by_role("link", name="Create the first agent").click()
    rendered(page, "#/agents/new")
    shot(page, "empty-agents")
    goto(page, dashboard, "workflows")
    expect(page.locator(".empty")).to_contain_text("Create an agent first")


def test_forms_cover_every_field_the_api_accepts(signed_in: Page, dashboard: Dashboard) -> None:
    page = signed_in
    doc = httpx.get(dashboard.base + "/openapi.json").json()
    forms: dict[str, dict[str, Any]] = page.evaluate(
        """async () => {
            const { RESOURCES } = await import('/dashboard/assets/js/resources.js');
            return Object.fromEntries(Object.entries(RESOURCES).map(([k, d]) => [k, {path: d.path, fields: d.fields.map(f => f.name)}]));
        }"""
    )

    def body_fields(op: dict[str, Any]) -> set[str]:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        while "$ref" in schema:
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return set(schema["properties"])

    checked = 0
    for route, form in forms.items():
        ops = [doc["paths"][form["path"]]["post"]]
        item = next(
            p
            for p in doc["paths"]
            if p.startswith(form["path"] + "/{") and p.count("/") == form["path"].count("/") + 1
        )
        if "patch" in doc["paths"][item]:
            ops.append(doc["paths"][item]["patch"])
        for op in ops:
            missing = body_fields(op) - set(form["fields"])
            assert not missing, f"{route}: the form lacks {sorted(missing)}"
            checked += 1
    assert checked >= 2 * 12


def test_every_list_screen_renders(signed_in: Page, dashboard: Dashboard) -> None:
    page = signed_in
    for route in (
        "agents",
        "skills",
        "mcps",
        "custom-tools",
        "guardrails",
        "providers",
        "knowledge-sources",
        "workflows",
        "scheduled-agents",
        "memories",
    ):
        goto(page, dashboard, route)
        expect(page.get_by_role("link", name="New ", exact=False).first).to_be_visible()
        shot(page, f"list-{route}")
    # Nothing kept but the key (and the server's public OpenAPI document, see js/api.js).
    kept = page.evaluate("Object.keys(sessionStorage)")
    assert [k for k in kept if not k.startswith("tbd-agents.openapi.")] == ["tbd-agents.api-key"]


def test_memory_search_by_keyword_and_meaning(signed_in: Page, dashboard: Dashboard) -> None:
    page = signed_in
    agent = api(dashboard, "POST", "/api/agents", json={"name": unique("rememberer")}).json()
    for key, value in (("coffee", "Takes coffee black, no sugar."), ("city", "Lives in Lyon.")):
        api(
            dashboard,
            "POST",
            "/api/memories",
            json={"agent_id": agent["id"], "key": key, "value": value},
        )
    goto(page, dashboard, f"memories?agent_id={agent['id']}")
    search = page.get_by_role("search")
    expect(search.get_by_label("Agent")).to_have_value(agent["id"])
    search.get_by_label("Match").select_option("keyword")
    search.get_by_label("Search memories").fill("coffee sugar")
    search.get_by_role("button", name="Search").click()
    hits = page.locator(".hits .hit")
    expect(hits.first).to_contain_text("Takes coffee black")
    expect(hits.first.locator(".badge")).to_contain_text("score")
    expect(hits.filter(has_text="Lyon")).to_have_count(0)
    search.get_by_label("Match").select_option("semantic")
    search.get_by_role("button", name="Search").click()
    expect(page.locator(".hits .hit").first).to_contain_text("coffee")
    shot(page, "memory-search")


def test_child_records_are_edited_and_deleted_from_their_screens(
    signed_in: Page, dashboard: Dashboard
) -> None:
    page = signed_in
    agent = api(dashboard, "POST", "/api/agents", json={"name": unique("owner")}).json()
    source = api(dashboard, "POST", "/api/knowledge-sources", json={"name": unique("notes")}).json()
    item = api(
        dashboard,
        "POST",
        "/api/knowledge-items",
        json={"source_id": source["id"], "name": "Draft", "text_content": "Some notes."},
    ).json()
    memory = api(
        dashboard,
        "POST",
        "/api/memories",
        json={"agent_id": agent["id"], "key": "k1", "value": "v1"},
    ).json()
    workflow = api(
        dashboard, "POST", "/api/workflows", json={"title": unique("wf"), "agent_id": agent["id"]}
    ).json()
    schedule = api(
        dashboard,
        "POST",
        "/api/scheduled-agents",
        json={
            "workflow_id": workflow["id"],
            "name": unique("sched"),
            "prompt": "go",
            "enabled": False,
        },
    ).json()

    # A knowledge item: edited from its page (which leads back to its source), deleted from the source.
    goto(page, dashboard, f"knowledge-items/{item['id']}")
    expect(page.locator(".crumbs a")).to_have_attribute(
        "href", f"#/knowledge-sources/{source['id']}"
    )
    fill_form(page, {"Name": "Final"})
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice-success").last).to_contain_text("Saved")
    assert api(dashboard, "GET", f"/api/knowledge-items/{item['id']}").json()["name"] == "Final"
    page.locator(".crumbs a").click()
    rendered(page, f"#/knowledge-sources/{source['id']}")
    row = page.locator("table.items tbody tr").filter(has_text="Final")
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator(".empty-items")).to_be_visible()
    assert api(dashboard, "GET", f"/api/knowledge-items/{item['id']}").status_code == 404

    # A memory and a schedule, deleted from their lists.
    for route, label in (
        (f"memories?agent_id={agent['id']}", "k1"),
        ("scheduled-agents", schedule["name"]),
    ):
        goto(page, dashboard, route)
        page.get_by_role("button", name=f"Delete {label}").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete").click()
        expect(page.get_by_role("button", name=f"Delete {label}")).to_have_count(0)
    assert api(dashboard, "GET", f"/api/memories/{memory['id']}").status_code == 404
    assert api(dashboard, "GET", f"/api/scheduled-agents/{schedule['id']}").status_code == 404
