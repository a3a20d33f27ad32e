"""Export then import a bundle (the existing TBD Agents format) from the dashboard, with a
dry-run preview of what would be created and which items cannot be; no secret value in the
bundle."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import goto

SECRET = "sk-bundle-" + uuid.uuid4().hex


def call(dashboard: Dashboard, key: str, method: str, path: str, **kwargs: object) -> dict:
    import httpx

    response = httpx.request(
        method,
        dashboard.base + path,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        **kwargs,
    )
    response.raise_for_status()
    return response.json()


def test_export_then_import_with_a_preview(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    alice = dashboard.new_key(f"alice-{uuid.uuid4().hex[:6]}")
    call(dashboard, alice, "POST", "/api/tokens", json={"name": "vendor-key", "value": SECRET})
    provider = call(
        dashboard, alice, "POST", "/api/providers",
        json={"name": "vendor", "provider_type": "openai", "api_key_token_name": "vendor-key"},
    )  # fmt: skip
    skill = call(
        dashboard, alice, "POST", "/api/skills", json={"name": "tone", "instructions": "Be kind."}
    )
    agent = call(
        dashboard, alice, "POST", "/api/agents",
        json={"name": "concierge", "provider_id": provider["id"], "skill_ids": [skill["id"]]},
    )  # fmt: skip
    call(
        dashboard, alice, "POST", "/api/workflows", json={"title": "daily", "agent_id": agent["id"]}
    )

    # Alice exports.
    sign_in(page, dashboard, alice)
    goto(page, dashboard, "transfer")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download bundle").click()
    bundle_path = tmp_path / "bundle.json"
    info.value.save_as(bundle_path)
    text = bundle_path.read_text(encoding="utf-8")
    assert SECRET not in text
    bundle = json.loads(text)
    assert bundle["tokens_required"] == ["vendor-key"]
    assert (bundle["version"], bundle["resource_type"]) == ("1.0", "bundle")
    assert [a["name"] for a in bundle["agents"]] == ["concierge"]
    expect(page.locator("#main")).to_contain_text("Exported 4 records")
    expect(page.locator("#main")).to_contain_text("vendor-key")
    page.get_by_role("button", name="Sign out").click()

    # Bob previews, then imports it.
    bob = dashboard.new_key(f"bob-{uuid.uuid4().hex[:6]}")
    sign_in(page, dashboard, bob)
    goto(page, dashboard, "transfer")
    page.get_by_label("Bundle file").set_input_files(bundle_path)
    import_button = page.get_by_role("button", name="Import", exact=True)
    expect(import_button).to_be_disabled()
    # Provider names are unique across users: by default (always create) that item would not be
    # imported, and the preview says which mode to use.
    page.get_by_role("button", name="Preview import").click()
    report = page.locator(".report")
    expect(report.locator(".import-errors")).to_contain_text("mode=rename")
    expect(report).to_contain_text("Would not be imported")
    page.get_by_label("When a name already exists").select_option("rename")
    page.get_by_role("button", name="Preview import").click()
    report = page.locator(".report")
    expect(report).to_have_attribute("data-dry-run", "true")
    expect(report).to_contain_text("Preview — nothing was changed.")
    expect(report).to_contain_text("agents: 1")
    expect(report).to_contain_text("Create these tokens")
    assert call(dashboard, bob, "GET", "/api/agents") == []
    import_button.click()
    expect(report).to_have_attribute("data-dry-run", "false")
    expect(report).to_contain_text("Imported.")
    agents = call(dashboard, bob, "GET", "/api/agents")
    assert [a["name"] for a in agents] == ["concierge"]
    assert agents[0]["id"] != agent["id"]
    assert len(agents[0]["skill_ids"]) == 1 and agents[0]["skill_ids"] != [skill["id"]]

    assert [p["name"] for p in call(dashboard, bob, "GET", "/api/providers")] != ["vendor"]

    page.get_by_label("When a name already exists").select_option("skip")
    expect(import_button).to_be_disabled()  # a new mode needs a new preview
    page.get_by_role("button", name="Sign out").click()

    # Alice previews her own bundle: every record conflicts, and the preview says what happens.
    sign_in(page, dashboard, alice)
    goto(page, dashboard, "transfer")
    page.get_by_label("Bundle file").set_input_files(bundle_path)
    page.get_by_label("When a name already exists").select_option("skip")
    page.get_by_role("button", name="Preview import").click()
    conflicts = page.locator("table.conflicts tbody tr")
    expect(conflicts.filter(has_text="concierge")).to_contain_text("skip")
    expect(page.locator(".report")).to_contain_text("Would skip")
    shot(page, "transfer")


def test_files_that_are_not_bundles_say_what_is_wrong(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    sign_in(page, dashboard)
    goto(page, dashboard, "transfer")
    error = page.locator("#main .field-error")
    cases = [
        ("notes.json", "this is not json", "This file is not JSON ("),
        ("empty.json", "  \n", "This file is empty."),
        ("list.json", "[1, 2]", "This file holds a list, not a bundle"),
        ("record.json", json.dumps({"name": "x", "model": "y"}), "it has none of the lists"),
        (
            "other.json",
            json.dumps({"format": "something-else", "resources": {}}),
            "The server refused this bundle: Unknown bundle format",
        ),
    ]
    for name, content, message in cases:
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        page.get_by_label("Bundle file").set_input_files(path)
        page.get_by_role("button", name="Preview import").click()
        expect(error).to_contain_text(message)
        expect(page.locator(".report")).to_have_count(0)  # never "nothing new"
        expect(page.get_by_role("button", name="Import", exact=True)).to_be_disabled()


def test_export_of_one_agent_with_what_it_uses(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    carol = dashboard.new_key(f"carol-{uuid.uuid4().hex[:6]}")
    suffix = uuid.uuid4().hex[:6]
    skill = call(dashboard, carol, "POST", "/api/skills", json={"name": f"style-{suffix}"})
    other_skill = call(dashboard, carol, "POST", "/api/skills", json={"name": f"other-{suffix}"})
    guard = call(
        dashboard, carol, "POST", "/api/guardrails", json={"name": f"g-{suffix}", "patterns": ["x"]}
    )
    agent = call(
        dashboard, carol, "POST", "/api/agents",
        json={"name": f"writer-{suffix}", "skill_ids": [skill["id"]], "guardrail_ids": [guard["id"]]},
    )  # fmt: skip
    call(dashboard, carol, "POST", "/api/agents", json={"name": f"bystander-{suffix}"})
    sign_in(page, dashboard, carol)

    # from the agent's page
    goto(page, dashboard, f"agents/{agent['id']}")
    panel = page.get_by_role("region", name="Export")
    with page.expect_download() as info:
        panel.get_by_role("button", name="Export this agent").click()
    assert info.value.suggested_filename.startswith(f"tbd-agents-agent-writer-{suffix}-")
    path = tmp_path / "agent.json"
    info.value.save_as(path)
    bundle = json.loads(path.read_text(encoding="utf-8"))
    assert [a["id"] for a in bundle["agents"]] == [agent["id"]]
    assert [s["id"] for s in bundle["skills"]] == [skill["id"]] != [other_skill["id"]]
    assert [g["id"] for g in bundle["guardrails"]] == [guard["id"]]
    expect(panel.get_by_role("status")).to_contain_text(
        "Exported 3 records (1 skills, 1 agents, 1 guardrails)"
    )

    # from Import / export, the agent chosen
    goto(page, dashboard, f"transfer?agent={agent['id']}")
    expect(page.get_by_label("What to export")).to_have_value(agent["id"])
    with page.expect_download() as info:
        page.get_by_role("button", name="Download bundle").click()
    info.value.save_as(path)
    again = json.loads(path.read_text(encoding="utf-8"))
    assert [a["name"] for a in again["agents"]] == [f"writer-{suffix}"]

    # importing it back with rename: copies under free names, reported
    page.get_by_label("Bundle file").set_input_files(path)
    page.get_by_label("When a name already exists").select_option("rename")
    page.get_by_role("button", name="Preview import").click()
    page.get_by_role("button", name="Import", exact=True).click()
    # the preview's report names the same rename: wait for the import's own report
    report = page.locator('.report[data-dry-run="false"]')
    expect(report).to_contain_text(f"agents: “writer-{suffix}” → “writer-{suffix} (2)”")
    names = sorted(a["name"] for a in call(dashboard, carol, "GET", "/api/agents"))
    assert names == [f"bystander-{suffix}", f"writer-{suffix}", f"writer-{suffix} (2)"]
