"""Statement spans (`observability/dbspans.py`): inside traced work each statement sent through
SQLAlchemy or the direct asyncpg path gets a CLIENT span under the current span, a failing one
is marked with its error type; outside traced work nothing is recorded, and instrumenting an
engine adds no SQLAlchemy event listener (which would slow every untraced statement)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from tbd_agents.domain.models import Agent
from tbd_agents.observability.dbspans import StatementSpans
from tbd_agents.storage.postgres.direct import TRACED_ATTR
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import api_db  # noqa: F401


@pytest.fixture
def exporter_and_tracer() -> tuple[InMemorySpanExporter, trace.Tracer]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # a private provider: the global one is left alone
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider.get_tracer("test")


async def test_statements_get_spans_only_inside_traced_work(
    api_db: URL,  # noqa: F811
    exporter_and_tracer: tuple[InMemorySpanExporter, trace.Tracer],
) -> None:
    exporter, tracer = exporter_and_tracer
    engine = create_engine(api_db, pool_size=2, max_overflow=0)
    spans = StatementSpans(tracer, engine.sync_engine)
    setattr(engine.sync_engine, TRACED_ATTR, spans)
    store = PostgresStore(engine, url=api_db)
    try:
        assert not engine.sync_engine._has_events  # no listener: the plain path stays plain

        agent = Agent(name="spans-probe", system_prompt="x")
        async with store.unit_of_work() as repos:
            await repos.agents.create(agent)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert exporter.get_finished_spans() == ()  # untraced: nothing recorded

        with tracer.start_as_current_span("work") as parent:
            async with store.unit_of_work(readonly=True) as repos:  # the direct asyncpg path
                assert (await repos.agents.get(agent.id)).name == "spans-probe"
            async with engine.connect() as conn:  # SQLAlchemy's path
                await conn.execute(text("SELECT count(*) FROM agents WHERE name = :n"), {"n": "x"})
                with pytest.raises(DBAPIError):
                    await conn.execute(text("SELECT * FROM no_such_table_here"))
        finished = [s for s in exporter.get_finished_spans() if s.name != "work"]
        by_text = {str(s.attributes["db.query.text"]): s for s in finished}
        trace_id = parent.get_span_context().trace_id
        assert all(s.context.trace_id == trace_id for s in finished)
        assert all(
            s.parent is not None and s.parent.span_id == parent.get_span_context().span_id
            for s in finished
        )
        by_id = [t for t in by_text if "FROM agents" in t and "WHERE agents.id = $1" in t]
        assert by_id, f"no span for the direct path's statement: {list(by_text)}"
        counted = by_text["SELECT count(*) FROM agents WHERE name = $1"]
        assert counted.attributes["db.operation.name"] == "SELECT"
        assert counted.attributes["db.system.name"] == "postgresql"
        assert counted.status.status_code is not StatusCode.ERROR
        failed = by_text["SELECT * FROM no_such_table_here"]
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.attributes["error.type"] == "ProgrammingError"  # as the DB-API raised it
        assert failed.attributes["db.response.status_code"] == "42P01"  # undefined_table
        # parameters are never on a span
        assert all("spans-probe" not in str(s.attributes) for s in finished)
    finally:
        await store.close()
