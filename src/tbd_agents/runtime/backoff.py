"""Backing off in the loops that must outlive outages (upkeep, scheduler).

A loop that fails because the database or Redis is down keeps going: it waits longer after each
failed round (base, twice that, four times … up to a cap) instead of hammering the server and
flooding the log, and is back to its normal pace after the first round that works.
"""

from __future__ import annotations

import logging
import time

_log = logging.getLogger(__name__)


class Backoff:
    """The pause before the next round of one loop, from how the last rounds went.

    The first failure of a series is logged with its traceback, the next ones as one line each
    (one per pause, so at most one every `cap` seconds), and the recovery once."""

    def __init__(self, what: str, base: float, cap: float) -> None:
        self.what = what
        self.base = base
        self.cap = max(cap, base)
        self.failures = 0
        self._since = 0.0

    def failed(self, exc: BaseException) -> float:
        """Record a failed round; the pause before the next one."""
        self.failures += 1
        pause: float = min(self.base * 2.0 ** (self.failures - 1), self.cap)
        if self.failures == 1:
            self._since = time.monotonic()
            _log.error("%s failed; retrying in %g s", self.what, pause, exc_info=exc)
        else:
            _log.warning(
                "%s failed again (%d times in %.0f s): %s: %s; retrying in %g s",
                self.what,
                self.failures,
                time.monotonic() - self._since,
                type(exc).__name__,
                exc,
                pause,
            )
        return pause

    def succeeded(self) -> float:
        """Record a round that worked; the normal pause."""
        if self.failures:
            _log.warning(
                "%s works again after %d failed rounds (%.0f s)",
                self.what,
                self.failures,
                time.monotonic() - self._since,
            )
            self.failures = 0
        return self.base
