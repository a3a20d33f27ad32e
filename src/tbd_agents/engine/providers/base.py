"""What every model provider offers the loop, plus retries that honour Retry-After.

A provider turns a `ChatRequest` into a stream of `TextDelta`s ended by one `Completion`. Retries
happen only before the first delta has been yielded (a half-streamed answer cannot be taken
back); after that a failure is reported as it is.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx
import httpx2

from tbd_agents.domain.enums import AuthType, ProviderType
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.messages import ChatRequest, Completion, StreamEvent, TextDelta
from tbd_agents.errors import (
    ConfigurationError,
    ContextTooLong,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnreachable,
)
from tbd_agents.logs import MASK, redact, url_credentials
from tbd_agents.security.outbound import (
    OutboundPolicy,
    OutboundRefused,
    http_client,
    mcp_http_client,
)
from tbd_agents.services.validation import check_headers, check_provider

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """A provider record with its secret resolved (never logged: `__repr__` hides the key)."""

    name: str
    provider_type: ProviderType
    api_key: str | None = field(default=None, repr=False)
    auth_type: AuthType = AuthType.X_API_KEY
    base_url: str | None = None
    azure_deployment: str | None = None
    azure_api_version: str | None = None
    default_model: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: What the provider's API calls may reach (`trusted` when its owner is an admin).
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)

    def http_client(self, timeout: float) -> httpx.AsyncClient:
        """The SDK's HTTP client: every request checked and pinned (security.outbound)."""
        return http_client(self.outbound, f"provider {self.name!r}", timeout=timeout)

    def http_client2(self, timeout: float) -> httpx2.AsyncClient:
        """The same for SDKs built on `httpx2` (anthropic)."""
        return mcp_http_client(self.outbound, f"provider {self.name!r}", timeout=timeout)

    def __post_init__(self) -> None:
        # Resolved tokens can put what no HTTP client sends into the URL or a header value:
        # refuse it here, naming the field, rather than as an SDK crash mid-run.
        try:
            check_provider(self.base_url, dict(self.extra_headers))
            if self.api_key:
                check_headers({"Authorization": self.api_key}, "the API key token")
        except ValueError as exc:
            raise ConfigurationError(f"provider {self.name!r}: {exc}") from None


class ChatProvider(Protocol):
    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Yield text deltas, then exactly one Completion; raise UpstreamError subclasses."""
        ...

    async def aclose(self) -> None: ...


async def complete(provider: ChatProvider, request: ChatRequest) -> Completion:
    """Run a call to the end and return only its Completion (used for summaries)."""
    result: Completion | None = None
    async for event in provider.stream(request):
        if isinstance(event, Completion):
            result = event
    if result is None:
        raise UpstreamError(f"provider {provider.name!r} ended the answer without a completion")
    return result


class RetryableError(Exception):
    """Internal: a failure worth retrying, with the server's requested wait if it gave one."""

    def __init__(self, error: UpstreamError, retry_after: float | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


#: Longest excerpt of a provider's error text we keep (events, task records, webhooks, logs).
EXCERPT_LIMIT = 300
#: A long run of key-like characters mixing letters and digits: treated as a credential.
_KEYLIKE = re.compile(r"(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,}")


def sent_secrets(settings: ProviderSettings) -> list[str]:
    """The secret values we send to the provider (API key, header values, URL password and the
    Basic credential made of it)."""
    values = [settings.api_key, *url_credentials(settings.base_url)]
    values.extend(settings.extra_headers.values())
    return [v for v in values if v]


def clean_excerpt(text: str, secrets: list[str], limit: int = EXCERPT_LIMIT) -> str:
    """`text` with the values we sent and anything key-like masked, on one line, capped."""
    text = _KEYLIKE.sub(MASK, redact(" ".join(text.split()), secrets))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_excerpt(body: object, fallback: str, secrets: list[str]) -> str:
    """What we keep of a provider's error answer: its error type/code and a bounded, redacted
    excerpt of its message (never the body as it came: an upstream may echo our key)."""
    kind: object = None
    code: object = None
    message: object = None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            kind, code, message = err.get("type"), err.get("code"), err.get("message")
        elif isinstance(err, str):
            message = err
    labels = [str(v) for v in (kind, code) if isinstance(v, (str, int)) and str(v)]
    label = clean_excerpt("/".join(labels), secrets, 80) if labels else ""
    text = clean_excerpt(str(message) if message else fallback, secrets)
    return f"{label}: {text}" if label else text


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms`, `retry-after` (seconds or HTTP date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    raw_ms = lower.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = lower.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def classify_status(
    provider: str, status: int, message: str, headers: Mapping[str, str] | None
) -> UpstreamError | RetryableError:
    """Map an HTTP error answer to our error (or to a retryable one)."""
    text = f"provider {provider!r} answered {status}: {message}"
    lowered = message.lower()
    if status in (401, 403):
        return UpstreamAuthError(
            f"{text}. Check the token named by the provider's api_key_token_name and its auth_type."
        )
    if status == 429:
        return RetryableError(
            UpstreamRateLimited(f"{text}. Rate limited; retries exhausted."),
            parse_retry_after(headers),
        )
    too_long = (
        "context_length",
        "context length",
        "too long",
        "maximum context",
        "too many tokens",
    )
    if status in (400, 413) and any(s in lowered for s in too_long):
        return ContextTooLong(
            f"{text}. The conversation exceeds the model's context window: lower the agent's "
            "budgets or set the model's context_window in ENGINE_MODEL_CATALOG so compaction starts earlier."
        )
    if status in (408, 409, 500, 502, 503, 504, 529) or status >= 500:
        return RetryableError(UpstreamError(text), parse_retry_after(headers))
    return UpstreamError(text)


def unreachable(
    provider: str, base_url: str | None, exc: BaseException
) -> RetryableError | OutboundRefused:
    if isinstance(exc.__cause__, OutboundRefused):  # the address policy, not the network
        return exc.__cause__
    where = redact(base_url) if base_url else "its default endpoint"
    detail = clean_excerpt(str(exc), url_credentials(base_url))
    return RetryableError(
        UpstreamUnreachable(
            f"provider {provider!r} could not be reached at {where} ({type(exc).__name__}: "
            f"{detail}). "
            "Check base_url and that the server is running."
        ),
        None,
    )


async def with_retries(
    provider: str,
    config: EngineConfig,
    open_stream: Callable[[], AsyncIterator[StreamEvent]],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[StreamEvent]:
    """Run `open_stream`, retrying RetryableErrors raised before the first text delta.

    Time limits are the SDK clients' (connect and per-read timeouts of ENGINE_MODEL_TIMEOUT);
    halting a call in flight is the loop's job (it cancels the consuming task).
    """
    attempt = 0
    while True:
        started = False
        try:
            async for event in open_stream():
                if isinstance(event, TextDelta):
                    started = True
                yield event
            return
        except RetryableError as exc:
            if started or attempt >= config.model_max_retries:
                raise exc.error from None
            delay = exc.retry_after
            if delay is None:
                delay = config.retry_base_delay * (2**attempt) * (0.5 + random.random())  # noqa: S311
            if delay > config.retry_max_delay:
                raise type(exc.error)(
                    f"{exc.error.message} The server asks to wait {delay:.0f} s, more than the "
                    f"{config.retry_max_delay:.0f} s the engine waits."
                ) from None
            attempt += 1
            log.info(
                "provider %s: %s; retry %d in %.2f s", provider, exc.error.message, attempt, delay
            )
            await sleep(delay)
