"""Which record owners are operators (admins), decided when a record is used, not only when saved.

Some capabilities act on the host or the network it sits in: stdio MCP servers and custom tools
execute code, and provider / MCP / knowledge URLs may point at internal addresses. Who may use
them depends on whether the record's owner is an admin. The API knows the caller's scope, but a
run (started by a schedule, a worker, or another user's workflow) only knows the owner's
identity, so this module answers "is this identity an admin right now?":

- an identity with an active admin API key (not revoked, not expired) is an admin;
- with GitHub authentication, a login listed in GITHUB_ADMIN_USERS is an admin;
- with ALLOW_UNAUTHENTICATED, the `local` identity (every unauthenticated request) is an admin;
- records without an owner (migrated from a deployment without identities) count as the
  operator's: only admins can see or change them.

Revoking the last admin key of an identity takes its records' privileges away at their next use.
"""

from __future__ import annotations

from dataclasses import dataclass

from tbd_agents.config import Settings
from tbd_agents.domain.auth import ApiKey, KeyScope
from tbd_agents.domain.types import utcnow
from tbd_agents.security.outbound import HostPolicy, OutboundGuard
from tbd_agents.storage.protocol import Query, Repositories, eq, is_null

LOCAL_IDENTITY = "local"


def parse_names(spec: str) -> frozenset[str]:
    """A comma-separated setting as a set of names (blank items ignored)."""
    return frozenset(item.strip() for item in spec.split(",") if item.strip())


@dataclass(frozen=True, slots=True)
class AdminDirectory:
    """Answers whether an owner identity is an admin (see the module docstring)."""

    github_admins: frozenset[str] = frozenset()
    local_is_admin: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminDirectory:
        admins = parse_names(settings.github_admin_users) if settings.github_auth else frozenset()
        return cls(github_admins=admins, local_is_admin=settings.allow_unauthenticated)

    async def is_admin(self, repos: Repositories, owner: str | None) -> bool:
        """True if records owned by `owner` may use admin-only capabilities."""
        if owner is None:
            return True
        if self.local_is_admin and owner == LOCAL_IDENTITY:
            return True
        if owner in self.github_admins:
            return True
        query = Query(
            filters=(eq("owner", owner), eq("scope", KeyScope.ADMIN.value), is_null("revoked_at")),
            limit=50,
        )
        now = utcnow()
        page = await repos.for_model(ApiKey).list(query)
        return any(key.expires_at is None or key.expires_at > now for key in page.items)


def outbound_guard(settings: Settings) -> OutboundGuard:
    """The outbound-address policy of `settings`: OUTBOUND_ALLOWED_HOSTS plus admin owners."""
    return OutboundGuard(
        HostPolicy.parse(settings.outbound_allowed_hosts), AdminDirectory.from_settings(settings)
    )
