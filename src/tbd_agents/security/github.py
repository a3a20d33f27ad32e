"""GitHub identity: a GitHub token sent as Bearer credentials, validated against GitHub.

The login GitHub returns for the token becomes the caller's identity (the `github_user` /
`created_by` value of the records it creates). Answers are cached for a short time, keyed by a
digest of the token (the token itself is never kept), so GitHub is asked at most once per token
per `ttl` seconds, and a revoked GitHub token stops working within that time.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import httpx

from tbd_agents.errors import AuthenticationRequired, UpstreamError


@dataclass(frozen=True, slots=True)
class GitHubUser:
    login: str


def presented_github_token(authorization: str | None, via: str) -> str | None:
    """The GitHub token a request authenticated with (`via` "github", see services/keys.py),
    for the calls made on the caller's behalf (GitHub Copilot); None for other credentials.
    The server's own GITHUB_TOKEN (`via` "server_token") is not the caller's: None."""
    if via != "github" or not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class GitHubIdentity:
    """Validate GitHub tokens with `GET {api_url}/user`, caching results for `ttl` seconds."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        api_url: str,
        *,
        ttl: float = 60.0,
        max_entries: int = 10_000,
    ) -> None:
        self._client = client
        self._url = api_url.rstrip("/") + "/user"
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, GitHubUser | None]] = {}

    async def verify(self, token: str) -> GitHubUser:
        """The GitHub user owning `token`; AuthenticationRequired if GitHub rejects it."""
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            user = hit[1]
        else:
            user = await self._ask(token)
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, user)
        if user is None:
            raise AuthenticationRequired(
                "GitHub did not accept this token: send a valid GitHub token or a TBD Agents "
                "API key (`tbd-agents keys create`)"
            )
        return user

    async def _ask(self, token: str) -> GitHubUser | None:
        try:
            response = await self._client.get(
                self._url,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/vnd.github+json",
                },
                timeout=10.0,
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"GitHub could not be reached to check the token ({type(exc).__name__})"
            ) from None
        if response.status_code in (401, 403):
            return None
        if response.status_code != 200:
            raise UpstreamError(f"GitHub answered {response.status_code} when checking the token")
        login = response.json().get("login")
        if not isinstance(login, str) or not login:
            raise UpstreamError("GitHub's /user answer has no login")
        return GitHubUser(login)
