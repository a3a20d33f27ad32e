"""OpenTelemetry set-up: spans of the API (FastAPI server spans, SQLAlchemy statement spans)
reach a real OTLP receiver over HTTP and gRPC with the process's service name; nothing is set up
without an endpoint; bad settings stop start-up naming the variable; a collector that does not
answer is logged once."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util._once import Once
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.config import Settings
from tbd_agents.errors import ConfigurationError
from tbd_agents.observability import httpmetrics, tracing_setup
from tbd_agents.observability.tracing_setup import (
    API_SERVICE,
    WORKER_SERVICE,
    configure_tracing,
    otlp_config,
    shutdown_tracing,
)
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import Api, make_settings
from tests.observability.conftest import loopback_client
from tests.support.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, ReceivedSpan

QUERY_SECRET = "q5ecret0value42"
WEBHOOK_SECRET = "abcdEFGH1234ijklMNOP5678"
WEBHOOK_PATH = f"/hooks/T0001/B0001/{WEBHOOK_SECRET}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def clean_tracing() -> Iterator[None]:
    """Each test starts and ends without a process tracer provider (the SDK allows setting one
    only once per process: the test undoes it, as OpenTelemetry's own tests do)."""
    yield
    shutdown_tracing()
    httpmetrics.name_server_spans(False)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    for instrumentor in (HTTPXClientInstrumentor(), CeleryInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    exporter_log = logging.getLogger(tracing_setup._EXPORTER_LOGGER)
    for handler in list(exporter_log.handlers):
        exporter_log.removeHandler(handler)
    exporter_log.propagate = True


def otel_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("OtelBatch")]


def settings(tmp: Path, **overrides: object) -> Settings:
    return make_settings(tmp, **overrides)


async def test_api_and_database_spans_reach_an_http_receiver(api_db: URL, tmp_path: Path) -> None:
    with OtlpHttpReceiver() as receiver:
        store = PostgresStore(create_engine(api_db, pool_size=2, max_overflow=0), url=api_db)
        config = settings(
            tmp_path, otel_exporter_otlp_endpoint=receiver.endpoint, trace_reads_per_second=1e6
        )
        app = create_app(config, store)  # the store's engine predates the set-up
        tracing = tracing_setup.active()
        assert tracing is not None and tracing.config.protocol == "http/protobuf"
        async with app.router.lifespan_context(app):
            key = await Api(app, store, config).key()
            async with loopback_client(app, key) as client:
                assert (
                    await client.get(f"/api/agents?limit=5&token={QUERY_SECRET}")
                ).status_code == 200
                assert (await client.get("/health")).status_code == 200
                assert (await client.get("/health/ready")).status_code in (200, 503)
                assert (await client.get("/metrics")).status_code == 200
            async with httpx.AsyncClient() as outbound:  # an instrumented outbound request
                await outbound.post(f"{receiver.endpoint}{WEBHOOK_PATH}?api_key={QUERY_SECRET}")
        await store.close()

        def server_spans(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [s for s in spans if s.kind == "SERVER"]

        def client_spans(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [s for s in spans if s.kind == "CLIENT" and s.name == "POST"]

        def db_spans(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [
                s for s in spans
                if s.kind == "CLIENT" and "postgresql" in (s.attributes.get("db.system"),
                                                          s.attributes.get("db.system.name"))
            ]  # fmt: skip

        spans = receiver.wait_for(
            lambda s: bool(server_spans(s)) and bool(db_spans(s)) and bool(client_spans(s))
        )
    assert {s.service for s in spans} == {API_SERVICE}
    servers = server_spans(spans)
    assert [s.attributes.get("http.route") for s in servers] == ["/api/agents"]
    assert [s.name for s in servers] == ["GET /api/agents"]  # named after the route template
    # the statements of that request belong to its trace
    assert servers[0].trace_id in {s.trace_id for s in db_spans(spans)}
    # no secret of a URL in any span: the webhook path's token, query values
    text = repr([s.attributes for s in spans])
    assert QUERY_SECRET not in text and WEBHOOK_SECRET not in text
    [outbound] = client_spans(spans)
    assert outbound.attributes["url.full"].endswith("/hooks/T0001/B0001/***?***")
    paths = {str(s.attributes.get("url.path") or s.attributes.get("http.target")) for s in spans}
    assert not any(p.startswith(("/health", "/metrics")) for p in paths)


async def test_reads_are_sampled_writes_and_sampled_callers_always_traced(
    api_db: URL, tmp_path: Path
) -> None:
    """TRACE_READS_PER_SECOND=0: plain reads open no span at all (no server span, no statement
    span); a create is traced, and so is a read whose caller sent a sampled traceparent (the
    caller's trace continues here)."""
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with OtlpHttpReceiver() as receiver:
        store = PostgresStore(create_engine(api_db, pool_size=2, max_overflow=0), url=api_db)
        config = settings(
            tmp_path, otel_exporter_otlp_endpoint=receiver.endpoint, trace_reads_per_second=0
        )
        app = create_app(config, store)
        async with app.router.lifespan_context(app):
            key = await Api(app, store, config).key()
            async with loopback_client(app, key) as client:
                for _ in range(5):
                    assert (await client.get("/api/agents?limit=5")).status_code == 200
                created = await client.post("/api/agents", json={"name": "gate-traced"})
                assert created.status_code == 201, created.text
                followed = await client.get(
                    f"/api/agents/{created.json()['id']}",
                    headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"},
                )
                assert followed.status_code == 200
        await store.close()

        def servers(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [s for s in spans if s.kind == "SERVER"]

        spans = receiver.wait_for(lambda s: len(servers(s)) >= 2)
    names = sorted(s.name for s in servers(spans))
    assert names == ["GET /api/agents/{record_id}", "POST /api/agents"], names
    [read] = [s for s in servers(spans) if s.name.startswith("GET")]
    assert read.trace_id == caller_trace and read.parent_span_id == "00f067aa0ba902b7"
    traced = {s.trace_id for s in servers(spans)}
    on_agents = [
        s for s in spans
        if s.kind == "CLIENT" and " agents" in str(s.attributes.get("db.statement")
                                                   or s.attributes.get("db.query.text") or "")
    ]  # fmt: skip
    assert on_agents  # the create's and the followed read's statements
    # the five sampled-out reads left no statement span (background loops never read agents)
    assert {s.trace_id for s in on_agents} <= traced, [s.trace_id for s in on_agents]


async def test_without_an_endpoint_nothing_is_set_up(tmp_path: Path, api_db: URL) -> None:
    threads = otel_threads()
    store = PostgresStore(create_engine(api_db, pool_size=1, max_overflow=0), url=api_db)
    app = create_app(settings(tmp_path), store)
    assert tracing_setup.active() is None
    assert configure_tracing(settings(tmp_path), API_SERVICE) is None
    assert otel_threads() == threads  # no exporter thread
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert "OpenTelemetryMiddleware" not in {m.cls.__name__ for m in app.user_middleware}
    await store.close()


def test_grpc_receiver_gets_the_worker_spans_and_the_headers(tmp_path: Path) -> None:
    with OtlpGrpcReceiver() as receiver:
        config = settings(
            tmp_path,
            otel_exporter_otlp_endpoint=receiver.endpoint,
            otel_exporter_otlp_protocol="grpc",
            otel_exporter_otlp_headers="x-tenant=team%20a",
            otel_resource_attributes="deployment.environment=test",
        )
        tracing = configure_tracing(config, WORKER_SERVICE)
        assert tracing is not None and tracing.config.protocol == "grpc"
        with trace.get_tracer("tbd_agents").start_as_current_span("probe"):
            pass
        tracing.flush()
        spans = receiver.wait_for(lambda s: any(x.name == "probe" for x in s))
    [span] = [s for s in spans if s.name == "probe"]
    assert span.service == WORKER_SERVICE
    assert span.resource["deployment.environment"] == "test"
    assert receiver.headers[0]["x-tenant"] == "team a"


def test_bad_settings_stop_start_up_naming_the_variable(tmp_path: Path) -> None:
    cases = [
        ({"otel_exporter_otlp_endpoint": "otel-collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"otel_exporter_otlp_traces_endpoint": "ftp://c/x"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ({"otel_exporter_otlp_endpoint": "http://c:99999"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"otel_exporter_otlp_endpoint": "http://c:4318", "otel_exporter_otlp_protocol": "http/json"},
         "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"otel_exporter_otlp_endpoint": "http://c:4318", "otel_traces_sampler": "sometimes"},
         "OTEL_TRACES_SAMPLER"),
        ({"otel_exporter_otlp_endpoint": "http://c:4318",
          "otel_exporter_otlp_headers": "authorization"}, "OTEL_EXPORTER_OTLP_HEADERS"),
        ({"otel_exporter_otlp_endpoint": "http://c:4318", "otel_resource_attributes": "=x"},
         "OTEL_RESOURCE_ATTRIBUTES"),
    ]  # fmt: skip
    for overrides, variable in cases:
        with pytest.raises(ConfigurationError, match=variable):
            configure_tracing(settings(tmp_path, **overrides), API_SERVICE)
    assert tracing_setup.active() is None


def test_protocol_endpoint_and_service_name_defaults(tmp_path: Path) -> None:
    grpc = otlp_config(settings(tmp_path, otel_exporter_otlp_endpoint="http://c:4317"), "svc")
    http = otlp_config(settings(tmp_path, otel_exporter_otlp_endpoint="http://c:4318/"), "svc")
    traces = otlp_config(
        settings(
            tmp_path,
            otel_exporter_otlp_endpoint="http://c:4317",
            otel_exporter_otlp_traces_endpoint="https://t.example/otlp/traces",
            otel_service_name="hub",
        ),
        "svc",
    )
    assert grpc is not None and (grpc.protocol, grpc.endpoint) == ("grpc", "http://c:4317")
    assert grpc.service_name == "svc"
    assert http is not None and (http.protocol, http.endpoint) == (
        "http/protobuf",
        "http://c:4318/v1/traces",
    )
    assert traces is not None
    assert (traces.protocol, traces.endpoint) == ("http/protobuf", "https://t.example/otlp/traces")
    assert traces.service_name == "hub"
    assert otlp_config(settings(tmp_path), "svc") is None
    secret = settings(
        tmp_path, otel_exporter_otlp_endpoint="http://c:4318", otel_exporter_otlp_headers="k=s3cr3t"
    )
    assert "s3cr3t" not in repr(otlp_config(secret, "svc"))


async def test_an_unreachable_collector_never_breaks_requests_and_is_logged_once(
    tmp_path: Path, api_db: URL, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = PostgresStore(create_engine(api_db, pool_size=1, max_overflow=0), url=api_db)
    config = settings(tmp_path, otel_exporter_otlp_endpoint=endpoint, trace_reads_per_second=1e6)
    app = create_app(config, store)
    tracing = tracing_setup.active()
    assert tracing is not None
    with caplog.at_level(logging.INFO):
        async with app.router.lifespan_context(app), loopback_client(app) as client:
            for _ in range(2):
                assert (await client.get("/api/agents")).status_code == 401  # answered
                tracing.flush(timeout_millis=20_000)
    await store.close()
    failures = [r for r in caplog.records if "could not export" in r.getMessage()]
    assert len(failures) == 1
    assert endpoint in failures[0].getMessage() and "Connection refused" in (
        failures[0].getMessage()
    )
    # the exporter's own per-attempt messages stay out of the log
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]


def test_the_read_gate_traces_at_most_its_rate_and_every_write() -> None:
    """The token bucket: a burst of reads gets `rate` traced, one more after 1/rate seconds;
    writes and reads continuing a sampled caller's trace are always traced."""
    from tbd_agents.observability.tracegate import TraceGate

    class Inner:
        def __init__(self, app: object) -> None:
            self.app = app

    gate = TraceGate(object(), traced=Inner, reads_per_second=2)  # type: ignore[arg-type]
    read = {"type": "http", "method": "GET", "headers": []}
    assert [gate._records(read) for _ in range(5)] == [True, True, False, False, False]
    gate.stamp -= 0.5  # half a second later: one more token
    assert [gate._records(read) for _ in range(3)] == [True, False, False]
    assert gate._records({"type": "http", "method": "POST", "headers": []})
    sampled = [(b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    unsampled = [(b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]
    assert gate._records({"type": "http", "method": "GET", "headers": sampled})
    assert not gate._records({"type": "http", "method": "GET", "headers": unsampled})
    never = TraceGate(object(), traced=Inner, reads_per_second=0)  # type: ignore[arg-type]
    assert not any(never._records(read) for _ in range(3))


async def test_a_read_left_out_runs_with_instrumentation_suppressed_and_the_context_restored() -> (
    None
):
    """What the gate's left-out reads run under: both suppression keys the instrumentations
    check (so an HTTPX call made while answering opens no span), whatever the context was, and
    the caller's context is back afterwards."""
    from opentelemetry import context
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    from tbd_agents.observability.tracegate import TraceGate

    seen: list[tuple[bool, object]] = []

    async def app(scope: object, receive: object, send: object) -> None:
        seen.append((is_instrumentation_enabled(), context.get_value("probe")))

    class Inner:
        def __init__(self, app: object) -> None:
            self.app = app

    gate = TraceGate(app, traced=Inner, reads_per_second=0)
    read = {"type": "http", "method": "GET", "headers": []}
    assert is_instrumentation_enabled()
    await gate(read, None, None)  # type: ignore[arg-type]  # an empty context (the usual case)
    token = context.attach(context.set_value("probe", "kept"))
    try:
        await gate(read, None, None)  # type: ignore[arg-type]  # a context with a value in it
        assert context.get_value("probe") == "kept"
    finally:
        context.detach(token)
    assert seen == [(False, None), (False, "kept")]
    assert is_instrumentation_enabled()
