"""OpenTelemetry set-up: one tracer provider per process, exporting over OTLP; off without an
endpoint.

`configure_tracing(settings, service)` reads the standard OTEL_* settings (see
`tracing_config.py`), checks them (a bad endpoint, protocol, header list or sampler stops start-up
with a ConfigurationError naming the variable), and installs a global tracer provider with a
`BatchSpanProcessor` (spans leave in a background thread; a request never waits for the
collector). Without OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT it does
nothing: no provider, no exporter, no thread; `trace.get_tracer()` then hands out no-op tracers.

Instrumentation: API requests (`instrument_app`, ASGI, not /metrics or /health*), HTTPX and Celery
(process-wide, when tracing is configured) and SQLAlchemy per engine (`instrument_engine`, called
by `storage.postgres.engine.create_engine`; engines made before tracing was configured are
instrumented then).

An unreachable collector is logged once ("could not export … further failures are not logged
until an export succeeds") and once when it answers again, never per span; the OTLP exporters'
own per-attempt messages are kept back (the first of an episode is quoted in our warning).
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from tbd_agents.errors import ConfigurationError
from tbd_agents.logs import MASK, redact

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import Sampler
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tbd_agents.config import Settings

log = logging.getLogger(__name__)

API_SERVICE = "tbd-agents-api"
WORKER_SERVICE = "tbd-agents-worker"
SCHEDULER_SERVICE = "tbd-agents-beat"
PROTOCOLS = ("grpc", "http/protobuf")
GRPC_PORT = 4317
#: URLs the FastAPI instrumentation leaves alone (scrapes and probes would drown the traces).
EXCLUDED_URLS = r"/metrics(\?.*)?$,/health(/[a-z]+)?/?(\?.*)?$"
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_EXPORTER_LOGGER = "opentelemetry.exporter.otlp"


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    """What `configure_tracing` builds from the settings (no secret in `repr`: headers hidden)."""

    endpoint: str
    protocol: str
    service_name: str
    resource: dict[str, str]
    sampler: str
    sampler_arg: float | None
    headers: dict[str, str] = field(repr=False, default_factory=dict)


def _pairs(text: str | None, variable: str, *, decode: bool) -> dict[str, str]:
    """`k=v,k2=v2` as a dict; ConfigurationError naming `variable` (values never echoed)."""
    found: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(
                f"{variable}: every entry must be key=value, separated by commas (got an entry "
                f"starting {key.strip()[:20]!r})"
            )
        found[key.strip()] = unquote(value.strip()) if decode else value.strip()
    return found


def _endpoint(settings: Settings) -> tuple[str, str] | None:
    """(endpoint URL, variable it came from), or None when tracing is off."""
    for variable, value in (
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", settings.otel_exporter_otlp_traces_endpoint),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", settings.otel_exporter_otlp_endpoint),
    ):
        if value:
            return value, variable
    return None


def otlp_config(settings: Settings, service: str) -> OtlpConfig | None:
    """The exporter configuration for a process whose default service name is `service`, or
    None when no endpoint is set. ConfigurationError naming the variable on bad input."""
    found = _endpoint(settings)
    if found is None:
        return None
    raw, variable = found
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{variable}={raw} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{variable}={raw} is not an http:// or https:// URL with a host; write e.g. "
            "http://otel-collector:4317 (gRPC) or http://otel-collector:4318 (HTTP)"
        )
    protocol = (settings.otel_exporter_otlp_protocol or "").lower()
    if not protocol:
        protocol = "grpc" if port == GRPC_PORT else "http/protobuf"
    elif protocol not in PROTOCOLS:
        raise ConfigurationError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={settings.otel_exporter_otlp_protocol} is not "
            f"supported: use {' or '.join(PROTOCOLS)}"
        )
    endpoint = raw
    if protocol == "http/protobuf" and variable == "OTEL_EXPORTER_OTLP_ENDPOINT":
        endpoint = raw.rstrip("/") + "/v1/traces"  # the base URL gets the signal's path
    if settings.otel_traces_sampler not in SAMPLERS:
        raise ConfigurationError(
            f"OTEL_TRACES_SAMPLER={settings.otel_traces_sampler} is not known: use one of "
            f"{', '.join(SAMPLERS)}"
        )
    headers = settings.otel_exporter_otlp_headers
    resource = _pairs(settings.otel_resource_attributes, "OTEL_RESOURCE_ATTRIBUTES", decode=True)
    name = settings.otel_service_name or resource.get("service.name") or service
    return OtlpConfig(
        endpoint=endpoint,
        protocol=protocol,
        service_name=name,
        resource={**resource, "service.name": name},
        sampler=settings.otel_traces_sampler,
        sampler_arg=settings.otel_traces_sampler_arg,
        headers=_pairs(
            headers.get_secret_value() if headers else None,
            "OTEL_EXPORTER_OTLP_HEADERS",
            decode=True,
        ),
    )


def _sampler(config: OtlpConfig) -> Sampler:
    from opentelemetry.sdk.trace import sampling

    ratio = 1.0 if config.sampler_arg is None else config.sampler_arg
    name = config.sampler
    root: Sampler
    if name.endswith("always_on"):
        root = sampling.ALWAYS_ON
    elif name.endswith("always_off"):
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def _exporter(config: OtlpConfig) -> SpanExporter:
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(
            endpoint=config.endpoint,
            insecure=config.endpoint.startswith("http://"),
            headers=config.headers or None,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.endpoint, headers=config.headers or None)


class _ExporterMessages(logging.Handler):
    """Keeps the first message of the OTLP exporters since the last `take()` (quoted in our
    once-only warning) instead of letting every retry reach the log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.first = ""

    def emit(self, record: logging.LogRecord) -> None:
        if self.first:
            return
        try:
            self.first = record.getMessage()[:300]
        except Exception:  # a record whose arguments do not format: keep the template
            self.first = str(record.msg)[:300]

    def take(self) -> str:
        first, self.first = self.first, ""
        return first


class QuietExporter:
    """A span exporter that logs a failing collector once, not per batch."""

    def __init__(self, inner: SpanExporter, where: str, messages: _ExporterMessages) -> None:
        self.inner = inner
        self.where = where
        self.messages = messages
        self.failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self.inner.export(spans)
        except Exception as exc:
            self.messages.first = self.messages.first or f"{type(exc).__name__}: {exc}"[:300]
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.FAILURE:
            if not self.failing:
                log.warning(
                    "could not export %d spans to the OTLP collector at %s (%s); further "
                    "failures are not logged until an export succeeds",
                    len(spans),
                    self.where,
                    self.messages.take() or "no answer",
                )
            self.failing = True
        elif self.failing:
            log.info("spans are exported to %s again", self.where)
            self.failing = False
        self.messages.take()  # what the exporter said about this batch is dealt with
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


@dataclass
class Tracing:
    """The process's tracing: its provider and configuration."""

    provider: TracerProvider
    config: OtlpConfig

    def flush(self, timeout_millis: int = 5_000) -> None:
        if not self.provider.force_flush(timeout_millis):
            log.warning("spans could not all be flushed to %s in time", self.config.endpoint)


_active: Tracing | None = None
_lock = threading.Lock()
_engines: weakref.WeakSet[Any] = weakref.WeakSet()
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()


def active() -> Tracing | None:
    """The process's tracing, None when it is off."""
    return _active


def configure_tracing(settings: Settings, service: str) -> Tracing | None:
    """Install the process's tracer provider (once; later calls return the same one), or do
    nothing and return None when no endpoint is set."""
    global _active
    config = otlp_config(settings, service)  # checked even when already configured
    if config is None:
        return None
    with _lock:
        if _active is not None:
            return _active
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        messages = _ExporterMessages()
        exporter_log = logging.getLogger(_EXPORTER_LOGGER)
        exporter_log.addHandler(messages)
        exporter_log.propagate = False
        provider = TracerProvider(
            resource=Resource.create(config.resource), sampler=_sampler(config)
        )
        exporter = QuietExporter(_exporter(config), config.endpoint, messages)
        provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]
        trace.set_tracer_provider(provider)
        _active = Tracing(provider, config)
        _instrument_process(provider)
        pending = list(_engines)
    for sync_engine in pending:
        _instrument_sync_engine(sync_engine, provider)
    log.info(
        "tracing: spans of %s go to %s (%s)", config.service_name, config.endpoint, config.protocol
    )
    return _active


def shutdown_tracing() -> None:
    """Flush and stop the exporter (process exit: the scheduler, a worker)."""
    global _active
    with _lock:
        tracing, _active = _active, None
    if tracing is not None:
        tracing.provider.shutdown()


#: A path segment that looks like a credential (a webhook URL's secret part, a key): 20+
#: letters, digits, `-` or `_` with both letters and digits.
_SECRET_SEGMENT = re.compile(r"^(?=[^/]*[0-9])(?=[^/]*[A-Za-z])[A-Za-z0-9_-]{20,}$")


def safe_url(url: str) -> str:
    """`url` as it may appear in a span: no user-info, no query string, no path segment that
    looks like a credential (outbound URLs carry webhook secrets and keys)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    path = "/".join(MASK if _SECRET_SEGMENT.match(seg) else seg for seg in parts.path.split("/"))
    return f"{parts.scheme}://{host}{port}{path}" + ("?" + MASK if parts.query else "")


def _scrub_client_span(span: Any, request: Any) -> None:
    """HTTPX request hook: the span's URL attributes through `safe_url`."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("url.full", safe_url(str(request.url)))
    attributes = getattr(span, "attributes", None) or {}
    if "http.url" in attributes:
        span.set_attribute("http.url", safe_url(str(request.url)))


async def _scrub_client_span_async(span: Any, request: Any) -> None:
    _scrub_client_span(span, request)


def _scrub_server_span(span: Any, scope: dict[str, Any]) -> None:
    """FastAPI server request hook: the query string (in whichever attribute the semantic
    conventions in force put it) reaches the span redacted."""
    if span is None or not span.is_recording() or not scope.get("query_string"):
        return
    attributes = getattr(span, "attributes", None) or {}
    for name in ("url.query", "http.target", "http.url", "url.full"):
        current = attributes.get(name)
        if isinstance(current, str):
            span.set_attribute(name, redact(current))


def _instrument_process(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    httpx_instrumentor = HTTPXClientInstrumentor()
    if not httpx_instrumentor.is_instrumented_by_opentelemetry:
        httpx_instrumentor.instrument(
            tracer_provider=provider,
            request_hook=_scrub_client_span,
            async_request_hook=_scrub_client_span_async,
        )
    celery_instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    if not celery_instrumentor.is_instrumented_by_opentelemetry:
        celery_instrumentor.instrument(tracer_provider=provider)


def instrument_app(app: FastAPI, reads_per_second: float = 10.0) -> None:
    """Server spans for the app's requests (not /metrics, not /health*), when tracing is on.

    The ASGI middleware of opentelemetry-instrumentation-asgi rather than FastAPIInstrumentor:
    the latter names each span by matching the path against every route again (~150 routes,
    measured as most of the tracing cost of a `GET /api/agents/{id}`). The span starts named by
    the method and `httpmetrics.HttpMetrics`, which learns the route template anyway, renames
    it `<METHOD> <template>` and sets `http.route` when the request ends. `observability/
    tracegate.py` decides which requests are traced (`reads_per_second`: GET/HEAD)."""
    tracing = _active
    if tracing is None:
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from tbd_agents.observability import httpmetrics
    from tbd_agents.observability.tracegate import TraceGate

    httpmetrics.name_server_spans(True)
    app.add_middleware(
        TraceGate,
        traced=OpenTelemetryMiddleware,
        reads_per_second=reads_per_second,
        excluded_urls=EXCLUDED_URLS,
        default_span_details=_span_details,
        server_request_hook=_scrub_server_span,
        tracer_provider=tracing.provider,
        # one server span per request, not also one per ASGI receive/send message: those
        # doubled the spans of a plain GET and carry nothing a trace reader needs
        exclude_spans=["receive", "send"],
    )


def fastapi_options() -> dict[str, Any]:
    """Keyword arguments for `FastAPI(...)` that switch off FastAPI's own OpenTelemetry
    (FastAPI ≥ 0.16x opens a server span, and spans for dependencies, endpoint and
    serialisation, whenever an SDK tracer provider is installed, around every request including
    the CRUD fast path's). `instrument_app` and `TraceGate` decide what is traced instead, the
    same with every FastAPI version; older versions have no such argument."""
    import inspect

    from fastapi import FastAPI

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    off = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    return {"telemetry": off}


def _span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The server span's first name (the method; renamed once the route is known)."""
    return str(scope.get("method") or "HTTP"), {}


def instrument_engine(engine: AsyncEngine) -> None:
    """Spans for the statements of `engine` (now, or when tracing is configured later)."""
    sync_engine = engine.sync_engine
    with _lock:
        tracing = _active
        if tracing is None:
            _engines.add(sync_engine)
            return
    _instrument_sync_engine(sync_engine, tracing.provider)


def _instrument_sync_engine(sync_engine: Any, provider: TracerProvider) -> None:
    from tbd_agents.observability.dbspans import StatementSpans
    from tbd_agents.storage.postgres.direct import TRACED_ATTR

    with _lock:
        if sync_engine in _instrumented:
            return
        _instrumented.add(sync_engine)
    # the direct asyncpg path takes its statements' spans from there
    setattr(
        sync_engine, TRACED_ATTR, StatementSpans(provider.get_tracer("tbd_agents.db"), sync_engine)
    )
