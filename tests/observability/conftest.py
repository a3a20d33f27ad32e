"""Fixtures of the observability tests: spans kept in memory, Prometheus deltas.

OpenTelemetry lets a process set its global tracer provider once. The session fixture installs
an SDK provider with an in-memory exporter when none is set yet, or adds the exporter to the SDK
provider another test module installed first; each test clears what was kept before it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.engine.protocol_server import ProtocolServer

# The runtime tests' per-backend fixture (`rt`: PostgreSQL, then emulated MongoDB) and its database.
from tests.runtime.conftest import module_db, rt  # noqa: F401


@pytest.fixture(scope="session")
def _session_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "the global tracer provider is not the SDK's"
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(_session_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test (`spans.get_finished_spans()`)."""
    _session_exporter.clear()
    yield _session_exporter
    _session_exporter.clear()


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the default registry, keyed by (sample name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    text = generate_latest(REGISTRY).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Deltas:
    """Sample values now minus when the object was made: `d("name", label=value)`."""

    def __init__(self) -> None:
        self.before = samples()
        self.after: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def take(self) -> Deltas:
        self.after = samples()
        return self

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)


def by_name(found: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in found if s.name == name]


def one(found: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    hits = by_name(found, name)
    assert len(hits) == 1, (name, [s.name for s in found])
    return hits[0]


@pytest.fixture(scope="session")
def protocol_server() -> Iterator[ProtocolServer]:
    """The engine tests' local model server (real OpenAI / Anthropic wire protocols)."""
    server = ProtocolServer().start()
    yield server
    server.stop()
