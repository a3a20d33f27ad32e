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
from tbd_agents.errors import PermissionDenied
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


#: The setting names, quoted in every refusal so the operator knows what to change.
STDIO_SETTING = "USER_STDIO_MCP_COMMANDS"
CUSTOM_TOOLS_SETTING = "ALLOW_USER_CUSTOM_TOOLS"


@dataclass(frozen=True, slots=True)
class HostCapabilities:
    """What the operator lets non-admins run on the host (admins may always).

    - `user_stdio_commands`: executables a non-admin's stdio MCP server may start (exact match
      on the command after token resolution; `*` any). Such servers run confined.
    - `allow_user_custom_tools`: non-admins may create, check and run custom tools.
    """

    user_stdio_commands: frozenset[str] = frozenset()
    allow_user_custom_tools: bool = False
    admins: AdminDirectory = AdminDirectory()

    @classmethod
    def from_settings(cls, settings: Settings) -> HostCapabilities:
        return cls(
            user_stdio_commands=parse_names(settings.user_stdio_mcp_commands),
            allow_user_custom_tools=settings.allow_user_custom_tools,
            admins=AdminDirectory.from_settings(settings),
        )

    def user_may_start(self, command: str) -> bool:
        """True if a non-admin's stdio server may start `command` (resolved, exact)."""
        return "*" in self.user_stdio_commands or command in self.user_stdio_commands

    async def stdio_launch(self, repos: Repositories, owner: str | None, command: str) -> bool:
        """How a stdio server owned by `owner` starts `command`: False = as the server's user
        (admin owner), True = confined (allow-listed for users); PermissionDenied otherwise."""
        if await self.admins.is_admin(repos, owner):
            return False
        if self.user_may_start(command):
            return True
        raise PermissionDenied(stdio_refusal(command))

    async def custom_tools_for(self, repos: Repositories, owner: str | None) -> bool:
        """True if custom tools owned by `owner` may run."""
        return self.allow_user_custom_tools or await self.admins.is_admin(repos, owner)


def stdio_refusal(command: str) -> str:
    return (
        f"stdio MCP servers run a command on the host ({command!r}): only admins may use them "
        f"unless the operator lists the command in {STDIO_SETTING}; ask an admin to create the "
        "server, or use an sse / http (streamable HTTP) MCP server"
    )


def custom_tool_refusal() -> str:
    return (
        "custom tools execute Python on the host (in the sandbox): only admins may create, check "
        f"or run them unless the operator sets {CUSTOM_TOOLS_SETTING}=true; ask an admin"
    )


def outbound_guard(settings: Settings) -> OutboundGuard:
    """The outbound-address policy of `settings`: OUTBOUND_ALLOWED_HOSTS plus admin owners."""
    return OutboundGuard(
        HostPolicy.parse(settings.outbound_allowed_hosts), AdminDirectory.from_settings(settings)
    )
