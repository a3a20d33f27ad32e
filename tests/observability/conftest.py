"""Fixtures of the observability tests: spans kept in memory, Prometheus deltas, the API on a
migrated database (tests/api's) and helpers that read a Prometheus exposition.

OpenTelemetry lets a process set its global tracer provider once. The session fixture installs
an SDK provider with an in-memory exporter when none is set yet, or adds the exporter to the SDK
provider another test module installed first; each test clears what was kept before it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import Api, api_db, make_settings
from tests.engine.protocol_server import ProtocolServer

# The runtime tests' per-backend fixture (`rt`: PostgreSQL, then emulated MongoDB) and its database.
from tests.runtime.conftest import module_db, rt  # noqa: F401

#: The SDK providers the session exporter is attached to (by id: a provider may be replaced).
_attached: set[int] = set()


def _attach(exporter: InMemorySpanExporter) -> None:
    """The exporter on the current global SDK provider, installing one when there is none: the
    plumbing tests (test_plumbing_tracing.py) reset the global provider after each of theirs,
    so whichever test ran before in this process, spans of the next one are kept."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "the global tracer provider is not the SDK's"
    if id(provider) not in _attached:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _attached.add(id(provider))


@pytest.fixture(scope="session")
def _session_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def spans(_session_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test (`spans.get_finished_spans()`)."""
    _attach(_session_exporter)
    _session_exporter.clear()
    yield _session_exporter
    _session_exporter.clear()


def _registry_samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
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
        self.before = _registry_samples()
        self.after: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def take(self) -> Deltas:
        self.after = _registry_samples()
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


__all__ = ["api_db"]  # a fixture, used by the tests of this package

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when the series does not exist (yet)."""
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return samples(response.text)


@pytest.fixture(scope="module")
async def obs_api(api_db: URL, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """The API with its lifespan running (default metrics settings: no token, loopback only)."""
    store = PostgresStore(create_engine(api_db, pool_size=4, max_overflow=4), url=api_db)
    settings = make_settings(tmp_path_factory.mktemp("obs"))
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, settings)
    await store.close()


def loopback_client(app: object, key: str | None = None, **transport: object) -> httpx.AsyncClient:
    """A client whose address is 127.0.0.1 (ASGITransport's default client is 127.0.0.1 too,
    said explicitly here)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5000), **transport),  # type: ignore[arg-type]
        base_url="http://api",
        headers=headers,
    )
