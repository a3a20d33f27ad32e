"""Message buses: how one process tells others about new run events and halt requests.

Two implementations behind one protocol, chosen once from the settings:

- `InProcessBus`: asyncio queues inside one process (the embedded default, no Redis).
- `RedisBus`: Redis pub/sub (`REDIS_URL`), so an API process hears a worker's events.

A bus only carries notifications. What a subscriber must not miss is in the database (events
are stored before they are published), and subscribers that stop hearing the bus catch up from there.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from tbd_agents.storage.postgres.engine import json_dumps

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
    async def publish(self, channel: str, message: Mapping[str, Any]) -> None: ...

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


class _RedisSubscription:
    def __init__(self, pubsub: Any) -> None:
        self.pubsub = pubsub

    async def get(self, wait_seconds: float) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            message = await self.pubsub.get_message(
                ignore_subscribe_messages=True, timeout=remaining
            )
            if message is not None and message.get("type") == "message":
                data = message["data"]
                decoded: dict[str, Any] = json.loads(data)
                return decoded


class RedisBus:
    """Pub/sub over Redis. One connection pool per process, closed by `aclose()`."""

    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self.url = url
        self.redis = Redis.from_url(url, decode_responses=True)

    async def publish(self, channel: str, message: Mapping[str, Any]) -> None:
        await self.redis.publish(channel, json_dumps(message))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(channel)
            # SUBSCRIBE is only in force once Redis confirms it: wait for the confirmation so
            # that "subscribe, then read the store" leaves no window where a message is lost.
            while True:
                message = await pubsub.get_message(timeout=5.0)
                if message is None:
                    raise ConnectionError(f"Redis did not confirm the subscription to {channel}")
                if message.get("type") == "subscribe":
                    break
            yield _RedisSubscription(pubsub)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def ping(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        await self.redis.aclose()
