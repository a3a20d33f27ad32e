"""Request-scoped dependencies: the application context, the caller, list parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tbd_agents.config import Settings
from tbd_agents.observability import logctx
from tbd_agents.security.cipher import KeyRingProvider, TokenCipher
from tbd_agents.services.access import Principal
from tbd_agents.services.keys import Authenticator
from tbd_agents.storage.protocol import DocumentStore, Filter, contains_all, eq, gte, lt

MAX_LIMIT = 1000


@dataclass(slots=True)
class ApiContext:
    """Clients built once in the lifespan and shared by every request."""

    settings: Settings
    store: DocumentStore
    keyring: KeyRingProvider
    http: httpx.AsyncClient
    auth: Authenticator
    services: dict[str, Any] = field(default_factory=dict)  # optional: knowledge, memory, …

    def cipher(self) -> TokenCipher:
        return self.keyring.cipher()


async def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


_bearer = HTTPBearer(auto_error=False, description="An API key (`tbd-agents keys create`).")


async def get_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    ctx: ApiContext = request.app.state.ctx
    client = request.client.host if request.client is not None else ""
    principal = await ctx.auth.authenticate(request.headers.get("authorization"), client)
    logctx.bind_here(user=principal.identity)  # the request's log records name the caller
    return principal


Ctx = Annotated[ApiContext, Depends(get_context)]
Caller = Annotated[Principal, Depends(get_principal)]


@dataclass(frozen=True, slots=True)
class Paging:
    """`limit` None: every matching record (what clients of the existing API expect)."""

    limit: int | None
    cursor: str | None
    filters: tuple[Filter, ...]


async def common_list_params(
    caller: Caller,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_LIMIT,
            description="Page size (max 1000). Unset: the whole list in one response. With a "
            "limit, the cursor of the next page is in the `X-Next-Cursor` header (and a "
            '`Link: <…>; rel="next"` header); no such header on the last page.',
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=2048, description="`X-Next-Cursor` of the previous page."),
    ] = None,
    owner: Annotated[
        str | None,
        Query(
            max_length=512, description="Owner identity (admins; users may only name themselves)."
        ),
    ] = None,
    created_after: Annotated[
        datetime | None, Query(description="Created at or after (ISO 8601).")
    ] = None,
    created_before: Annotated[
        datetime | None, Query(description="Created before (ISO 8601).")
    ] = None,
) -> tuple[Principal, Paging, str | None]:
    filters: list[Filter] = []
    if created_after is not None:
        filters.append(gte("created_at", created_after))
    if created_before is not None:
        filters.append(lt("created_at", created_before))
    return caller, Paging(limit, cursor, tuple(filters)), owner


CommonList = Annotated[tuple[Principal, Paging, str | None], Depends(common_list_params)]


def tag_filter(tags: list[str] | None) -> tuple[Filter, ...]:
    return (contains_all("tags", tags),) if tags else ()


def eq_filters(**values: Any) -> tuple[Filter, ...]:
    return tuple(eq(k, v) for k, v in values.items() if v is not None)
