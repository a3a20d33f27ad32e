"""`GET /metrics` on the API: formats, the access rule (token, allowed networks), and the HTTP
request metrics of a known sequence of requests."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.observability import httpmetrics, metrics
from tbd_agents.observability.gauges import QueueLengthPoller
from tbd_agents.observability.httpmetrics import HttpMetrics
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import Api, make_settings
from tests.observability.conftest import loopback_client, samples, scrape, value

TOKEN = "metrics-token-0123456789"


def remote_client(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.20.30.40", 40000)),
        base_url="http://api",
        headers=headers or {},
    )


@pytest.fixture(scope="module")
def store(api_db: URL) -> PostgresStore:
    return PostgresStore(create_engine(api_db, pool_size=2, max_overflow=0), url=api_db)


def app_with(store: PostgresStore, tmp: Path, **overrides: object) -> FastAPI:
    """An app for requests to /metrics only (which needs no lifespan)."""
    return create_app(make_settings(tmp, **overrides), store)


async def test_text_format_parses_and_names_the_existing_series(obs_api: Api) -> None:
    async with loopback_client(obs_api.app) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["cache-control"] == "no-store"
    names = {name for name, _ in samples(response.text)}
    # unlabelled series of the existing system are always there
    assert {"agent_tasks_active", "sse_connections_active", "celery_queue_length"} <= names


async def test_openmetrics_when_the_scrape_asks_for_it(obs_api: Api) -> None:
    accept = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    async with loopback_client(obs_api.app) as client:
        response = await client.get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    families = {f.name for f in openmetrics_families(response.text)}
    assert "agent_tasks_active" in families


async def test_a_remote_client_without_a_token_is_refused_naming_metrics_token(
    store: PostgresStore, tmp_path: Path
) -> None:
    app = app_with(store, tmp_path)
    async with remote_client(app) as client:
        response = await client.get("/metrics")
    assert response.status_code == 403
    assert "METRICS_TOKEN" in response.text and "10.20.30.40" in response.text


async def test_allowed_networks_admit_a_remote_client(store: PostgresStore, tmp_path: Path) -> None:
    app = app_with(store, tmp_path, metrics_allowed_networks="10.0.0.0/8")
    async with remote_client(app) as client:
        assert (await client.get("/metrics")).status_code == 200
    async with loopback_client(app) as client:  # loopback is no longer in the list
        assert (await client.get("/metrics")).status_code == 403


async def test_with_a_token_every_scrape_needs_it(store: PostgresStore, tmp_path: Path) -> None:
    app = app_with(store, tmp_path, metrics_token=TOKEN)
    async with remote_client(app) as client:
        missing = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    async with loopback_client(app) as client:
        loopback_without = await client.get("/metrics")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert loopback_without.status_code == 401  # the token is required from every address
    assert right.status_code == 200 and "agent_tasks_active" in right.text


async def test_an_api_key_is_not_a_metrics_credential(obs_api: Api, tmp_path: Path) -> None:
    key = await obs_api.key()
    app = create_app(make_settings(tmp_path, metrics_token=TOKEN), obs_api.store)
    async with remote_client(app, {"Authorization": f"Bearer {key}"}) as client:
        assert (await client.get("/metrics")).status_code == 401


async def test_disabled_metrics_have_no_endpoint(store: PostgresStore, tmp_path: Path) -> None:
    app = app_with(store, tmp_path, metrics_enabled=False)
    async with loopback_client(app) as client:
        assert (await client.get("/metrics")).status_code == 404
    # and requests pay nothing for them (without tracing, nothing else needs the middleware)
    assert HttpMetrics not in [m.cls for m in app.user_middleware]
    assert HttpMetrics in [m.cls for m in app_with(store, tmp_path).user_middleware]


async def test_metrics_is_not_in_the_openapi_document(obs_api: Api) -> None:
    async with loopback_client(obs_api.app) as client:
        document = (await client.get("/openapi.json")).json()
    assert "/metrics" not in document["paths"]
    assert "/health" in document["paths"]


def _http(found: dict, handler: str, method: str, status: str) -> float:  # type: ignore[type-arg]
    return value(found, "http_requests_total", handler=handler, method=method, status=status)


async def test_http_metrics_of_a_known_sequence_of_requests(obs_api: Api) -> None:
    @obs_api.app.get("/test-obs/boom/{n}", include_in_schema=False)
    async def boom(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    key = await obs_api.key()
    async with loopback_client(obs_api.app, key, raise_app_exceptions=False) as client:
        before = await scrape(client)
        for _ in range(3):
            assert (await client.get("/health")).status_code == 200
        created = await client.post("/api/agents", json={"name": "obs agent"})
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        assert (await client.get(f"/api/agents/{agent_id}")).status_code == 200  # fast path
        assert (await client.get(f"/api/agents/{agent_id}?x=1")).status_code == 200  # routed
        assert (await client.get("/api/agents/no-such-agent")).status_code == 404
        assert (await client.get("/no/such/page/anywhere")).status_code == 404
        assert (await client.get("/test-obs/boom/7")).status_code == 500
        after = await scrape(client)

    def delta(handler: str, method: str, status: str) -> float:
        return _http(after, handler, method, status) - _http(before, handler, method, status)

    assert delta("/health", "GET", "2xx") == 3
    assert delta("/api/agents", "POST", "2xx") == 1
    assert delta("/api/agents/{record_id}", "GET", "2xx") == 2
    assert delta("/api/agents/{record_id}", "GET", "4xx") == 1
    assert delta("none", "GET", "4xx") == 1
    assert delta("/test-obs/boom/{n}", "GET", "5xx") == 1
    assert delta("/metrics", "GET", "2xx") == 0  # scrapes are not counted
    assert not any(
        name == "http_requests_total"
        and dict(labels).get("handler", "").startswith("/api/agents/")
        and agent_id in dict(labels)["handler"]
        for name, labels in after
    )  # no id in a label

    def size_delta(name: str, handler: str) -> float:
        return value(after, name, handler=handler) - value(before, name, handler=handler)

    assert size_delta("http_response_size_bytes_sum", "/health") == 3 * len(b'{"status":"ok"}')
    assert size_delta("http_response_size_bytes_count", "/health") == 3
    assert size_delta("http_request_size_bytes_sum", "/api/agents") == len(b'{"name":"obs agent"}')
    duration = "http_request_duration_seconds_count"
    assert (
        value(after, duration, handler="/health", method="GET")
        - value(before, duration, handler="/health", method="GET")
        == 3
    )
    highr = "http_request_duration_highr_seconds_count"
    assert value(after, highr) - value(before, highr) == 9  # every request above, scrapes not


async def test_an_event_stream_counts_as_open_until_it_ends_and_is_counted_at_its_end() -> None:
    opened, release = asyncio.Event(), asyncio.Event()

    async def stream(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send(
            {
                "type": "http.response.start",
                "status": 200,  # type: ignore[operator]
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})  # type: ignore[operator]
        opened.set()
        await release.wait()
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})  # type: ignore[operator]

    sent: list[dict] = []  # type: ignore[type-arg]

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/api/stream-test", "headers": []}
    requests = metrics.HTTP_REQUESTS.labels("none", "GET", "2xx")
    open_before, count_before = metrics.SSE_CONNECTIONS._value.get(), requests._value.get()
    call = asyncio.create_task(HttpMetrics(stream)(scope, receive, send))  # type: ignore[arg-type]
    await opened.wait()
    assert metrics.SSE_CONNECTIONS._value.get() == open_before + 1
    httpmetrics.flush()
    assert requests._value.get() == count_before  # not counted before its end
    release.set()
    await call
    assert metrics.SSE_CONNECTIONS._value.get() == open_before
    httpmetrics.flush()  # requests are tallied, then added to the values in one go
    assert requests._value.get() == count_before + 1
    assert len(sent) == 3


async def test_pool_gauges_follow_checkouts(obs_api: Api) -> None:
    def pool(state: str, found: dict) -> float:  # type: ignore[type-arg]
        return value(found, "tbd_db_pool_connections", pool="app", state=state)

    async with loopback_client(obs_api.app) as client:
        assert (await client.get("/health/ready")).status_code in (200, 503)  # uses the pool
        idle = await scrape(client)
        async with obs_api.store.engine.connect():
            held = await scrape(client)
        released = await scrape(client)
        runtime = await scrape(client)
    assert pool("in_use", held) == pool("in_use", idle) + 1
    assert pool("in_use", released) == pool("in_use", idle)
    assert pool("idle", idle) >= 1
    assert ("tbd_db_pool_connections", frozenset({("pool", "runtime"), ("state", "idle")})) in (
        runtime
    )


async def test_queue_length_reads_redis_and_survives_its_absence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import redis.asyncio as aioredis

    from tests.runtime.conftest import REDIS_TEST_URL, redis_available

    if not redis_available():
        pytest.fail("Redis is not reachable at 127.0.0.1:6379: start redis-server")
    queue = f"obs-queue-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(REDIS_TEST_URL)
    try:
        await client.rpush(queue, "a", "b", "c")
        await client.rpush(f"{queue}\x06\x163", "priority")  # kombu's priority sub-queue
        poller = QueueLengthPoller(REDIS_TEST_URL, queue, every=10)
        assert await poller.read_once(client) == 4
    finally:
        await client.delete(queue, f"{queue}\x06\x163")
        await client.aclose()

    down_url = "redis://127.0.0.1:1/0"  # nothing listens there
    down = aioredis.Redis.from_url(down_url, socket_connect_timeout=1)
    poller = QueueLengthPoller(down_url, queue, every=10)
    with caplog.at_level(logging.INFO, logger="tbd_agents.observability.gauges"):
        assert await poller.read_once(down) is None
        assert await poller.read_once(down) is None
    await down.aclose()
    warnings = [r for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(warnings) == 1  # once, not per poll


async def test_the_api_starts_and_answers_with_redis_down(api_db: URL, tmp_path: Path) -> None:
    store = PostgresStore(create_engine(api_db, pool_size=1, max_overflow=0), url=api_db)
    settings = make_settings(
        tmp_path, redis_url="redis://127.0.0.1:1/0", celery_queue_poll_seconds=0.05
    )
    app = create_app(settings, store)
    async with app.router.lifespan_context(app), loopback_client(app) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
    await store.close()


def test_multiprocess_mode_after_import_keeps_every_value(tmp_path: Path) -> None:
    """A process whose metrics were created before the switch (PROMETHEUS_MULTIPROC_DIR already
    in the environment at import, as in a container, or not yet): the directory is cleared and
    every metric, unlabelled ones included, writes to it afterwards."""
    directory = tmp_path / "prom"
    directory.mkdir()
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tbd_agents.observability import metrics\n"
        "from tbd_agents.observability.exposition import enable_multiprocess, scrape\n"
        "metrics.TASKS_ACTIVE.inc(5)\n"
        "metrics.TOOL_CALLS.labels('before').inc()\n"
        "enable_multiprocess(Path(sys.argv[1]))\n"
        "metrics.TASKS_ACTIVE.inc()\n"
        "metrics.TOOL_CALLS.labels('after').inc(2)\n"
        "metrics.HTTP_DURATION_HIGHR.observe(0.2)\n"
        "sys.stdout.write(scrape(None)[0].decode())\n"
    )
    root = Path(__file__).resolve().parents[2]
    for env_at_import in (True, False):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "src")}
        if env_at_import:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        result = subprocess.run(
            [sys.executable, "-c", script, str(directory)],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        found = samples(result.stdout)
        assert value(found, "agent_tasks_active") == 1, env_at_import
        assert value(found, "tool_calls_total", tool_name="after") == 2
        assert value(found, "tool_calls_total", tool_name="before") == 0
        assert value(found, "http_request_duration_highr_seconds_count") == 1


def test_tallied_requests_add_up_to_what_observe_would_record() -> None:
    """The middleware tallies requests and adds them in one go: every bucket, sum and count is
    what one `observe` per request gives, values on a bucket's bound included (`le` is ≤)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reference = CollectorRegistry()
    handler = f"/tally-{uuid.uuid4().hex[:8]}"
    twins = {
        "http_requests": Counter("http_requests", "", ["handler", "method", "status"],
                                 registry=reference),
        "http_request_size_bytes": Histogram("http_request_size_bytes", "", ["handler"],
                                             buckets=httpmetrics._SIZE_BOUNDS, registry=reference),
        "http_response_size_bytes": Histogram("http_response_size_bytes", "", ["handler"],
                                              buckets=httpmetrics._RESPONSE_BOUNDS,
                                              registry=reference),
        "http_request_duration_seconds": Histogram("http_request_duration_seconds", "",
                                                   ["handler", "method"],
                                                   buckets=httpmetrics._DURATION_BOUNDS,
                                                   registry=reference),
    }  # fmt: skip
    requests = [  # (status, request bytes, response bytes, seconds): on and around the bounds
        (200, 0, 0, 0.0), (200, 100, 1_000, 0.1), (201, 101, 999, 0.5000001),
        (404, 10_000_000, 10_000_001, 1.0), (503, 7, 123_456, 42.0), (200, 1_000, 100, 0.099),
    ]  # fmt: skip
    scope = {"method": "POST", metrics_route_key(): handler}
    for status, request_size, response_size, seconds in requests:
        httpmetrics._record(scope, status, [request_size, response_size], seconds)
        twins["http_requests"].labels(handler, "POST", httpmetrics.status_class(status)).inc()
        twins["http_request_size_bytes"].labels(handler).observe(request_size)
        twins["http_response_size_bytes"].labels(handler).observe(response_size)
        twins["http_request_duration_seconds"].labels(handler, "POST").observe(seconds)
    httpmetrics.flush()
    expected = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in reference.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }
    assert len(expected) == 29  # 3 status classes, two size histograms of 10, duration 6
    for (name, labels), number in expected.items():
        found = REGISTRY.get_sample_value(name, dict(labels))
        assert found == pytest.approx(number), (name, labels)


def metrics_route_key() -> str:
    return httpmetrics.ROUTE_KEY


def test_pool_events_are_followed_only_in_multiprocess_mode(tmp_path: Path) -> None:
    """In one process a scrape reads the pools itself, so no listener costs every checkout;
    after the switch to multiprocess mode (prefork children) the pools watched before and after
    set their gauges from their events."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sqlalchemy.ext.asyncio import create_async_engine\n"
        "from tbd_agents.observability import gauges\n"
        "from tbd_agents.observability.exposition import enable_multiprocess\n"
        "url = 'postgresql+asyncpg://nobody@127.0.0.1:1/none'\n"
        "before = create_async_engine(url)\n"
        "gauges.watch_pool(before, 'app')\n"
        "print(len(before.sync_engine.pool.dispatch.checkout))\n"
        "enable_multiprocess(Path(sys.argv[1]))\n"
        "after = create_async_engine(url)\n"
        "gauges.watch_pool(after, 'app')\n"
        "print(len(before.sync_engine.pool.dispatch.checkout),"
        " len(after.sync_engine.pool.dispatch.checkout))\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "src")}
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.split("\n")[:2] == ["0", "1 1"]
