"""A schedule the scheduler could not compute is refused when it is saved, not skipped later."""

from __future__ import annotations

import httpx
import pytest

from tests.api.factory import create


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"cron_expression": "61 * * * *"}, "cron"),
        ({"cron_expression": "*/5 * * * *", "timezone": "Mars/Olympus_Mons"}, "Mars/Olympus_Mons"),
        (
            {"start_at": "2026-05-01T10:00:00Z", "end_at": "2026-05-01T09:00:00Z"},
            "end_at must be after start_at",
        ),
    ],
)
async def test_invalid_schedule_is_refused_on_create(
    alice: httpx.AsyncClient, body: dict[str, str], word: str
) -> None:
    workflow = await create(alice, "workflows")
    response = await alice.post(
        "/api/scheduled-agents", json={"workflow_id": workflow["id"], **body}
    )
    assert response.status_code == 422, response.text
    assert word in response.json()["error"]["message"]
    listed = await alice.get("/api/scheduled-agents", params={"workflow_id": workflow["id"]})
    assert listed.json()["items"] == []


async def test_update_is_checked_against_the_stored_fields(alice: httpx.AsyncClient) -> None:
    schedule = await create(
        alice, "scheduled-agents", start_at="2026-05-01T10:00:00Z", cron_expression="0 * * * *"
    )
    bad = await alice.patch(
        f"/api/scheduled-agents/{schedule['id']}", json={"end_at": "2026-04-30T00:00:00Z"}
    )
    assert bad.status_code == 422, bad.text
    good = await alice.patch(
        f"/api/scheduled-agents/{schedule['id']}", json={"end_at": "2026-06-01T00:00:00Z"}
    )
    assert good.status_code == 200, good.text
    assert good.json()["end_at"].startswith("2026-06-01")
