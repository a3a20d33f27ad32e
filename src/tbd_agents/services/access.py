"""Who is calling, and which records that caller may see and change.

Every stored record has an owner: the model's `owner_field` (`created_by` or `github_user`) holds
the caller's identity when the record is created. Child records (chat messages, knowledge items,
task executions) have no owner of their own; they belong to whoever owns their parent. Users see
and change only their own records; admins see and change all of them. A record the caller may not
see is reported as not found, so ids of other users' records leak nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.models import Entity
from tbd_agents.errors import NotFound, PermissionDenied
from tbd_agents.services.privilege import (
    HostCapabilities,
    custom_tool_refusal,
    stdio_refusal,
)
from tbd_agents.storage.protocol import Filter, eq


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its identity (stored as record owner) and its scope."""

    identity: str
    scope: KeyScope
    via: str = "api_key"  # api_key | github | unauthenticated | server_token (GITHUB_TOKEN)
    #: When the credentials stop working (an expiring API key); keys it creates may not outlive it.
    expires_at: datetime | None = None
    #: What the operator lets non-admins run on the host (services/privilege.py).
    host: HostCapabilities = field(default_factory=HostCapabilities, compare=False)

    @property
    def is_admin(self) -> bool:
        return self.scope is KeyScope.ADMIN

    @property
    def can_write(self) -> bool:
        return self.scope is not KeyScope.READ_ONLY

    def require_write(self) -> None:
        if not self.can_write:
            raise PermissionDenied(
                "this API key is read-only: use a key created without --read-only to change data"
            )

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDenied(
                "this operation needs an admin key (`tbd-agents keys create --admin`)"
            )

    def require_custom_tools(self) -> None:
        """PermissionDenied unless this caller may create, check or run custom tools."""
        if not self.is_admin and not self.host.allow_user_custom_tools:
            raise PermissionDenied(custom_tool_refusal())

    def require_stdio(self, command: str) -> None:
        """PermissionDenied unless this caller may save a stdio MCP server starting `command`
        (given literally: a `{{token:…}}` command cannot be checked before it runs)."""
        if self.is_admin:
            return
        if "{{" in command or not self.host.user_may_start(command):
            raise PermissionDenied(stdio_refusal(command))


def owner_filters(model: type[Entity], principal: Principal) -> tuple[Filter, ...]:
    """Filters restricting `model` (an owned entity) to what `principal` may see."""
    field = model.owner_field
    if principal.is_admin or field is None:
        return ()
    return (eq(field, principal.identity),)


def may_see(record: Entity, principal: Principal) -> bool:
    field = type(record).owner_field
    if principal.is_admin or field is None:
        return True
    return bool(getattr(record, field) == principal.identity)


def ensure_visible(record: Entity, principal: Principal) -> None:
    """NotFound (never 403) for a record the principal may not see."""
    if not may_see(record, principal):
        raise NotFound(type(record).collection, record.id)
