"""Which API requests get a server span: every request that changes something or starts work,
and a sample of the plain reads.

A recorded request costs the API about 0.3 ms of CPU in OpenTelemetry's Python SDK (its server
span, a span per statement, batching and export) — more than a `GET /api/agents/{id}` costs
without tracing (~0.2 ms; `benchmarks/RESULTS.md`, "Observability overhead"). Recording every
read would more than halve the API's read throughput, so `TraceGate` decides per request before
any tracing code runs:

- traced always: every method but GET/HEAD (creates, updates, deletes, prompts, chat turns — the
  requests that start the runs whose traces matter), and any request that carries a sampled W3C
  `traceparent` (its caller's trace continues here);
- GET/HEAD: at most `TRACE_READS_PER_SECOND` of them traced (default 10; a token bucket, so a
  quiet hub gets every read traced and a busy one pays for ten traced reads a second, whatever
  its traffic; 0 traces none).

A request left out is served with instrumentation suppressed (OpenTelemetry's suppression key in
the context), so its statements open no spans either: it costs a clock read and a context
switch. Runs executed by workers are traced in full whatever this gate decides.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from starlette.types import ASGIApp, Receive, Scope, Send

try:  # the plain-string key the instrumentations also check (a private name of theirs)
    from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY_PLAIN
except ImportError:  # pragma: no cover - another opentelemetry-instrumentation version
    _SUPPRESS_INSTRUMENTATION_KEY_PLAIN = "suppress_instrumentation"

_READS = frozenset({"GET", "HEAD"})
#: The keys every OpenTelemetry instrumentation checks (`suppress_instrumentation()` sets both).
_SUPPRESS_KEYS = (_SUPPRESS_INSTRUMENTATION_KEY, _SUPPRESS_INSTRUMENTATION_KEY_PLAIN)


def _suppressed(base: Context | None = None) -> Context:
    for key in _SUPPRESS_KEYS:
        base = context.set_value(key, True, base)
    assert base is not None
    return base


#: What a request left out runs under when the context it starts in is empty (the usual case:
#: the server's connection task carries none), made once instead of per request.
_SUPPRESSED = _suppressed(Context())


class TraceGate:
    """ASGI middleware in front of the tracing middleware `traced` (built around `app`)."""

    def __init__(
        self, app: ASGIApp, /, *, traced: type[Any], reads_per_second: float, **options: Any
    ) -> None:
        self.app = app
        self.traced = traced(app, **options)
        self.rate = reads_per_second
        self.burst = max(1.0, reads_per_second)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def _take(self) -> bool:
        """One read's token, if the bucket has one (one event loop: no lock needed)."""
        if self.rate <= 0:
            return False
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def _records(self, scope: Scope) -> bool:
        if scope["method"] not in _READS:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"traceparent":
                return bytes(value).strip().endswith(b"-01")  # the caller sampled it
        return self._take()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._records(scope):
            await self.traced(scope, receive, send)
            return
        current = context.get_current()
        token = context.attach(_suppressed(current) if current else _SUPPRESSED)
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)
