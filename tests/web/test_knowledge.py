"""Knowledge from the dashboard: create a source, upload a Markdown file with progress, see the
document, preview its text, and find it with the hybrid search (scores shown)."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import api, create, rendered

HANDBOOK = """# Travel handbook

## Expenses

Train tickets above 200 euros need the approval of a manager before booking.
Keep every receipt: the finance team reimburses within ten working days.

## Equipment

Laptops are replaced every four years. Broken screens go to the help desk on floor two.
"""


def test_upload_a_markdown_file_and_find_it(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    sign_in(page, dashboard)
    name = f"handbooks-{uuid.uuid4().hex[:6]}"
    source_id = create(page, dashboard, "knowledge-sources", "knowledge source", {"Name": name})
    expect(page.locator(".empty-items")).to_contain_text("No documents in this source yet")
    path = tmp_path / "travel-handbook.md"
    path.write_text(HANDBOOK, encoding="utf-8")
    page.get_by_label("File", exact=True).set_input_files(path)
    page.get_by_label("Title (optional)").fill("Travel handbook")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".upload-form [role=status]")).to_contain_text("Uploaded and indexed")
    expect(page.locator(".upload-form progress")).to_have_attribute("value", "100")
    row = page.locator("table.items tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("travel-handbook.md")
    expect(row).to_contain_text("indexed")
    items = api(dashboard, "GET", "/api/knowledge-items", params={"source_id": source_id}).json()
    assert [(i["name"], i["file_name"]) for i in items] == [
        ("Travel handbook", "travel-handbook.md")
    ]
    # Preview of the extracted text.
    row.get_by_role("button", name="Travel handbook").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("pre")).to_contain_text("Train tickets above 200 euros")
    dialog.get_by_role("button", name="Close").click()
    # Hybrid search finds the right passage, with its scores.
    page.get_by_label("Search this source").fill("who approves expensive train tickets")
    page.get_by_role("button", name="Search", exact=True).click()
    hits = page.locator(".hits .hit")
    expect(hits.first).to_contain_text("approval of a manager")
    expect(hits.first.locator(".hit-head")).to_contain_text("Travel handbook")
    expect(hits.first.locator(".badge")).to_contain_text("score")
    shot(page, "knowledge")
    # Deleting the source says its documents go with it, then takes them along.
    page.locator(".record-form").get_by_role("button", name="Delete", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Deleted along with it")
    expect(dialog).to_contain_text("document “Travel handbook”")
    dialog.get_by_role("button", name="Delete").click()
    rendered(page, "#/knowledge-sources")
    assert api(dashboard, "GET", f"/api/knowledge-sources/{source_id}").status_code == 404
    assert api(dashboard, "GET", f"/api/knowledge-items/{items[0]['id']}").status_code == 404


def test_upload_needs_a_file(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    create(
        page,
        dashboard,
        "knowledge-sources",
        "knowledge source",
        {"Name": f"empty-{uuid.uuid4().hex[:6]}"},
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".upload-form .field-error")).to_have_text("Choose a file first.")
    expect(page.get_by_label("File", exact=True)).to_be_focused()


def test_an_unsupported_file_is_refused_with_the_reason(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    sign_in(page, dashboard)
    source_id = create(
        page,
        dashboard,
        "knowledge-sources",
        "knowledge source",
        {"Name": f"bin-{uuid.uuid4().hex[:6]}"},
    )
    path = tmp_path / "blob.exe"
    path.write_bytes(b"MZ\x00\x01binary")
    page.get_by_label("File", exact=True).set_input_files(path)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".upload-form .field-error")).to_be_visible()
    assert (
        api(dashboard, "GET", "/api/knowledge-items", params={"source_id": source_id}).json() == []
    )
