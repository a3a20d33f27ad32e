"""The one worker thread the migration does its CPU work in (BSON decoding, conversion, hashing).

One thread rather than asyncio's default pool: the work overlaps with PostgreSQL writing the
previous batch just as well, and every large value is allocated by the same thread, so the
allocator keeps one arena for them instead of one per pool thread (measured: peak RSS of a run
with 20,000-document batches fell by about a third).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None


def _worker() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tbd-migration")
    return _executor


async def in_worker(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn(*args, **kwargs)` in the migration's worker thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_worker(), functools.partial(fn, *args, **kwargs))
