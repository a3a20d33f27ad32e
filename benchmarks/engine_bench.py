"""Engine benchmarks (run by hand): python benchmarks/engine_bench.py [--runs N]

1. Engine overhead per turn, excluding model time: 3-turn runs (two tool turns with parallel
   calls to a built-in-style function tool, then an answer) against the local protocol server
   through the real OpenAI SDK; overhead = run wall time - time spent inside the model calls.
2. SSE relay latency to first delta: the API on a real socket (embedded PostgreSQL 18), chat
   endpoint, custom provider on the protocol server; latency = first `delta` SSE event received
   by the client - first content chunk sent by the protocol server (same process clock).
With `--otlp http://127.0.0.1:4318` (an OTLP/HTTP endpoint, e.g. benchmarks/otlp_sink.py) the
overhead is measured with tracing on (the SDK exporting every span) and the provider wrapped as
the engine builder wraps it (model-call spans and series), each run inside a run span; metrics
are always on. Results go to benchmarks/RESULTS.md, sections "Engine" and "Observability
overhead".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.engine.conftest import FAST, provider_settings  # noqa: E402
from tests.engine.protocol_server import ProtocolServer, Turn  # noqa: E402

from tbd_agents.engine.catalog import ModelCatalog  # noqa: E402
from tbd_agents.engine.context import RunInput, RunSpec  # noqa: E402
from tbd_agents.engine.loop import AgentLoop  # noqa: E402
from tbd_agents.engine.messages import ToolSpec  # noqa: E402
from tbd_agents.engine.providers import build_provider  # noqa: E402
from tbd_agents.engine.tools.base import FunctionTool, ToolResult, Toolset  # noqa: E402


class NullSink:
    async def emit(self, event_type: Any, data: Any) -> None:
        return None


class TimedProvider:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_seconds = 0.0

    async def stream(self, request: Any) -> Any:
        t0 = time.perf_counter()
        try:
            async for ev in self.inner.stream(request):
                self.model_seconds += time.perf_counter() - t0
                yield ev
                t0 = time.perf_counter()
        finally:
            self.model_seconds += time.perf_counter() - t0

    async def aclose(self) -> None:
        await self.inner.aclose()


async def overhead(server: ProtocolServer, runs: int, observed: bool = False) -> dict[str, float]:
    from opentelemetry import trace

    from tbd_agents.domain.enums import ProviderType
    from tbd_agents.observability.model_calls import InstrumentedProvider

    tracer = trace.get_tracer("tbd_agents")

    async def lookup(args: dict[str, Any], ctx: Any) -> ToolResult:
        return ToolResult(json.dumps({"id": args.get("id"), "ok": True}))

    tools = Toolset()
    tools.add(
        FunctionTool(
            ToolSpec(
                "lookup", "look up", {"type": "object", "properties": {"id": {"type": "integer"}}}
            ),
            lookup,
        )
    )
    catalog = ModelCatalog.load()
    per_turn: list[float] = []
    for _ in range(runs):
        server.script(
            Turn(tool_calls=[("lookup", {"id": 1}), ("lookup", {"id": 2})]),
            Turn(tool_calls=[("lookup", {"id": 3})]),
            Turn(text="done " * 20),
        )
        provider = TimedProvider(build_provider(provider_settings("openai", server.url), FAST))
        info = catalog.get("gpt-4o")
        # the instrumentation outside the timer: its cost counts as engine overhead
        outer = InstrumentedProvider(provider, ProviderType.OPENAI, info) if observed else provider
        spec = RunSpec(
            provider=outer,
            model="gpt-4o",
            model_info=catalog.get("gpt-4o"),
            tools=tools,
            config=FAST,
        )
        t0 = time.perf_counter()
        if observed:
            with tracer.start_as_current_span("invoke_agent bench"):
                result = await AgentLoop(spec, NullSink()).run(RunInput("go"))
        else:
            result = await AgentLoop(spec, NullSink()).run(RunInput("go"))
        wall = time.perf_counter() - t0
        await provider.aclose()
        assert result.outcome.turns == 3, result.outcome
        per_turn.append((wall - provider.model_seconds) / 3 * 1000)
    per_turn.sort()
    return {
        "p50_ms": statistics.median(per_turn),
        "p95_ms": per_turn[int(len(per_turn) * 0.95) - 1],
        "runs": runs,
    }


async def sse_latency(server: ProtocolServer, runs: int) -> dict[str, float]:
    import httpx
    from cryptography.fernet import Fernet
    from tests.api.live import live_server
    from tests.support import pg

    from tbd_agents.config import Settings
    from tbd_agents.domain.enums import ProviderType
    from tbd_agents.domain.models import Agent, Provider
    from tbd_agents.services.keys import ApiKeys
    from tbd_agents.storage.postgres.engine import create_engine
    from tbd_agents.storage.postgres.repository import PostgresStore

    tmp = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    server_uri = pg.start_embedded(tmp / "pg")
    url = await asyncio.to_thread(pg.create_migrated_database, server_uri, "bench")
    settings = Settings(
        postgres_uri=url.render_as_string(hide_password=False),
        token_encryption_key=f"1:{Fernet.generate_key().decode()}",
        data_dir=tmp,
        embedding_provider="hashing",
        # The protocol server listens on loopback, which the outbound policy refuses by default.
        outbound_allowed_hosts="127.0.0.1",
    )
    store = PostgresStore(create_engine(url, pool_size=2), url=url)
    async with store.unit_of_work() as repos:
        key = (await ApiKeys(repos).create("bench", name="bench")).plaintext
        provider = await repos.providers.create(
            Provider(
                name="bench",
                provider_type=ProviderType.CUSTOM,
                base_url=f"{server.url}/v1",
                created_by="bench",
            )
        )
        agent = await repos.agents.create(
            Agent(name="bench", model="llama3.1", provider_id=provider.id, created_by="bench")
        )
    latencies: list[float] = []
    with live_server(settings) as base:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            for i in range(runs + 3):
                server.first_chunk_at.clear()
                server.script(Turn(text="hello there, streaming", chunk_chars=4))
                async with client.stream(
                    "POST", f"/api/agents/{agent.id}/chat", json={"message": "hi"}
                ) as r:
                    got = None
                    async for line in r.aiter_lines():
                        if line == "event: delta" and got is None:
                            got = time.monotonic()
                    if got is None:
                        raise RuntimeError(f"chat {i} streamed no delta event")
                    if i >= 3:  # first runs warm up
                        latencies.append((got - server.first_chunk_at[0]) * 1000)
    await store.close()
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1],
        "runs": len(latencies),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--otlp", help="OTLP/HTTP endpoint: measure with tracing on")
    parser.add_argument("--only-overhead", action="store_true", help="skip the SSE relay part")
    args = parser.parse_args()
    if args.otlp:
        from tbd_agents.config import Settings
        from tbd_agents.observability.tracing_setup import configure_tracing

        configure_tracing(Settings(otel_exporter_otlp_endpoint=args.otlp), "tbd-agents-bench")
    server = ProtocolServer().start()
    try:
        over = await overhead(server, args.runs, observed=bool(args.otlp))
        print(
            f"engine overhead per turn (excl. model time): p50 {over['p50_ms']:.2f} ms, p95 {over['p95_ms']:.2f} ms over {over['runs']} runs x 3 turns"
        )
        if args.only_overhead:
            return
        relay = await sse_latency(server, max(20, args.runs // 2))
        print(
            f"SSE relay latency to first delta: p50 {relay['p50_ms']:.2f} ms, p95 {relay['p95_ms']:.2f} ms over {relay['runs']} chats"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
