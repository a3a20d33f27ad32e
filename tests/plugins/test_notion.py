"""The notion plugin against a local fake of the Notion API v1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tbd_agents.plugins.notion import NotionPlugin
from tests.plugins.conftest import run
from tests.plugins.fakes import NOTION_TOKEN, NotionFake


@pytest.fixture
def notion() -> Iterator[NotionFake]:
    with NotionFake().running() as fake:
        yield fake


def env(fake: NotionFake, token: str = NOTION_TOKEN) -> dict[str, str]:
    return {"NOTION_TOKEN": token, "NOTION_API_URL": f"{fake.url}/v1"}


async def test_every_operation(notion: NotionFake) -> None:
    e = env(notion)
    q = await run(
        NotionPlugin(),
        {"operation": "query_database", "database_id": "db1",
         "filter": {"property": "Name", "title": {"is_not_empty": True}}, "page_size": 10},
        e,
    )  # fmt: skip
    assert not q.is_error, q.content
    assert [p["id"] for p in q.data["results"]] == ["p1"]
    sent = notion.seen[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/databases/db1/query")
    assert sent.body["page_size"] == 10 and sent.body["filter"]["property"] == "Name"
    assert sent.headers["notion-version"] == "2022-06-28"
    assert sent.headers["authorization"] == f"Bearer {NOTION_TOKEN}"

    page = await run(NotionPlugin(), {"operation": "get_page", "page_id": "p1"}, e)
    assert page.data["properties"]["Name"]["title"][0]["plain_text"] == "Roadmap"

    kids = await run(NotionPlugin(), {"operation": "get_block_children", "block_id": "p1"}, e)
    assert kids.data["results"][0]["type"] == "paragraph"
    assert notion.seen[-1].query == {"page_size": "50"}

    found = await run(NotionPlugin(), {"operation": "search", "query": "roadmap"}, e)
    assert [r["id"] for r in found.data["results"]] == ["p1"]

    made = await run(
        NotionPlugin(),
        {"operation": "create_page", "database_id": "db1",
         "properties": {"Name": {"title": [{"text": {"content": "Launch"}}]}},
         "children": [{"object": "block", "type": "paragraph", "paragraph": {"rich_text": []}}]},
        e,
    )  # fmt: skip
    new_id = made.data["id"]
    assert notion.pages[new_id]["parent"] == {"database_id": "db1"}
    assert len(notion.blocks[new_id]) == 1

    upd = await run(
        NotionPlugin(),
        {"operation": "update_page", "page_id": new_id,
         "properties": {"Status": {"select": {"name": "Done"}}}},
        e,
    )  # fmt: skip
    assert upd.data["properties"]["Status"]["select"]["name"] == "Done"
    assert notion.seen[-1].method == "PATCH"

    block = {"object": "block", "type": "to_do", "to_do": {"rich_text": [], "checked": False}}
    app = await run(
        NotionPlugin(), {"operation": "append_blocks", "block_id": "p1", "children": [block]}, e
    )
    assert not app.is_error
    assert notion.blocks["p1"][-1]["type"] == "to_do"
    assert (notion.seen[-1].method, notion.seen[-1].path) == ("PATCH", "/v1/blocks/p1/children")


async def test_notion_errors_name_the_problem(notion: NotionFake) -> None:
    gone = await run(NotionPlugin(), {"operation": "get_page", "page_id": "nope"}, env(notion))
    assert gone.is_error
    assert "object_not_found" in gone.content and "share the page" in gone.content

    bad = await run(NotionPlugin(), {"operation": "get_page", "page_id": "p1"}, env(notion, "x"))
    assert bad.is_error and "unauthorized" in bad.content and "NOTION_TOKEN" in bad.content

    orphan = await run(NotionPlugin(), {"operation": "create_page", "properties": {}}, env(notion))
    assert orphan.is_error and "database_id or page_id" in orphan.content
    assert all(s.method != "POST" or s.path != "/v1/pages" for s in notion.seen)
