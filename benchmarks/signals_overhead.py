"""What the call-site signals cost a model call: a fake provider streaming N text deltas and a
completion, consumed bare and through `observability.model_calls.InstrumentedProvider`, first
with no OpenTelemetry SDK (the API's no-op tracer: the default when tracing is off), then with
the SDK and an in-memory exporter (every span recorded and exported).

    PYTHONPATH=src .venv/bin/python benchmarks/signals_overhead.py [deltas] [calls]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator

from tbd_agents.domain.enums import ProviderType
from tbd_agents.engine.catalog import ModelInfo
from tbd_agents.engine.messages import (
    ChatRequest,
    Completion,
    Message,
    StreamEvent,
    TextDelta,
    TokenUsage,
)
from tbd_agents.observability.model_calls import instrumented

INFO = ModelInfo("bench-model", 128_000, 4_096, 2.5, 10.0)


class FakeProvider:
    name = "fake"

    def __init__(self, deltas: int) -> None:
        self.deltas = deltas

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[StreamEvent]:
        for _ in range(self.deltas):
            yield TextDelta("tok ")
        yield Completion(Message("assistant", "tok " * self.deltas), TokenUsage(100, self.deltas))

    async def aclose(self) -> None:
        return None


async def per_call(provider: object, calls: int) -> list[float]:
    request = ChatRequest("bench-model", [Message("user", "hi")])
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        async for _event in provider.stream(request):  # type: ignore[attr-defined]
            pass
        out.append(time.perf_counter() - started)
    return out


async def measure(label: str, deltas: int, calls: int) -> None:
    bare = FakeProvider(deltas)
    wrapped = instrumented(bare, ProviderType.OPENAI, INFO, capture_content=False)
    for _ in range(3):  # warm up, then interleave to share the machine's noise
        await per_call(bare, 50)
        await per_call(wrapped, 50)
    b = statistics.median(await per_call(bare, calls))
    w = statistics.median(await per_call(wrapped, calls))
    print(f"| {label} | {deltas} | {b * 1e6:,.1f} µs | {w * 1e6:,.1f} µs | "
          f"{(w - b) * 1e6:,.1f} µs | {(w - b) / (deltas + 1) * 1e6:,.2f} µs |")  # fmt: skip


async def main(deltas: int, calls: int) -> None:
    print("| tracing | deltas per call | bare call | instrumented call | overhead per call "
          "| overhead per event |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    await measure("off (no SDK)", deltas, calls)
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    await measure("SDK, every span exported (in memory)", deltas, calls)
    print(f"\n{len(exporter.get_finished_spans())} spans exported")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    asyncio.run(main(args[0] if args else 200, args[1] if len(args) > 1 else 500))
