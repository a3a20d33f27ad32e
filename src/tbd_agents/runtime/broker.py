"""The Redis broker transport of the Celery workers: kombu's, with one fault repaired.

When Redis goes away while a worker waits for its next message (a `BRPOP` in flight) and a run
is still being executed (an unacknowledged message), kombu 5.x (checked up to 5.7.0) lets the
worker die instead of reconnecting:

1. Celery's consumer catches the connection error and closes the connection: `collect()` closes
   the channel, and `Channel.close()` first reads the reply of the pending `BRPOP`. That read
   raises the connection error out of `close()` *before* the channel is marked closed (only
   `Empty` is caught there, kombu PR #1733).
2. `collect()` then detaches the transport from the connection (`transport.client = None`).
3. Celery closes the connection once more; the channel, still not closed, now restores its
   unacknowledged message, needs a new Redis pool, and builds it from `transport.client`, which
   is None: `AttributeError: 'NoneType' object has no attribute 'hostname'`. That is not a
   connection error, so it escapes Celery's reconnect loop and stops the worker ("Unrecoverable
   error"), and `celery.worker_main` dropped the exit code on top of it.

`Channel` here finishes the pending read the same way but treats a connection error as what it
is (the reply is gone with the connection), so the close goes on, the channel is marked closed,
and Celery reconnects. It also remembers the connection parameters it was built with, so that a
late acknowledgement (a run that finishes after the reconnect) or a restore never needs the
detached transport again. A message whose restore failed because Redis was down stays in
kombu's `unacked` hash in Redis: it is either acknowledged when its run ends or redelivered after
the visibility timeout, and a redelivered run that is not pending any more is skipped.

`celery_options(url)` selects it (used by `celery_app.make_celery`); `sentinel://` and other
schemes keep kombu's own transports.
"""

from __future__ import annotations

import logging
import ssl
from queue import Empty
from typing import Any

import redis.exceptions
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

_log = logging.getLogger(__name__)

#: URL schemes served by `Transport` (kombu's `redis` transport handles both).
SCHEMES = frozenset({"redis", "rediss"})


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; closing it after the connection was lost cannot fail on a
    detached transport (see the module docstring)."""

    _tbd_connparams: dict[bool, dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tbd_connparams = {}
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._in_poll and not self.closed:
            try:
                self._brpop_read()  # type: ignore[no-untyped-call]
            except Empty:
                pass
            except self.connection_errors as exc:
                # The BRPOP reply went with the connection; Redis pops a message only for a
                # client it can answer, so nothing was taken off the queue for us.
                _log.info("broker connection lost while waiting for a message (%s)", exc)
        super().close()  # type: ignore[no-untyped-call]

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is not None and getattr(transport, "client", None) is not None:
            self._tbd_connparams[asynchronous] = super()._connparams(  # type: ignore[no-untyped-call]
                asynchronous=asynchronous
            )
        cached = self._tbd_connparams.get(asynchronous)
        if cached is None:
            # Never connected and already detached: a connection error, which Celery's
            # reconnect loop handles (an AttributeError would stop the worker).
            raise redis.exceptions.ConnectionError(
                "the broker connection of this channel was closed before it was opened"
            )
        return dict(cached)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with `Channel` above."""

    Channel = Channel


#: The name the transport is registered under (it shows in Celery's log lines: tbd-redis://…).
ALIAS = "tbd-redis"


def celery_options(url: str) -> dict[str, Any]:
    """Celery settings that put the broker `url` on `Transport`: for redis:// and rediss://
    URLs, nothing for other schemes (sentinel://, socket://: kombu's own transports).

    A rediss:// URL without `ssl_cert_reqs` gets what kombu gives it under its own scheme name
    (TLS without certificate checks, with kombu's warning), since kombu keys that default on the
    transport name."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        return {}
    TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")
    options: dict[str, Any] = {"broker_transport": ALIAS}
    if scheme == "rediss" and "ssl_cert_reqs" not in rest:
        _log.warning(
            "Secure redis scheme specified (rediss) with no ssl options, defaulting to "
            "insecure SSL behaviour: add ?ssl_cert_reqs=required to REDIS_URL to check the "
            "server's certificate"
        )
        options["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_NONE}
    return options
