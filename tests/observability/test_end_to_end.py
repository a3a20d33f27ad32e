"""Issue #17 end to end, across real processes: a `tbd-agents serve` API and a `tbd-agents worker`
(threads pool) share one PostgreSQL and a Redis queue, both export spans over OTLP/HTTP to a
receiver written in the test (protobuf decoded with opentelemetry-proto), and the worker serves
its metrics port.

A prompt sent to the API runs in the worker: the real engine calls the local protocol server
(real OpenAI SDK) and uses a built-in tool and a real MCP server. Asserted:

- one trace from the API's request span (service tbd-agents-api) to the worker's run span
  (tbd-agents-worker), with the model calls and tool calls as the run span's children, GenAI
  attributes on them, and no message content (capture is off by default);
- the worker's metrics port shows the run's series with their exact values, and the API's
  `/metrics` shows the request.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.config import Settings
from tbd_agents.domain.enums import TaskStatus
from tbd_agents.runtime import leases
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.mcp_fixtures import http_server
from tests.engine.protocol_server import ProtocolServer
from tests.faults.serving import Serving, base_dir
from tests.observability.test_plumbing_worker import free_port, start_worker, workers
from tests.observability.test_signals_runs import FERNET, MODEL, script, seed
from tests.runtime.conftest import celery_settings, db, module_db, redis_available, settings_env
from tests.support.otlp_receiver import OtlpHttpReceiver, ReceivedSpan

__all__ = ["db", "module_db", "workers"]  # fixtures


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    with http_server("streamable-http") as url:
        yield url


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as r:
        yield r


def engine_settings(url: URL) -> Settings:
    """The runtime tests' Redis queue settings with the real engine as executor."""
    return celery_settings(url).model_copy(
        update={
            "run_executor": "tbd_agents.engine.inprocess:build_executor",
            "outbound_allowed_hosts": "127.0.0.1",
            "embedding_provider": "hashing",
        }
    )


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id]


def ancestors(spans: list[ReceivedSpan], span: ReceivedSpan) -> list[ReceivedSpan]:
    by_id = {s.span_id: s for s in spans}
    out: list[ReceivedSpan] = []
    while span.parent_span_id and span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        out.append(span)
    return out


async def test_a_prompt_through_api_and_worker_is_one_trace_and_counted_on_the_worker(
    db: AsyncEngine,
    module_db: URL,
    protocol_server: ProtocolServer,
    mcp_url: str,
    receiver: OtlpHttpReceiver,
    workers: list,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    if not redis_available():
        pytest.fail("Redis is not reachable at 127.0.0.1:6379: start redis-server")
    config = engine_settings(module_db)
    env = settings_env(config)
    env["TOKEN_ENCRYPTION_KEY"] = FERNET  # the key `seed` encrypted the provider key with
    store = PostgresStore(db, owns_engine=False)
    workflow = await seed(store, protocol_server.url, mcp_url, "calc-e2e")
    protocol_server.reset()
    script(protocol_server)

    worker_port = free_port()
    workers.append(
        start_worker(
            config, tmp_path, "threads", worker_port,
            TOKEN_ENCRYPTION_KEY=FERNET, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        )
    )  # fmt: skip
    api = Serving(
        base_dir(),
        **{k: v for k, v in env.items() if k not in ("DATA_DIR", "WORKER_METRICS_PORT")},
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
    )
    try:
        await asyncio.to_thread(api.start)
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            sent = await client.post(
                f"/api/workflows/{workflow.id}/prompt", json={"prompt": "What is 2+3?"}
            )
            assert sent.status_code in (200, 201, 202), sent.text
            task_id = sent.json()["task_id"]

            async def ended() -> None:
                while True:
                    task = await leases.load(db, task_id)
                    assert task is not None
                    if task.status not in (TaskStatus.PENDING, TaskStatus.RUNNING):
                        return
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(ended(), 90)
            task = await leases.load(db, task_id)
            assert task is not None and task.status is TaskStatus.COMPLETED, task and task.error
            api_metrics = (await client.get("/metrics")).text
    finally:
        api.send(signal.SIGTERM)
        await asyncio.to_thread(api.wait)
        api.cleanup()

    # --- one trace from the API's request to the worker's model and tool calls -------------
    def complete(spans: list[ReceivedSpan]) -> bool:
        run = [s for s in spans if s.name.startswith("invoke_agent") and s.service]
        return (
            bool(run)
            and sum(1 for s in spans if s.name.startswith("execute_tool")) >= 2
            and any(
                s.service == "tbd-agents-api" and s.kind == "SERVER" and "prompt" in s.name
                for s in spans
            )
        )

    spans = await asyncio.to_thread(receiver.wait_for, complete, 30)
    request = next(
        s for s in spans
        if s.service == "tbd-agents-api" and s.kind == "SERVER" and "prompt" in s.name
    )  # fmt: skip
    run = next(s for s in spans if s.name.startswith("invoke_agent"))
    assert run.service == "tbd-agents-worker"
    assert run.trace_id == request.trace_id, "the worker's run is not in the API request's trace"
    assert request in ancestors(spans, run)
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["tbd.task.id"] == task_id

    calls = [s for s in children(spans, run) if s.name == f"chat {MODEL}"]
    assert len(calls) == 2, [s.name for s in children(spans, run)]
    first, second = calls
    assert first.kind == "CLIENT"
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.request.model"] == MODEL
    assert first.attributes["gen_ai.provider.name"] == "openai"
    assert (first.attributes["gen_ai.usage.input_tokens"],
            first.attributes["gen_ai.usage.output_tokens"]) == (120, 30)  # fmt: skip
    assert (second.attributes["gen_ai.usage.input_tokens"],
            second.attributes["gen_ai.usage.output_tokens"]) == (200, 10)  # fmt: skip
    assert list(first.attributes["gen_ai.response.finish_reasons"]) == ["tool_calls"]
    assert list(second.attributes["gen_ai.response.finish_reasons"]) == ["stop"]

    tools = {s.attributes["gen_ai.tool.name"]: s for s in children(spans, run)
             if s.name.startswith("execute_tool")}  # fmt: skip
    assert set(tools) == {"manage_todo_list", "add"}
    assert tools["add"].attributes["tbd.tool.origin"] == "mcp"
    assert tools["manage_todo_list"].attributes["tbd.tool.origin"] == "builtin"
    # content capture is off by default: no prompt, answer, arguments or results anywhere
    for span in spans:
        for key, value in span.attributes.items():
            assert "What is 2+3?" not in str(value), (span.name, key)
            assert not key.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.tool.call.arg"))

    # --- the worker's metrics: the run was counted where it ran --------------------------
    text = httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10).text
    labels = {"model": MODEL}
    assert (
        metric(text, "agent_tasks_total", status="completed", reasoning_effort="none", **labels)
        == 1
    )
    assert metric(text, "copilot_hub_tokens_total", direction="input", **labels) == 320
    assert metric(text, "copilot_hub_tokens_total", direction="output", **labels) == 40
    assert metric(text, "tool_calls_total", tool_name="add") == 1
    assert metric(text, "tool_calls_total", tool_name="manage_todo_list") == 1
    assert metric(text, "mcp_connections_total", server_name="calc-e2e") >= 1
    assert (
        metric(text, "tbd_provider_requests_total", provider_type="openai", outcome="ok", **labels)
        == 2
    )
    assert metric(text, "agent_task_duration_seconds_count", status="completed", **labels) == 1
    assert metric(text, "agent_tasks_active") == 0
    # ... and not on the API, which only accepted the prompt
    assert (
        metric(
            api_metrics, "agent_tasks_total", status="completed", reasoning_effort="none", **labels
        )
        == 0
    )
    assert metric(
        api_metrics, "http_requests_total",
        handler="/api/workflows/{workflow_id}/prompt", method="POST", status="2xx",
    ) == 1  # fmt: skip
