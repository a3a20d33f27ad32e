"""GitHub Copilot as a chat provider: a GitHub token exchanged for a Copilot session token.

Copilot's chat API does not take a GitHub token. The client first asks
`GET {COPILOT_TOKEN_URL}` with `Authorization: token <github token>` and gets a short-lived
session token, the time to refresh it and the API endpoint of the account's plan
(`endpoints.api`, e.g. https://api.individual.githubcopilot.com). Chat and model-listing calls
then send `Authorization: Bearer <session token>` plus Copilot's editor headers.

Session tokens are cached in the process per digest of (token URL, GitHub token) — the GitHub
token itself is never a key — until `refresh_in` (or shortly before `expires_at`), and replaced
once when the chat API answers 401 (a token revoked or expired early). The exchange goes through
the outbound HTTP client of security/outbound.py, with the provider owner's policy.

A key that already is a Copilot session token (`tid=…;exp=…`, what the exchange returns) is
sent as it is, without an exchange: operators who mint session tokens elsewhere (or a proxy
that expects them) keep working, and a session token is never sent to the token URL.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from tbd_agents.domain.enums import AuthType
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.messages import ChatRequest, StreamEvent
from tbd_agents.engine.providers.base import (
    ProviderSettings,
    RetryableError,
    clean_excerpt,
)
from tbd_agents.engine.providers.openai_compat import (
    COPILOT_HEADERS,
    COPILOT_URL,
    OpenAICompatProvider,
    build_client,
)
from tbd_agents.errors import UpstreamAuthError, UpstreamError, UpstreamUnreachable
from tbd_agents.security.outbound import OutboundPolicy, http_client

log = logging.getLogger(__name__)

DEFAULT_TOKEN_URL = "https://api.github.com/copilot_internal/v2/token"  # noqa: S105 (a URL)
#: Refresh this long before `expires_at` when the exchange gives no `refresh_in`.
EXPIRY_MARGIN = 60.0
#: Most session tokens kept in one process (the cache is emptied when full).
MAX_SESSIONS = 1000

_FIX = (
    "the GitHub token has no Copilot access or needs the copilot scope: use a token of an "
    "account with a GitHub Copilot subscription (a classic PAT with the `copilot` scope or a "
    "Copilot OAuth token), set as the provider's api_key_token_name or GITHUB_TOKEN"
)


@dataclass(frozen=True, slots=True)
class CopilotSession:
    """A Copilot session token (never logged) and where to use it."""

    token: str = field(repr=False)
    #: `endpoints.api` of the exchange answer (None: it named none).
    api: str | None
    #: time.time() after which the token is exchanged again.
    refresh_at: float


_sessions: dict[str, CopilotSession] = {}


def is_session_token(key: str) -> bool:
    """A Copilot session token (`tid=…;exp=…;…`) rather than a GitHub token."""
    return key.startswith("tid=")


def _digest(github_token: str, token_url: str) -> str:
    return hashlib.sha256(f"{token_url}\n{github_token}".encode()).hexdigest()


def forget_sessions() -> None:
    """Drop every cached session token (tests; a GITHUB_TOKEN rotation)."""
    _sessions.clear()


async def _exchange(
    github_token: str, token_url: str, policy: OutboundPolicy, time_limit: float
) -> CopilotSession:
    """Ask the token URL for a session token. Raises UpstreamAuthError (401/403/404: the token
    has no Copilot access), RetryableError (network, 5xx), UpstreamError (anything else)."""
    headers = {
        **COPILOT_HEADERS,
        "Authorization": f"token {github_token}",
        "Accept": "application/json",
    }
    try:
        async with http_client(policy, "GitHub Copilot token exchange", timeout=time_limit) as http:
            response = await http.get(token_url, headers=headers)
    except httpx.HTTPError as exc:
        unreachable = UpstreamUnreachable(
            f"the GitHub Copilot token exchange at {token_url} could not be reached "
            f"({type(exc).__name__}): check COPILOT_TOKEN_URL and the network"
        )
        raise RetryableError(unreachable, None) from None
    status = response.status_code
    if status in (401, 403, 404):
        raise UpstreamAuthError(f"GitHub refused the Copilot token exchange ({status}): {_FIX}")
    if status != 200:
        detail = clean_excerpt(response.text, [github_token], 160)
        error = UpstreamError(f"the GitHub Copilot token exchange answered {status}: {detail}")
        if status >= 500 or status == 429:
            raise RetryableError(error, None)
        raise error
    try:
        body: Any = response.json()
        token = body["token"]
        if not isinstance(token, str) or not token:
            raise ValueError("empty token")
    except (ValueError, KeyError, TypeError):
        raise UpstreamError(
            "the GitHub Copilot token exchange answer has no token: check COPILOT_TOKEN_URL"
        ) from None
    now = time.time()
    refresh_at = now + 25 * 60
    expires = body.get("expires_at")
    if isinstance(expires, (int, float)):
        refresh_at = min(refresh_at, float(expires) - EXPIRY_MARGIN)
    refresh_in = body.get("refresh_in")
    if isinstance(refresh_in, (int, float)):
        refresh_at = min(refresh_at, now + float(refresh_in))
    endpoints = body.get("endpoints")
    api = endpoints.get("api") if isinstance(endpoints, dict) else None
    return CopilotSession(token, api if isinstance(api, str) and api else None, refresh_at)


async def copilot_session(
    github_token: str,
    *,
    token_url: str,
    policy: OutboundPolicy,
    time_limit: float = 15.0,
    force: bool = False,
) -> CopilotSession:
    """The cached session token of `github_token`, exchanged when missing, due or `force`d.
    Raises RetryableError for network and 5xx failures (the provider retries them)."""
    key = _digest(github_token, token_url)
    hit = _sessions.get(key)
    if hit is not None and not force and hit.refresh_at > time.time():
        return hit
    session = await _exchange(github_token, token_url, policy, time_limit)
    if len(_sessions) >= MAX_SESSIONS:
        _sessions.clear()
    _sessions[key] = session
    log.debug("copilot session token exchanged (endpoint %s)", session.api)
    return session


def api_base(session: CopilotSession, own_base_url: str | None, api_url: str | None) -> str:
    """Where chat and model calls go: the provider's base_url, else COPILOT_API_URL, else the
    endpoint the exchange named, else api.githubcopilot.com."""
    return own_base_url or api_url or session.api or COPILOT_URL


class CopilotProvider(OpenAICompatProvider):
    """The OpenAI-compatible provider with the session token in place of the GitHub token."""

    def __init__(self, settings: ProviderSettings, config: EngineConfig) -> None:
        key = settings.api_key
        self._github = settings
        self._exchange = bool(key) and settings.auth_type is not AuthType.NONE
        self._exchange = self._exchange and not is_session_token(key or "")
        self._session: CopilotSession | None = None
        self._last_status = 0
        # Until the first exchange the client holds no credential (never the GitHub token).
        super().__init__(replace(settings, api_key=None) if self._exchange else settings, config)

    async def _use_session(self, force: bool) -> None:
        try:
            session = await copilot_session(
                self._github.api_key or "",
                token_url=self.config.copilot_token_url,
                policy=self._github.outbound,
                time_limit=min(self.config.model_timeout, 30.0),
                force=force,
            )
        except UpstreamError as exc:
            raise type(exc)(f"provider {self.name!r}: {exc.message}") from None
        if session is self._session:
            return
        self._session = session
        self.settings = replace(
            self._github,
            api_key=session.token,
            auth_type=AuthType.BEARER,
            base_url=api_base(session, self._github.base_url, self.config.copilot_api_url),
        )
        await self._client.close()
        http = self.settings.http_client(self.config.model_timeout)
        http.event_hooks["response"].append(self._note_status)
        self._client = build_client(self.settings, self.config, http=http)

    async def _note_status(self, response: httpx.Response) -> None:
        self._last_status = response.status_code

    async def _stream_once(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        if not self._exchange:
            async for event in super()._stream_once(request):
                yield event
            return
        for attempt in (0, 1):
            await self._use_session(force=attempt == 1)
            self._last_status = 0
            try:
                async for event in super()._stream_once(request):
                    yield event
                return
            except UpstreamAuthError:
                # A 401 is an expired or revoked session token: exchange once more and retry.
                if attempt or self._last_status != 401:
                    raise
                log.info("provider %s: session token refused (401); exchanging again", self.name)


async def copilot_models(
    github_token: str,
    *,
    token_url: str,
    api_url: str | None,
    base_url: str | None,
    policy: OutboundPolicy,
    extra_headers: dict[str, str] | None = None,
    time_limit: float = 15.0,
) -> list[dict[str, Any]]:
    """Copilot's `GET {api}/models` listing (`data`: objects with at least `id`), through the
    exchanged session token. UpstreamAuthError / UpstreamError / UpstreamUnreachable."""
    try:
        session = await copilot_session(
            github_token, token_url=token_url, policy=policy, time_limit=time_limit
        )
    except RetryableError as exc:
        raise exc.error from None
    url = api_base(session, base_url, api_url).rstrip("/") + "/models"
    headers = {
        **(extra_headers or {}),
        **COPILOT_HEADERS,
        "Authorization": f"Bearer {session.token}",
    }
    try:
        async with http_client(policy, "GitHub Copilot models", timeout=time_limit) as http:
            response = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise UpstreamUnreachable(
            f"GitHub Copilot could not be reached for its models ({type(exc).__name__})"
        ) from None
    if response.status_code != 200:
        raise UpstreamError(f"GitHub Copilot answered {response.status_code} to GET /models")
    try:
        data = response.json().get("data", [])
        return [m for m in data if isinstance(m, dict) and "id" in m]
    except (ValueError, AttributeError):
        raise UpstreamError("GitHub Copilot's /models answer is not the expected JSON") from None


__all__ = [
    "DEFAULT_TOKEN_URL",
    "CopilotProvider",
    "CopilotSession",
    "copilot_models",
    "copilot_session",
    "forget_sessions",
    "is_session_token",
]
