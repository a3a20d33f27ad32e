"""The usage API against known data, on both backends: totals, groups with labels, time series
with gaps, the call list and its cursor, CSV exports, what a non-admin sees, bad parameters."""

from __future__ import annotations

import csv
import gc
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tbd_agents.domain.models import Agent
from tests.usage.conftest import UsageApi, call

D1 = datetime(2026, 10, 5, 9, 30, tzinfo=UTC)  # a Monday
D2 = datetime(2026, 10, 7, 23, 59, tzinfo=UTC)
D3 = datetime(2026, 10, 20, 0, 1, tzinfo=UTC)
RANGE = {"start": "2026-10-01", "end": "2026-10-31"}


async def seed(uapi: UsageApi) -> dict[str, Any]:
    """Two users, three agents (one deleted), two models, calls on three days."""
    tag = uuid.uuid4().hex[:6]
    ann, ben = f"ann-{tag}", f"ben-{tag}"
    async with uapi.store.unit_of_work() as repos:
        a1 = await repos.agents.create(Agent(name=f"writer-{tag}", created_by=ann))
        a2 = await repos.agents.create(Agent(name=f"coder-{tag}", created_by=ben))
    gone = f"gone-{tag}"
    calls = [
        call(at=D1, cost="0.010000000001", tokens=(1000, 100), user_id=ann, agent_id=a1.id),
        call(at=D1, cost="0.002", tokens=(200, 20), user_id=ann, agent_id=a1.id, model="o3"),
        call(at=D2, cost="0.005", tokens=(500, 50), user_id=ben, agent_id=a2.id),
        call(at=D3, cost="0.0000001", tokens=(1, 1), user_id=ben, agent_id=gone),
        call(at=D3, cost="0.3", tokens=(7, 3), user_id=ann, agent_id=a1.id, session_id="s1",
             purpose="summary"),
    ]  # fmt: skip
    for c in calls:
        assert await uapi.usage.record(c)
    return {"ann": ann, "ben": ben, "a1": a1, "a2": a2, "gone": gone, "calls": calls}


def users(data: dict[str, Any]) -> dict[str, str]:
    return {"user_id": f"{data['ann']},{data['ben']}", **RANGE}


async def test_summary_totals_equal_the_sum_of_the_calls_and_groups_have_labels(
    uapi: UsageApi,
) -> None:
    data = await seed(uapi)
    async with await uapi.client(admin=True) as admin:
        got = (await admin.get("/api/usage/summary", params=users(data))).json()
        by_agent = (
            await admin.get("/api/usage/summary", params=users(data) | {"group_by": "agent"})
        ).json()
    calls = data["calls"]
    assert got["totals"] == {
        "calls": 5,
        "input_tokens": sum(c.input_tokens for c in calls),
        "output_tokens": sum(c.output_tokens for c in calls),
        "total_tokens": sum(c.input_tokens + c.output_tokens for c in calls),
        "cost_usd": float(sum((c.cost_usd for c in calls), Decimal(0))),
    }
    assert got["groups"] == [] and got["group_by"] is None
    assert (got["start"], got["end"]) == ("2026-10-01", "2026-10-31")
    groups = by_agent["groups"]
    assert [g["label"] for g in groups] == [
        data["a1"].name,
        data["a2"].name,
        "(deleted)",
    ]  # by cost, descending
    assert groups[0]["key"] == data["a1"].id and groups[0]["calls"] == 3
    assert groups[0]["cost_usd"] == float(
        Decimal("0.010000000001") + Decimal("0.002") + Decimal("0.3")
    )
    assert sum(g["calls"] for g in groups) == by_agent["totals"]["calls"] == 5


async def test_filters_and_group_by_model(uapi: UsageApi) -> None:
    data = await seed(uapi)
    async with await uapi.client(admin=True) as admin:
        got = (
            await admin.get(
                "/api/usage/summary",
                params=users(data) | {"group_by": "model", "agent_id": data["a1"].id},
            )
        ).json()
        one_day = (
            await admin.get(
                "/api/usage/summary",
                params=users(data) | {"start": "2026-10-05", "end": "2026-10-05"},
            )
        ).json()
    assert {g["key"]: g["calls"] for g in got["groups"]} == {"gpt-4o": 2, "o3": 1}
    assert {g["label"] for g in got["groups"]} == {"gpt-4o", "o3"}
    assert one_day["totals"]["calls"] == 2


async def test_timeseries_has_every_bucket_with_gaps_and_per_group_series(uapi: UsageApi) -> None:
    data = await seed(uapi)
    async with await uapi.client(admin=True) as admin:
        daily = (await admin.get("/api/usage/timeseries", params=users(data))).json()
        weekly = (
            await admin.get(
                "/api/usage/timeseries",
                params=users(data) | {"interval": "week", "group_by": "user"},
            )
        ).json()
        monthly = (
            await admin.get("/api/usage/timeseries", params=users(data) | {"interval": "month"})
        ).json()
    assert len(daily["buckets"]) == 31 and daily["buckets"][0] == "2026-10-01"
    [series] = daily["series"]
    assert series["key"] == "all" and len(series["points"]) == 31
    by_date = {p["date"]: p["calls"] for p in series["points"]}
    assert by_date["2026-10-05"] == 2 and by_date["2026-10-07"] == 1
    assert by_date["2026-10-20"] == 2 and by_date["2026-10-06"] == 0
    assert daily["totals"]["calls"] == 5
    assert weekly["buckets"][0] == "2026-09-28"  # the Monday of the week holding the start
    per_user = {s["key"]: {p["date"]: p["calls"] for p in s["points"]} for s in weekly["series"]}
    assert per_user[data["ann"]]["2026-10-05"] == 2 and per_user[data["ben"]]["2026-10-05"] == 1
    assert per_user[data["ann"]]["2026-10-19"] == 1
    assert monthly["buckets"] == ["2026-10-01"]
    assert monthly["series"][0]["points"][0]["calls"] == 5


async def test_calls_are_listed_newest_first_with_a_cursor(uapi: UsageApi) -> None:
    data = await seed(uapi)
    seen: list[dict[str, Any]] = []
    async with await uapi.client(admin=True) as admin:
        cursor = None
        while True:
            params = users(data) | {"limit": "2"} | ({"cursor": cursor} if cursor else {})
            page = (await admin.get("/api/usage/calls", params=params)).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert len(seen) == 5
    assert [s["at"] for s in seen] == sorted((s["at"] for s in seen), reverse=True)
    summary = next(s for s in seen if s["purpose"] == "summary")
    assert summary["session_id"] == "s1" and summary["cost_usd"] == 0.3
    assert set(summary) == {
        "id", "at", "user_id", "agent_id", "workflow_id", "schedule_id", "task_id", "session_id",
        "provider_id", "provider_type", "model", "purpose", "input_tokens", "output_tokens",
        "cost_usd",
    }  # fmt: skip


async def test_csv_exports_calls_and_daily_rows(uapi: UsageApi) -> None:
    data = await seed(uapi)
    async with await uapi.client(admin=True) as admin:
        calls = await admin.get("/api/usage/export.csv", params=users(data) | {"level": "calls"})
        daily = await admin.get("/api/usage/export.csv", params=users(data))
        grouped = await admin.get(
            "/api/usage/export.csv", params=users(data) | {"group_by": "agent"}
        )
    assert calls.headers["content-type"].startswith("text/csv")
    assert (
        calls.headers["content-disposition"]
        == 'attachment; filename="usage-2026-10-01-2026-10-31.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(calls.text)))
    assert len(rows) == 5
    assert sum(Decimal(r["cost_usd"]) for r in rows) == sum(
        (c.cost_usd for c in data["calls"]), Decimal(0)
    )
    day_rows = list(csv.DictReader(io.StringIO(daily.text)))
    assert sum(int(r["calls"]) for r in day_rows) == 5
    assert {r["day"] for r in day_rows} == {"2026-10-05", "2026-10-07", "2026-10-20"}
    labelled = list(csv.DictReader(io.StringIO(grouped.text)))
    assert "(deleted)" in {r["label"] for r in labelled}


async def test_a_user_sees_only_their_own_usage(uapi: UsageApi) -> None:
    data = await seed(uapi)
    async with await uapi.client(data["ben"]) as ben:
        mine = (await ben.get("/api/usage/summary", params=RANGE)).json()
        other = (
            await ben.get("/api/usage/summary", params=RANGE | {"user_id": data["ann"]})
        ).json()
        listed = (await ben.get("/api/usage/calls", params=RANGE)).json()
        exported = await ben.get("/api/usage/export.csv", params=RANGE | {"level": "calls"})
    assert mine["totals"]["calls"] == 2
    assert other["totals"]["calls"] == 2  # their own, whatever user_id asked for
    assert {c["user_id"] for c in listed["items"]} == {data["ben"]}
    assert {r["user_id"] for r in csv.DictReader(io.StringIO(exported.text))} == {data["ben"]}


async def test_bad_parameters_are_422_naming_the_parameter(uapi: UsageApi) -> None:
    async with await uapi.client() as user:
        for path, params, name in [
            ("/api/usage/summary", {"start": "2026-13-01"}, "start"),
            ("/api/usage/summary", {"end": "yesterday"}, "end"),
            ("/api/usage/summary", {"start": "2026-10-02", "end": "2026-10-01"}, "start"),
            ("/api/usage/summary", {"group_by": "color"}, "group_by"),
            ("/api/usage/summary", {"agent_id": ","}, "agent_id"),
            ("/api/usage/timeseries", {"interval": "hour"}, "interval"),
            ("/api/usage/calls", {"cursor": "nonsense"}, "cursor"),
            ("/api/usage/export.csv", {"level": "weekly"}, "level"),
        ]:
            got = await user.get(path, params=params)
            assert got.status_code == 422, (path, params, got.text)
            assert name in got.json()["detail"], got.json()
        limit = await user.get("/api/usage/calls", params={"limit": "0"})
        assert limit.status_code == 422 and "limit" in limit.text


async def test_routes_need_authentication(uapi: UsageApi) -> None:
    async with await uapi.client() as user:
        user.headers.pop("Authorization")
        for path in ("/api/usage/summary", "/api/usage/timeseries", "/api/usage/calls",
                     "/api/usage/export.csv", "/api/budgets"):  # fmt: skip
            assert (await user.get(path)).status_code == 401


async def test_ranges_over_whole_and_partial_months_count_each_call_once(uapi: UsageApi) -> None:
    """A range's whole months are read from the monthly rows and its partial ones from the
    days: every call inside counts once, calls outside do not."""
    user = f"mia-{uuid.uuid4().hex[:6]}"
    days = ["2026-08-31", "2026-09-01", "2026-09-20", "2026-10-05", "2026-11-05", "2026-11-11"]
    for i, day in enumerate(days):
        at = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)
        await uapi.usage.record(call(at=at, cost=str(10**i), user_id=user))
    async with await uapi.client(admin=True) as admin:

        async def cost(start: str, end: str, **more: str) -> Any:
            params = {"user_id": user, "start": start, "end": end} | more
            return (await admin.get("/api/usage/summary", params=params)).json()["totals"]

        assert (await cost("2026-09-01", "2026-11-10"))["cost_usd"] == 11110.0
        assert (await cost("2026-09-02", "2026-11-05"))["cost_usd"] == 11100.0
        everything = await cost("2026-08-31", "2026-11-11")
        assert everything["calls"] == 6 and isinstance(everything["calls"], int)
        assert isinstance(everything["input_tokens"], int)
        assert (await cost("2026-09-02", "2026-09-30"))["calls"] == 1
        months = (
            await admin.get(
                "/api/usage/timeseries",
                params={"user_id": user, "start": "2026-08-15", "end": "2026-11-10",
                        "interval": "month"},
            )
        ).json()  # fmt: skip
    points = {p["date"]: p["calls"] for p in months["series"][0]["points"]}
    assert points == {"2026-08-01": 1, "2026-09-01": 2, "2026-10-01": 1, "2026-11-01": 1}


async def test_deleting_an_agent_keeps_its_usage_labelled_deleted(uapi: UsageApi) -> None:
    user = f"ned-{uuid.uuid4().hex[:6]}"
    async with uapi.store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name=f"short-lived-{user}", created_by=user))
    await uapi.usage.record(call(at=D1, cost="1.5", user_id=user, agent_id=agent.id))
    async with uapi.store.unit_of_work() as repos:
        assert await repos.agents.delete(agent.id)
    async with await uapi.client(admin=True) as admin:
        got = (
            await admin.get("/api/usage/summary",
                            params=RANGE | {"user_id": user, "group_by": "agent"})
        ).json()  # fmt: skip
    assert got["groups"] == [
        {"key": agent.id, "label": "(deleted)", "calls": 1, "input_tokens": 100,
         "output_tokens": 20, "total_tokens": 120, "cost_usd": 1.5}
    ]  # fmt: skip


def unique_days(n: int) -> list[datetime]:
    """`n` consecutive days (noon UTC) of 2030 to 2037 no other test writes to: the unfiltered
    queries below see every call of their range in the module's database."""
    first = datetime(2030, 1, 1, 12, tzinfo=UTC) + timedelta(days=uuid.uuid4().int % 2900)
    return [first + timedelta(days=i) for i in range(n)]


async def seed_models(uapi: UsageApi) -> dict[str, Any]:
    """Five models over three days: model i costs (i + 1) cents a call on 1 + i % 3 days (by
    cost: m4 $0.10, m2 $0.09, then m1 and m3 tied at $0.04); m0 has the most calls."""
    tag = uuid.uuid4().hex[:6]
    user = f"u-{tag}"
    models = [f"m{i}-{tag}" for i in range(5)]
    days = unique_days(3)
    calls = []
    for i, m in enumerate(models):
        for d in days[: 1 + i % 3]:
            calls.append(call(at=d, cost=f"0.0{i + 1}", tokens=(10 * (i + 1), i), model=m,
                              user_id=user, agent_id=f"a{i % 2}-{tag}"))  # fmt: skip
    calls += [call(at=days[2], cost="0", tokens=(1, 1), model=models[0], user_id=user)
              for _ in range(6)]  # fmt: skip
    for c in calls:
        assert await uapi.usage.record(c)
    start, end = days[0].date().isoformat(), days[-1].date().isoformat()
    return {"user": user, "models": models, "calls": calls, "range": {"start": start, "end": end}}


def check_buckets_sum_to_totals(got: dict[str, Any], calls: list[Any]) -> None:
    fields = ("calls", "input_tokens", "output_tokens", "total_tokens", "cost_usd")
    for i, bucket in enumerate(got["buckets"]):
        for f in fields:
            summed = sum(s["points"][i][f] for s in got["series"])
            assert summed == pytest.approx(sum(
                (c.input_tokens if f == "input_tokens" else c.output_tokens if f == "output_tokens"
                 else c.input_tokens + c.output_tokens if f == "total_tokens"
                 else float(c.cost_usd) if f == "cost_usd" else 1)
                for c in calls if c.at.date().isoformat() == bucket
            ), abs=1e-12), (bucket, f)  # fmt: skip
    assert got["totals"]["calls"] == len(calls)
    exact = sum((c.cost_usd for c in calls), Decimal(0))
    assert got["totals"]["cost_usd"] == float(exact)


async def test_timeseries_keeps_the_top_n_groups_and_folds_the_rest_into_other(
    uapi: UsageApi,
) -> None:
    data = await seed_models(uapi)
    models, params = data["models"], data["range"] | {"group_by": "model", "limit": "2"}
    async with await uapi.client(admin=True) as admin:
        # No filter (PostgreSQL: the rollup), the group's own filter (the rollup, some keys),
        # a filter across dimensions (usage_daily): the same answer.
        answers = [
            (await admin.get("/api/usage/timeseries", params=p)).json()
            for p in (
                params,
                params | {"model": ",".join(models)},
                params | {"user_id": data["user"]},
            )
        ]
        by_calls = (
            await admin.get("/api/usage/timeseries", params=params | {"metric": "calls"})
        ).json()
        everything = (
            await admin.get("/api/usage/timeseries", params=params | {"limit": "100"})
        ).json()
        by_month = (
            await admin.get("/api/usage/timeseries", params=params | {"interval": "month"})
        ).json()
    got = answers[0]
    assert [s["key"] for s in got["series"]] == [models[4], models[2], "_other"]
    assert [s["label"] for s in got["series"]] == [models[4], models[2], "Other"]
    assert got["series"][-1]["folded"] == 3 and (got["limit"], got["metric"]) == (2, "cost_usd")
    check_buckets_sum_to_totals(got, data["calls"])
    other = [p["cost_usd"] for p in got["series"][-1]["points"]]
    folded = [c for c in data["calls"] if c.model not in (models[4], models[2])]
    assert other == pytest.approx(
        [float(sum((c.cost_usd for c in folded if c.at.date().isoformat() == b), Decimal(0)))
         for b in got["buckets"]], abs=1e-12
    )  # fmt: skip
    assert other[0] > 0
    assert answers[1] == got and answers[2] == got
    # By calls, m0 (7 with the six free ones) leads, then m2 (3 days).
    assert [s["key"] for s in by_calls["series"]] == [models[0], models[2], "_other"]
    check_buckets_sum_to_totals(by_calls, data["calls"])
    ranked = [models[4], models[2], models[1], models[3], models[0]]  # m1/m3 tie: smaller key
    assert [s["key"] for s in everything["series"]] == ranked
    assert "folded" not in everything["series"][-1]
    assert by_month["totals"] == got["totals"]
    # The three days may span two months.
    assert sum(p["calls"] for s in by_month["series"] for p in s["points"]) == len(data["calls"])


async def test_timeseries_limit_and_metric_are_validated(uapi: UsageApi) -> None:
    async with await uapi.client() as user:
        for params, name in [({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"),
                             ({"limit": "ten"}, "limit"), ({"metric": "joy"}, "metric")]:  # fmt: skip
            got = await user.get("/api/usage/timeseries", params=params | {"group_by": "agent"})
            assert got.status_code == 422, (params, got.text)
            assert name in got.text, got.text
        ok = await user.get("/api/usage/timeseries", params={"limit": "100"})
        assert ok.status_code == 200 and ok.json()["limit"] == 100


async def test_the_running_api_keeps_its_startup_heap_out_of_full_collections(
    uapi: UsageApi,
) -> None:
    # The lifespan froze the heap (api/app.py): full collections would otherwise scan it inside
    # large usage answers (benchmarks/RESULTS.md).
    assert gc.get_freeze_count() > 0
