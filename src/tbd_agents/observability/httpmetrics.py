"""HTTP request metrics of the API, with prometheus-fastapi-instrumentator's names and labels.

`HttpMetrics` is a pure ASGI middleware (no request objects, no copies of the body): it counts
the bytes of the request body as they are received and of the response body as they are sent, and
records when the response has ended, so a streamed response (SSE) is counted once, at its end,
with its whole size and duration. It also keeps `sse_connections_active`: a response whose
content type is `text/event-stream` counts as an open stream until it ends, whichever route
serves it.

`handler` is the route template (`/api/agents/{record_id}`), never the path itself (ids would
make a series per record); a request no route matched is `none`. `/metrics` itself is not
counted. The CRUD fast path (`api/fastpath.py`) answers without routing and puts its template in
the scope under `ROUTE_KEY`.

Requests are tallied in plain numbers and added to prometheus_client's values in one go (see
"tallies" below): before every scrape, and at most a second after a request. With METRICS_ENABLED
off and tracing off the API does not add this middleware at all.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from typing import Any

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tbd_agents.observability import exposition, metrics

#: Scope key where a layer that answers without Starlette's routing puts the route template.
ROUTE_KEY = "tbd.route"
UNMATCHED = "none"
_EXCLUDED = frozenset({"/metrics"})
#: Whether the request's server span (opened by the tracing middleware outside this one) is
#: renamed after its route here: set by `tracing_setup.instrument_app` when tracing is on.
_name_spans = False


def name_server_spans(on: bool) -> None:
    global _name_spans
    _name_spans = on


def handler_of(scope: Scope) -> str:
    """The route template that answered the request, or `none`."""
    template = scope.get(ROUTE_KEY)
    if template:
        return str(template)
    route: Any = scope.get("route")
    if route is None:
        return UNMATCHED
    return str(getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class HttpMetrics:
    """Counts every HTTP request (see the module docstring); add it as the outermost middleware
    so that error answers are counted too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _EXCLUDED:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sizes = [0, 0]  # request body, response body
        state: dict[str, Any] = {"status": 0, "stream": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                sizes[0] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                if _name_spans:  # now: the tracing middleware ends its span with the body
                    _name_span(scope)
                if _is_event_stream(message):
                    state["stream"] = True
                    metrics.SSE_CONNECTIONS.inc()
            elif message["type"] == "http.response.body":
                sizes[1] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        except BaseException:
            if not state["status"]:
                state["status"] = 500  # what ServerErrorMiddleware, outside us, answers
            raise
        finally:
            if state["stream"]:
                metrics.SSE_CONNECTIONS.dec()
            _record(scope, state["status"] or 500, sizes, time.perf_counter() - started)


def _name_span(scope: Scope) -> None:
    """`<METHOD> <route template>` and `http.route` on the request's server span (the
    semantic conventions' name; a request no route matched keeps the method alone)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    handler = handler_of(scope)
    if handler != UNMATCHED:
        span.update_name(f"{scope['method']} {handler}")
        span.set_attribute("http.route", handler)


def _is_event_stream(message: Message) -> bool:
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-type":
            return bool(value.lower().startswith(b"text/event-stream"))
    return False


#: The labelled children of one (handler, method, status class): `labels()` validates and locks
#: on every call, a dict lookup does not (the key set is bounded by the routes).
_children: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}


def forget_children() -> None:
    """Drop the cached children (their metrics were re-created: `exposition`'s mode switch)."""
    flush()
    _children.clear()


def _children_of(key: tuple[str, str, str]) -> tuple[Any, Any, Any, Any]:
    children = _children.get(key)
    if children is None:
        handler, method, status_label = key
        children = _children.setdefault(
            key,
            (
                metrics.HTTP_REQUESTS.labels(handler, method, status_label),
                metrics.HTTP_REQUEST_SIZE.labels(handler),
                metrics.HTTP_RESPONSE_SIZE.labels(handler),
                metrics.HTTP_DURATION.labels(handler, method),
            ),
        )
    return children


# --- tallies -----------------------------------------------------------------------------------
# Five prometheus_client updates per request (a counter and four histograms: eleven locked
# increments) cost more than the rest of this middleware. Requests are tallied instead, per
# (handler, method, status class), in plain integers and floats, and the tallies are added to the
# prometheus_client values in one go (`flush`): before every scrape of this process (a hook of
# `exposition.scrape`, and a collector on the default registry for whoever reads it directly),
# and at most `FLUSH_SECONDS` after a request, so that in multiprocess mode another process's
# scrape sees this one's requests within that time.

#: At most this long between a request and its tally reaching prometheus_client's values.
FLUSH_SECONDS = 1.0


def _bounds(histogram: Any) -> tuple[float, ...]:
    return tuple(histogram._upper_bounds)


_SIZE_BOUNDS = _bounds(metrics.HTTP_REQUEST_SIZE)
_RESPONSE_BOUNDS = _bounds(metrics.HTTP_RESPONSE_SIZE)
_DURATION_BOUNDS = _bounds(metrics.HTTP_DURATION)
_HIGHR_BOUNDS = _bounds(metrics.HTTP_DURATION_HIGHR)


class _Tally:
    """What the requests of one (handler, method, status class) added since the last flush."""

    __slots__ = ("count", "duration_sum", "durations", "size_sums", "sizes")

    def __init__(self) -> None:
        self.count = 0
        # request body, response body: bucket counts (prometheus_client's own, not cumulative)
        self.sizes = ([0] * len(_SIZE_BOUNDS), [0] * len(_RESPONSE_BOUNDS))
        self.size_sums = [0, 0]
        self.durations = ([0] * len(_DURATION_BOUNDS), [0] * len(_HIGHR_BOUNDS))
        self.duration_sum = 0.0


_tallies: dict[tuple[str, str, str], _Tally] = {}
_tally_lock = threading.Lock()  # a scrape flushes from a thread (exposition.scrape)
_last_flush = time.monotonic()


def _record(scope: Scope, status: int, sizes: list[int], seconds: float) -> None:
    global _last_flush
    key = (handler_of(scope), scope["method"], status_class(status))
    now = time.monotonic()
    with _tally_lock:
        tally = _tallies.get(key)
        if tally is None:
            tally = _tallies[key] = _Tally()
        tally.count += 1
        tally.sizes[0][bisect_left(_SIZE_BOUNDS, sizes[0])] += 1
        tally.sizes[1][bisect_left(_RESPONSE_BOUNDS, sizes[1])] += 1
        tally.size_sums[0] += sizes[0]
        tally.size_sums[1] += sizes[1]
        tally.durations[0][bisect_left(_DURATION_BOUNDS, seconds)] += 1
        tally.durations[1][bisect_left(_HIGHR_BOUNDS, seconds)] += 1
        tally.duration_sum += seconds
        due = now - _last_flush >= FLUSH_SECONDS
    if due:
        flush()


def flush() -> None:
    """Add the tallies of the requests since the last flush to prometheus_client's values."""
    global _tallies, _last_flush
    with _tally_lock:
        taken, _tallies = _tallies, {}
        _last_flush = time.monotonic()
    for key, tally in taken.items():
        requests, request_size, response_size, duration = _children_of(key)
        requests.inc(tally.count)
        _add(request_size, tally.sizes[0], tally.size_sums[0])
        _add(response_size, tally.sizes[1], tally.size_sums[1])
        _add(duration, tally.durations[0], tally.duration_sum)
        _add(metrics.HTTP_DURATION_HIGHR, tally.durations[1], tally.duration_sum)


def _add(histogram: Any, counts: list[int], total: float) -> None:
    """What `observe` would have done for each value counted (its `_sum` and `_buckets` are the
    values `observe` itself increments)."""
    histogram._sum.inc(total)
    buckets = histogram._buckets
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)


# Before a scrape of this process in either mode (`exposition.scrape` hook; in multiprocess mode it
# reads the files this flush writes), and whenever the default registry is read directly.
exposition.on_scrape(flush)
metrics.before_collect(flush)
