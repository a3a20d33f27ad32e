"""API keys as a use case: create (shown once), list, revoke, and authenticate requests.

Authentication is on every request's path, so verified keys are cached in the process for
`AUTH_CACHE_SECONDS`. A key revoked through the API of the same process stops working at once; a
key revoked from the CLI (another process) stops working within that time. `last_used_at` is
written at most once per `LAST_USED_RESOLUTION` per key, never on every request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from tbd_agents.domain.auth import ApiKey, KeyScope
from tbd_agents.domain.types import utcnow
from tbd_agents.errors import AuthenticationRequired, NotFound
from tbd_agents.security.apikeys import generate_key, hash_key, looks_like_api_key
from tbd_agents.security.github import GitHubIdentity
from tbd_agents.services.access import Principal
from tbd_agents.storage.protocol import DocumentStore, Page, Query, Repositories, Sort, eq

AUTH_CACHE_SECONDS = 5.0
LAST_USED_RESOLUTION = timedelta(seconds=60)
LOCAL_IDENTITY = "local"

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
        )
        stored: ApiKey = await self.repo.create(record)
        return CreatedKey(stored, new.plaintext)

    async def list(
        self, *, owner: str | None, limit: int = 50, cursor: str | None = None
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
    ) -> None:
        self._store = store
        self._open = allow_unauthenticated
        self._github = github
        self._github_admins = github_admins
        self.cache_seconds = cache_seconds
        self._cache: dict[str, _Cached] = {}

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (after revocation in this process)."""
        for digest in [d for d, c in self._cache.items() if c.key_id == key_id]:
            del self._cache[digest]

    async def authenticate(self, authorization: str | None) -> Principal:
        credential = _bearer(authorization)
        if credential is None:
            if self._open:
                return Principal(LOCAL_IDENTITY, KeyScope.ADMIN, via="unauthenticated")
            raise AuthenticationRequired(f"no credentials: {_FIX}")
        if looks_like_api_key(credential):
            return await self._api_key(credential)
        if self._github is not None:
            user = await self._github.verify(credential)
            scope = KeyScope.ADMIN if user.login in self._github_admins else KeyScope.USER
            return Principal(user.login, scope, via="github")
        raise AuthenticationRequired(f"unknown credentials: {_FIX}")

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
        principal = Principal(record.owner, record.scope, via="api_key")
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
