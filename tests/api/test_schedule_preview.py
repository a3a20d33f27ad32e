"""POST /api/scheduled-agents/preview: the next fire times of an unsaved schedule."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from tests.api.conftest import Api

URL = "/api/scheduled-agents/preview"


def _times(resp: httpx.Response) -> list[datetime]:
    assert resp.status_code == 200, resp.text
    return [datetime.fromisoformat(t) for t in resp.json()["occurrences"]]


async def test_interval_from_start_at(alice: httpx.AsyncClient) -> None:
    start = datetime(2020, 1, 1, 0, 7, tzinfo=UTC)
    before = datetime.now(UTC)
    times = _times(
        await alice.post(
            URL,
            json={"interval_value": 15, "interval_unit": "minutes", "start_at": start.isoformat()},
        )
    )
    assert len(times) == 5
    assert all(t.utcoffset() == timedelta(0) for t in times)
    assert before - timedelta(minutes=15) < times[0] <= before + timedelta(minutes=15)
    assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(minutes=15)] * 4
    assert all((t - start) % timedelta(minutes=15) == timedelta(0) for t in times)


async def test_interval_without_start_counts_from_now(alice: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    times = _times(await alice.post(URL, json={"interval_value": 2, "interval_unit": "hours"}))
    assert len(times) == 5
    assert before + timedelta(hours=2) - timedelta(seconds=5) <= times[0]
    assert times[0] <= datetime.now(UTC) + timedelta(hours=2)
    assert times[4] - times[0] == timedelta(hours=8)


async def test_cron_in_a_time_zone_lands_on_the_local_hour(alice: httpx.AsyncClient) -> None:
    zone = ZoneInfo("America/New_York")
    resp = await alice.post(
        URL, json={"cron_expression": "30 9 * * *", "timezone": "America/New_York", "count": 7}
    )
    times = _times(resp)
    assert len(times) == 7
    for t in times:
        assert t.tzinfo is not None and t.utcoffset() == timedelta(0)
        local = t.astimezone(zone)
        assert (local.hour, local.minute) == (9, 30)
        # 09:30 in New York is 13:30 or 14:30 UTC depending on daylight saving time
        assert (t.hour, t.minute) in {(13, 30), (14, 30)}
    assert times[0] > datetime.now(UTC) - timedelta(seconds=5)
    assert times[0] - datetime.now(UTC) <= timedelta(days=1)


async def test_end_at_cuts_the_list_short(alice: httpx.AsyncClient) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    end = start + timedelta(hours=2, minutes=30)
    times = _times(
        await alice.post(
            URL,
            json={
                "interval_value": 1,
                "interval_unit": "hours",
                "start_at": start.isoformat(),
                "end_at": end.isoformat(),
                "count": 10,
            },
        )
    )
    assert times == [start, start + timedelta(hours=1), start + timedelta(hours=2)]


async def test_invalid_input_is_a_422_naming_the_field(alice: httpx.AsyncClient) -> None:
    cases = {
        "cron_expression": {"cron_expression": "every tuesday"},
        "timezone": {"cron_expression": "0 * * * *", "timezone": "Mars/Olympus"},
        "end_at": {"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"},
        "interval_value": {"interval_value": 0},
    }
    for field, body in cases.items():
        resp = await alice.post(URL, json=body)
        assert resp.status_code == 422, (field, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "invalid_data"
        assert error["details"]["field"] == field
        assert field in error["message"]
    never = await alice.post(URL, json={"cron_expression": "0 0 30 2 *"})
    assert never.status_code == 422
    assert never.json()["error"]["details"]["field"] == "cron_expression"
    huge = await alice.post(URL, json={"interval_value": 10**15, "interval_unit": "days"})
    assert huge.status_code == 422
    assert huge.json()["error"]["details"]["field"] == "interval_value"
    late = await alice.post(
        URL, json={"cron_expression": "0 0 * * *", "start_at": "9999-12-31T00:00:00Z"}
    )
    assert late.status_code == 422
    assert late.json()["error"]["details"]["field"] == "start_at"
    too_many = await alice.post(URL, json={"count": 21})
    assert too_many.status_code == 422
    assert "count" in too_many.json()["error"]["message"]


async def test_needs_an_api_key(api: Api) -> None:
    async with api.client() as anonymous:
        resp = await anonymous.post(URL, json={"interval_value": 1})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"]
