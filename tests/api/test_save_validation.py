"""Records the engine or scheduler could not use are refused when they are saved, not later."""

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
    assert listed.json() == []


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


@pytest.mark.parametrize("pattern", ["(unclosed", "(a+)+$"])
async def test_guardrail_with_a_bad_or_runaway_pattern_is_refused(
    alice: httpx.AsyncClient, pattern: str
) -> None:
    response = await alice.post(
        "/api/guardrails", json={"name": "g", "guardrail_type": "input", "patterns": [pattern]}
    )
    assert response.status_code == 422, response.text
    assert pattern in response.json()["error"]["message"]


async def test_guardrail_update_is_checked_too(alice: httpx.AsyncClient) -> None:
    created = await alice.post(
        "/api/guardrails", json={"name": "g", "guardrail_type": "input", "patterns": [r"\d{16}"]}
    )
    assert created.status_code == 201, created.text
    bad = await alice.patch(f"/api/guardrails/{created.json()['id']}", json={"patterns": ["[z-a]"]})
    assert bad.status_code == 422, bad.text
    kept = await alice.get(f"/api/guardrails/{created.json()['id']}")
    assert kept.json()["patterns"] == [r"\d{16}"]


async def test_guardrail_schema_with_a_remote_ref_is_refused(alice: httpx.AsyncClient) -> None:
    body = {
        "name": "g",
        "guardrail_type": "request",
        "prompt_config": {"json_schema": {"properties": {"a": {"$ref": "http://127.0.0.1:9/s"}}}},
    }
    response = await alice.post("/api/guardrails", json=body)
    assert response.status_code == 422, response.text
    assert "http://127.0.0.1:9/s" in response.json()["error"]["message"]
    local = {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
    body["prompt_config"] = {"json_schema": local}
    assert (await alice.post("/api/guardrails", json=body)).status_code == 201


async def test_schedule_whose_runs_overflow_the_calendar_is_refused(
    alice: httpx.AsyncClient,
) -> None:
    workflow = await create(alice, "workflows")
    response = await alice.post(
        "/api/scheduled-agents",
        json={
            "workflow_id": workflow["id"],
            "interval_value": 2_000_000_000,
            "interval_unit": "days",
        },
    )
    assert response.status_code == 422, response.text
    assert "after the year 9999" in response.json()["error"]["message"]


async def test_mcp_url_transports_need_an_http_url(alice: httpx.AsyncClient) -> None:
    """sse, http (the existing name of streamable HTTP) and streamable_http connect to a URL."""
    for transport in ("sse", "http", "streamable_http"):
        bad = await alice.post(
            "/api/mcps",
            json={
                "name": f"m-{transport}",
                "transport_type": transport,
                "connection_config": {"url": "ftp://files.example.com/mcp"},
            },
        )
        assert bad.status_code == 422, bad.text
        assert "connection_config.url" in bad.json()["error"]["message"]
    good = await alice.post(
        "/api/mcps",
        json={
            "name": "m-ok",
            "transport_type": "http",
            "connection_config": {"url": "https://mcp.example.com/mcp", "headers": {}},
        },
    )
    assert good.status_code == 201, good.text
    assert good.json()["status"] == "registered"
