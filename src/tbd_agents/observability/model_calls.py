"""Every model call, measured in one place: a wrapper around the run's `ChatProvider`.

The engine builds each run's provider with `instrumented(...)` (engine/builder.py), so the turn
calls and the compaction summaries of workflow runs, chat turns and schedule runs all pass here.
For each call it

- opens a `chat <model>` span (kind CLIENT) with the OpenTelemetry GenAI attributes: provider,
  request/response model, temperature, max tokens, token usage, finish reasons, `error.type` on
  failure; message content only as span events and only with TRACE_CAPTURE_CONTENT;
- counts `tbd_provider_requests_total{outcome}`, `tbd_provider_errors_total{kind}`, the call's
  duration and time to the first streamed token;
- counts the existing series: tokens by direction, cost (priced by the model catalog), and, for
  GitHub Copilot, premium requests (one per call times the catalog's `premium_multiplier`).

The span is made current only while the wrapped stream runs (around each `__anext__`), so the
SDK's HTTP spans become its children, and the caller's context is never left changed between
two events (an async generator that attached a context across a `yield` would leak it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from tbd_agents.domain.enums import ProviderType
from tbd_agents.engine.catalog import ModelInfo
from tbd_agents.engine.messages import ChatRequest, Completion, Message, StreamEvent
from tbd_agents.errors import (
    ContextTooLong,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnreachable,
)
from tbd_agents.observability import metrics as m
from tbd_agents.observability.spans import attributes, clip, fail, tracer

#: `gen_ai.provider.name` of each provider type (the semantic conventions' well-known values
#: where one exists; `custom` is any OpenAI-compatible server).
GENAI_PROVIDER = {
    ProviderType.OPENAI: "openai",
    ProviderType.AZURE_OPENAI: "azure.ai.openai",
    ProviderType.ANTHROPIC: "anthropic",
    ProviderType.GITHUB_COPILOT: "github_copilot",
    ProviderType.CUSTOM: "custom",
}


def error_kind(exc: BaseException) -> str:
    """The `kind` label of a failed call: rate_limited, auth, timeout, connection, server,
    bad_request or other."""
    if isinstance(exc, UpstreamRateLimited):
        return "rate_limited"
    if isinstance(exc, UpstreamAuthError):
        return "auth"
    if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower():
        return "timeout"
    if isinstance(exc, UpstreamUnreachable):
        return "timeout" if "Timeout" in exc.message else "connection"
    if isinstance(exc, ContextTooLong):
        return "bad_request"
    if isinstance(exc, UpstreamError):
        text = exc.message
        if " answered 5" in text or "failed mid-answer" in text:
            return "server"
        if " answered 4" in text:
            return "bad_request"
    if type(exc).__name__ == "OutboundRefused":
        return "connection"
    return "other"


class InstrumentedProvider:
    """A `ChatProvider` that measures every call of the provider it wraps (module docstring)."""

    def __init__(
        self,
        inner: Any,
        provider_type: ProviderType,
        model_info: ModelInfo,
        *,
        capture_content: bool = False,
    ) -> None:
        self.inner = inner
        self.name: str = inner.name
        self.provider_type = provider_type
        self.model_info = model_info
        self.capture_content = capture_content

    async def aclose(self) -> None:
        await self.inner.aclose()

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        provider = self.provider_type.value
        model = m.bounded("model", request.model)
        span = tracer.start_span(
            f"chat {request.model}",
            kind=SpanKind.CLIENT,
            attributes=attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": GENAI_PROVIDER.get(self.provider_type, provider),
                    "gen_ai.request.model": request.model,
                    "gen_ai.request.temperature": request.temperature,
                    "gen_ai.request.max_tokens": request.max_output_tokens,
                    "tbd.request.reasoning_effort": request.reasoning_effort,
                }
            ),
        )
        if self.capture_content and span.is_recording():
            _input_events(span, request.messages)
        # A span that records nothing (no SDK: tracing off) needs no context switch per event.
        ctx = trace.set_span_in_context(span) if span.is_recording() else None
        started = time.monotonic()
        first: float | None = None
        events = self.inner.stream(request).__aiter__()
        try:
            while True:
                token = otel_context.attach(ctx) if ctx is not None else None
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    if token is not None:
                        otel_context.detach(token)
                if first is None:
                    first = time.monotonic() - started
                    m.PROVIDER_FIRST_TOKEN.labels(provider, model).observe(first)
                if isinstance(event, Completion):
                    self._completed(span, request, event)
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            span.set_attribute("tbd.cancelled", True)  # halted or abandoned: not a failure
            raise
        except Exception as exc:
            kind = error_kind(exc)
            m.PROVIDER_REQUESTS.labels(provider, model, "error").inc()
            m.PROVIDER_ERRORS.labels(provider, model, kind).inc()
            m.PROVIDER_DURATION.labels(provider, model).observe(time.monotonic() - started)
            fail(span, type(exc).__name__, clip(getattr(exc, "message", None) or str(exc), 300))
            span.set_attribute("tbd.error.kind", kind)
            raise
        else:
            m.PROVIDER_REQUESTS.labels(provider, model, "ok").inc()
            m.PROVIDER_DURATION.labels(provider, model).observe(time.monotonic() - started)
        finally:
            span.end()

    def _completed(self, span: Span, request: ChatRequest, done: Completion) -> None:
        """Count the call's tokens, cost and premium requests; describe its answer on `span`."""
        model = m.bounded("model", request.model)
        usage = done.usage
        m.TOKENS.labels("input", model).inc(usage.input_tokens)
        m.TOKENS.labels("output", model).inc(usage.output_tokens)
        cost = self.model_info.cost(usage.input_tokens, usage.output_tokens)
        if cost:
            m.COST.labels(model).inc(cost)
        if self.provider_type is ProviderType.GITHUB_COPILOT:
            m.PREMIUM_REQUESTS.labels(model).inc(self.model_info.premium_multiplier)
        span.set_attributes(
            attributes(
                {
                    "gen_ai.response.model": request.model,
                    "gen_ai.usage.input_tokens": usage.input_tokens,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                    "gen_ai.response.finish_reasons": [done.stop_reason]
                    if done.stop_reason
                    else None,
                    "tbd.cost_usd": round(cost, 8),
                }
            )
        )
        if self.capture_content and span.is_recording():
            span.add_event("gen_ai.choice", _message_attributes(done.message, index=0))


def _message_attributes(message: Message, index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"gen_ai.message.role": message.role, "content": clip(message.content)}
    if message.tool_calls:
        out["tool_calls"] = clip(json.dumps([c.to_dict() for c in message.tool_calls], default=str))
    if message.tool_call_id:
        out["id"] = message.tool_call_id
    if index is not None:
        out["index"] = index
        out["finish_reason"] = "tool_calls" if message.tool_calls else "stop"
    return out


def _input_events(span: Span, messages: list[Message]) -> None:
    """The request's messages as `gen_ai.<role>.message` events (the GenAI conventions)."""
    for message in messages:
        span.add_event(f"gen_ai.{message.role}.message", _message_attributes(message))


def instrumented(
    inner: Any, provider_type: ProviderType, model_info: ModelInfo, *, capture_content: bool
) -> InstrumentedProvider:
    """`inner` with every call measured (see the module docstring)."""
    return InstrumentedProvider(inner, provider_type, model_info, capture_content=capture_content)
