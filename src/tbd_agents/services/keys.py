"""API keys as a use case: create (shown once), list, revoke, and authenticate requests.

Authentication is on every request's path, so verified keys are cached in the process for
`AUTH_CACHE_SECONDS`. A key revoked through the API of the same process stops working at once; a
key revoked from the CLI (another process) stops working within that time. `last_used_at` is
written at most once per `LAST_USED_RESOLUTION` per key, never on every request.

GitHub logins and API-key owners share one namespace (record owners), so a GitHub login is
accepted only when it cannot take over another identity: a login that owns API keys not made
for GitHub (`keys create --github`), or a reserved name (`admin`, `local`, `server`) without such a key,
is refused with 403. Failed authentications are counted per client address (`FailureThrottle`):
past the limit, further failures are answered 429 with Retry-After; successes are never held.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tbd_agents.domain.auth import ApiKey, KeyScope
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import AuthenticationRequired, NotFound, PermissionDenied, TooManyAttempts
from tbd_agents.security.apikeys import generate_key, hash_key, looks_like_api_key
from tbd_agents.security.github import GitHubIdentity
from tbd_agents.services.access import Principal
from tbd_agents.services.privilege import HostCapabilities
from tbd_agents.storage.protocol import DocumentStore, Page, Query, Repositories, Sort, eq

AUTH_CACHE_SECONDS = 5.0
LAST_USED_RESOLUTION = timedelta(seconds=60)
LOCAL_IDENTITY = "local"
#: Who a request bearing GITHUB_TOKEN itself is (the existing TBD Agents' name for it).
SERVER_IDENTITY = "server"
#: Owner names a GitHub login may take only through a key made with `--github`.
RESERVED_IDENTITIES = frozenset({"admin", LOCAL_IDENTITY, SERVER_IDENTITY})

_FIX = (
    "send `Authorization: Bearer <API key>`; an admin creates keys with "
    "`tbd-agents keys create` (or POST /api/keys)"
)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    record: ApiKey
    plaintext: str


class ApiKeys:
    """Key management inside one unit of work."""

    def __init__(self, repos: Repositories) -> None:
        self.repo = repos.for_model(ApiKey)

    async def create(
        self,
        owner: str,
        *,
        scope: KeyScope = KeyScope.USER,
        name: str = "",
        expires_at: datetime | None = None,
        github: bool = False,
    ) -> CreatedKey:
        """A new key for `owner`; the plaintext is returned here and never again."""
        new = generate_key()
        record = ApiKey(
            owner=owner,
            scope=scope,
            name=name,
            prefix=new.prefix,
            key_hash=new.key_hash,
            expires_at=expires_at,
            github=github,
        )
        stored: ApiKey = await self.repo.create(record)
        return CreatedKey(stored, new.plaintext)

    async def list(
        self, *, owner: str | None, limit: int | None = 50, cursor: str | None = None
    ) -> Page[ApiKey]:
        filters = (eq("owner", owner),) if owner is not None else ()
        page: Page[ApiKey] = await self.repo.list(
            Query(filters=filters, sort=(Sort("created_at", True),), limit=limit, cursor=cursor)
        )
        return page

    async def get(self, key_id: str, *, owner: str | None) -> ApiKey:
        record: ApiKey = await self.repo.get(key_id)
        if owner is not None and record.owner != owner:
            raise NotFound("api_keys", key_id)
        return record

    async def revoke(self, key_id: str, *, owner: str | None) -> ApiKey:
        """Mark the key revoked (kept for the audit trail); idempotent."""
        record = await self.get(key_id, owner=owner)
        if record.revoked_at is not None:
            return record
        revoked: ApiKey = await self.repo.update(key_id, {"revoked_at": utcnow()})
        return revoked


@dataclass(slots=True)
class _Cached:
    principal: Principal
    key_id: str
    expires: float


@dataclass(slots=True)
class FailureThrottle:
    """Failed authentications per client address in a sliding window, in this process only."""

    limit: int = 20
    window: float = 60.0
    max_clients: int = 10_000
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            if len(self._failures) >= self.max_clients:
                self._failures.clear()
            times = self._failures[client] = deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def failed(self, client: str) -> TooManyAttempts | None:
        """Record a failure; the 429 to answer instead of the 401 once over the limit."""
        now = time.monotonic()
        times = self._recent(client, now)
        times.append(now)
        if len(times) <= self.limit:
            return None
        retry = max(1, math.ceil(times[-self.limit - 1] + self.window - now))
        return TooManyAttempts(
            f"too many failed authentications from this address ({len(times)} in "
            f"{self.window:g} s): wait {retry} s and send a valid API key",
            retry_after=retry,
        )


class Authenticator:
    """Turns an `Authorization` header into a `Principal`, or raises AuthenticationRequired."""

    def __init__(
        self,
        store: DocumentStore,
        *,
        allow_unauthenticated: bool = False,
        github: GitHubIdentity | None = None,
        github_admins: frozenset[str] = frozenset(),
        cache_seconds: float = AUTH_CACHE_SECONDS,
        host: HostCapabilities | None = None,
        throttle: FailureThrottle | None = None,
        server_token: str | None = None,
    ) -> None:
        self._store = store
        # Only a digest is kept: compared in constant time, whatever the presented length.
        self._server_digest = (
            hashlib.sha256(server_token.encode()).digest() if server_token else None
        )
        self._open = allow_unauthenticated
        self._github = github
        self._github_admins = github_admins
        self.cache_seconds = cache_seconds
        self._host = host or HostCapabilities()
        self.throttle = throttle or FailureThrottle()
        self._cache: dict[str, _Cached] = {}
        self._logins: dict[str, float] = {}  # GitHub logins checked free, until (monotonic)

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (after revocation in this process)."""
        for digest in [d for d, c in self._cache.items() if c.key_id == key_id]:
            del self._cache[digest]

    async def authenticate(self, authorization: str | None, client: str = "") -> Principal:
        """The caller; failures from `client` (its address) beyond the limit become 429."""
        try:
            return await self._authenticate(authorization)
        except AuthenticationRequired as exc:
            throttled = self.throttle.failed(client)
            if throttled is not None:
                raise throttled from exc
            raise

    async def _authenticate(self, authorization: str | None) -> Principal:
        credential = _bearer(authorization)
        if credential is None:
            if self._open:
                return Principal(
                    LOCAL_IDENTITY, KeyScope.ADMIN, via="unauthenticated", host=self._host
                )
            raise AuthenticationRequired(f"no credentials: {_FIX}")
        if self._server_digest is not None and hmac.compare_digest(
            hashlib.sha256(credential.encode()).digest(), self._server_digest
        ):
            return Principal(SERVER_IDENTITY, KeyScope.ADMIN, via="server_token", host=self._host)
        if looks_like_api_key(credential):
            return await self._api_key(credential)
        if self._github is not None:
            user = await self._github.verify(credential)
            await self._check_login(user.login)
            scope = KeyScope.ADMIN if user.login in self._github_admins else KeyScope.USER
            return Principal(user.login, scope, via="github", host=self._host)
        raise AuthenticationRequired(f"unknown credentials: {_FIX}")

    async def _check_login(self, login: str) -> None:
        """PermissionDenied if the GitHub `login` would act as an API-key identity."""
        now = time.monotonic()
        if self._logins.get(login, 0.0) > now:
            return
        async with self._store.unit_of_work(readonly=True) as repos:
            page = await repos.for_model(ApiKey).list(Query(filters=(eq("owner", login),)))
        linked = any(k.github for k in page.items)
        if not linked and (login in RESERVED_IDENTITIES or page.items):
            raise PermissionDenied(
                f"the GitHub login {login!r} is also the owner of API keys (or a reserved name) "
                "on this server, so it cannot sign in with GitHub: use one of those API keys, or "
                f"an admin links the login with `tbd-agents keys create --owner {login} --github`"
            )
        if len(self._logins) > 10_000:
            self._logins.clear()
        self._logins[login] = now + self.cache_seconds

    async def _api_key(self, credential: str) -> Principal:
        digest = hash_key(credential)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit.expires > now:
            return hit.principal
        async with self._store.unit_of_work() as repos:
            repo = repos.for_model(ApiKey)
            record: ApiKey | None = await repo.find_one(eq("key_hash", digest))
            wall = utcnow()
            if record is None or record.revoked_at is not None:
                raise AuthenticationRequired(f"this API key is unknown or revoked: {_FIX}")
            if record.expires_at is not None and record.expires_at <= wall:
                raise AuthenticationRequired(f"this API key expired at {record.expires_at}: {_FIX}")
            if record.last_used_at is None or wall - record.last_used_at > LAST_USED_RESOLUTION:
                await repo.update(record.id, {"last_used_at": wall})
        principal = Principal(
            record.owner, record.scope, via="api_key", expires_at=record.expires_at, host=self._host
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = _Cached(principal, record.id, now + self.cache_seconds)
        return principal


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationRequired(f"the Authorization header must be `Bearer <key>`: {_FIX}")
    return value.strip()
