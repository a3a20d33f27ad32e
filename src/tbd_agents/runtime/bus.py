"""Message buses: how one process tells others about new run events and halt requests.

Two implementations behind one protocol, chosen once from the settings:

- `InProcessBus`: asyncio queues inside one process (the embedded default, no Redis).
- `RedisBus`: Redis pub/sub (`REDIS_URL`), so an API process hears a worker's events.

A bus only carries notifications. What a subscriber must not miss is in the database (events
are stored before they are published), and subscribers that stop hearing the bus catch up from there.
So a Redis outage costs latency, never data: publishing raises `BusUnavailable` (which callers log
and move on from), subscriptions wait for Redis and subscribe again by themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from redis.exceptions import RedisError

from tbd_agents.config import redact_url
from tbd_agents.errors import TbdError
from tbd_agents.storage.postgres.engine import json_dumps

_log = logging.getLogger(__name__)

CHANNEL_PREFIX = "tbd-agents"


def events_channel(task_id: str) -> str:
    return f"{CHANNEL_PREFIX}:run:{task_id}:events"


def halt_channel(task_id: str) -> str:
    return f"{CHANNEL_PREFIX}:run:{task_id}:halt"


class Subscription(Protocol):
    async def get(self, wait_seconds: float) -> dict[str, Any] | None:
        """The next message, or None when nothing arrived within `wait_seconds`."""
        ...


class EventBus(Protocol):
    async def publish(self, channel: str, message: Mapping[str, Any]) -> None:
        """Send `message` to the channel's subscribers; `BusUnavailable` if it cannot."""
        ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Subscription]:
        """Listen on `channel`; the subscription is active when the context is entered."""
        ...

    async def aclose(self) -> None: ...


class _QueueSubscription:
    def __init__(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.queue = queue

    async def get(self, wait_seconds: float) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.queue.get(), wait_seconds)
        except TimeoutError:
            return None


class InProcessBus:
    """Pub/sub between the tasks of one event loop."""

    def __init__(self) -> None:
        self._queues: defaultdict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    async def publish(self, channel: str, message: Mapping[str, Any]) -> None:
        payload = json.loads(json_dumps(message))  # same shape as over Redis (JSON values only)
        for queue in tuple(self._queues.get(channel, ())):
            queue.put_nowait(payload)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues[channel].add(queue)
        try:
            yield _QueueSubscription(queue)
        finally:
            subscribers = self._queues.get(channel)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._queues[channel]

    async def aclose(self) -> None:
        self._queues.clear()


class BusUnavailable(TbdError):
    """The bus could not carry a message (Redis down or unreachable). Nothing is lost: what a
    message announces is already in the database (events, halt flags)."""

    http_status = 503
    code = "bus_unavailable"


#: After a failed Redis call, the bus does not try Redis again for this long (publishes fail
#: at once meanwhile): a run that emits many events during an outage is not slowed down.
RETRY_SECONDS = 1.0
#: Seconds to open a connection to Redis / to wait for it to answer a command.
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
#: Seconds Redis has to confirm a subscription.
SUBSCRIBE_TIMEOUT = 5.0
#: What a failed Redis call raises (redis-py's errors are not the built-in ConnectionError).
_REDIS_FAULTS: tuple[type[BaseException], ...] = (RedisError, OSError)


class _RedisSubscription:
    """One channel's subscription; it survives Redis outages.

    While Redis is unreachable `get` waits (returning None at its deadline, so callers poll
    the database) and tries to subscribe again every RETRY_SECONDS. Once subscribed again it
    returns None at once: messages sent meanwhile were missed, and the caller reads the
    database to catch up."""

    def __init__(self, bus: RedisBus, channel: str) -> None:
        self.bus = bus
        self.channel = channel
        self.pubsub: Any = None

    async def open(self) -> bool:
        """Subscribe and wait for Redis to confirm it; False (logged) if Redis is unavailable."""
        if not self.bus.may_try():
            return False
        pubsub = self.bus.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            # SUBSCRIBE is only in force once Redis confirms it: wait for the confirmation so
            # that "subscribe, then read the store" leaves no window where a message is lost.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SUBSCRIBE_TIMEOUT
            while True:
                remaining = deadline - loop.time()
                message = await pubsub.get_message(timeout=remaining) if remaining > 0 else None
                if message is None:
                    raise TimeoutError(f"Redis did not confirm the subscription to {self.channel}")
                if message.get("type") == "subscribe":
                    break
        except _REDIS_FAULTS as exc:
            self.bus.failed(exc)
            await _close_pubsub(pubsub)
            return False
        self.pubsub = pubsub
        self.bus.succeeded()
        return True

    async def get(self, wait_seconds: float) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            if self.pubsub is None:
                if await self.open():
                    return None  # subscribed again: the caller catches up from the database
                await asyncio.sleep(min(remaining, max(self.bus.retry_in(), 0.05)))
                continue
            try:
                message = await self.pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=remaining
                )
            except _REDIS_FAULTS as exc:
                self.bus.failed(exc)
                await self.close()
                continue
            if message is not None and message.get("type") == "message":
                decoded: dict[str, Any] = json.loads(message["data"])
                return decoded

    async def close(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            await _close_pubsub(pubsub)


async def _close_pubsub(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except _REDIS_FAULTS as exc:  # the connection is gone already
        _log.debug("closing a Redis subscription: %s", exc)


class RedisBus:
    """Pub/sub over Redis. One connection pool per process, closed by `aclose()`.

    Redis being down never fails a caller's work: `publish` raises `BusUnavailable` (at once
    while the outage lasts, trying Redis again every RETRY_SECONDS), subscriptions wait and
    subscribe again by themselves. The start and the end of an outage are logged once each."""

    def __init__(self, url: str, *, retry_seconds: float = RETRY_SECONDS) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.retry_seconds = retry_seconds
        # One retry (a pooled connection Redis closed when it restarted is reopened), no more:
        # the outage handling is ours (redis-py's default of 10 tries stalls every publish).
        self.redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
        )
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._error = ""

    # --- outage bookkeeping -------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """False from a failed Redis call until the next successful one."""
        return self._down_since is None

    def may_try(self) -> bool:
        """Whether Redis may be tried now (always, unless it failed less than a retry ago)."""
        return self._down_since is None or time.monotonic() >= self._retry_at

    def retry_in(self) -> float:
        """Seconds until Redis may be tried again (0: now)."""
        return 0.0 if self._down_since is None else max(self._retry_at - time.monotonic(), 0.0)

    def failed(self, exc: BaseException) -> BusUnavailable:
        """Record a failed Redis call; the error to raise."""
        now = time.monotonic()
        self._error = f"{type(exc).__name__}: {exc}"
        self._retry_at = now + self.retry_seconds
        if self._down_since is None:
            self._down_since = now
            _log.warning(
                "Redis at %s is unavailable (%s): live run events and halt notices are not "
                "sent meanwhile (nothing is lost: followers read events from the database, "
                "workers read halts at their next heartbeat); trying again every %g s",
                redact_url(self.url),
                self._error,
                self.retry_seconds,
            )
        return self.unavailable()

    def succeeded(self) -> None:
        """Record a successful Redis call (logs the end of an outage)."""
        if self._down_since is not None:
            _log.warning(
                "Redis at %s is available again after %.1f s: live run events resume",
                redact_url(self.url),
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    def unavailable(self) -> BusUnavailable:
        return BusUnavailable(f"Redis at {redact_url(self.url)} is unavailable ({self._error})")

    # --- the bus ------------------------------------------------------------------------------
    async def publish(self, channel: str, message: Mapping[str, Any]) -> None:
        """Send `message`; BusUnavailable (at once during an outage) if Redis cannot take it."""
        if not self.may_try():
            raise self.unavailable()
        try:
            await self.redis.publish(channel, json_dumps(message))
        except _REDIS_FAULTS as exc:
            raise self.failed(exc) from exc
        self.succeeded()

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        """Listen on `channel`. Active when the block starts if Redis is available; otherwise
        the subscription is made as soon as Redis is back (see `_RedisSubscription`)."""
        subscription = _RedisSubscription(self, channel)
        await subscription.open()
        try:
            yield subscription
        finally:
            await subscription.close()

    async def ping(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        await self.redis.aclose()
