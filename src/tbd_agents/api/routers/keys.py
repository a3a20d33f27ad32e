"""API keys over HTTP (/api/keys) and the caller's own identity (/api/me)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import MAX_LIMIT, Caller, Ctx
from tbd_agents.api.schemas import page_headers
from tbd_agents.domain.auth import ApiKey, KeyScope
from tbd_agents.errors import InvalidData, PermissionDenied
from tbd_agents.services.access import Principal
from tbd_agents.services.keys import ApiKeys
from tbd_agents.services.validation import Input

router = APIRouter(tags=["auth"], responses=ERRORS)


class MeOut(BaseModel):
    identity: str
    scope: KeyScope
    via: str


class KeyCreate(Input):
    name: str = Field(default="", max_length=200)
    owner: str | None = Field(
        default=None, min_length=1, max_length=512, description="Admins only; default: the caller."
    )
    scope: KeyScope = KeyScope.USER
    expires_at: datetime | None = None
    github: bool = Field(
        default=False, description="Admins only: the owner is a GitHub login linked to this key."
    )


class KeyOut(BaseModel):
    id: str
    name: str
    owner: str
    scope: KeyScope
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None
    github: bool = False


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown this once, store it now.")


def _out(record: ApiKey) -> KeyOut:
    return KeyOut.model_validate(record.model_dump(exclude={"key_hash", "updated_at"}))


@router.get("/api/me", response_model=MeOut, summary="Who the credentials belong to")
async def me(caller: Caller) -> MeOut:
    return MeOut(identity=caller.identity, scope=caller.scope, via=caller.via)


@router.post("/api/keys", status_code=201, response_model=KeyCreated, summary="Create an API key")
async def create_key(body: KeyCreate, ctx: Ctx, caller: Caller) -> KeyCreated:
    caller.require_write()
    owner = body.owner or caller.identity
    if not caller.is_admin and (
        owner != caller.identity or body.scope is KeyScope.ADMIN or body.github
    ):
        raise PermissionDenied(
            "users may create keys only for themselves, without the admin scope or --github"
        )
    _check_expiry(caller, body.expires_at)
    async with ctx.store.unit_of_work() as repos:
        created = await ApiKeys(repos).create(
            owner, scope=body.scope, name=body.name, expires_at=body.expires_at, github=body.github
        )
    return KeyCreated(**_out(created.record).model_dump(), key=created.plaintext)


def _check_expiry(caller: Principal, expires_at: datetime | None) -> None:
    """A key made with an expiring key may not outlive it (else expiry means nothing)."""
    limit = caller.expires_at
    if limit is None:
        return
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)  # stored as UTC, compared as UTC
    if expires_at is None or expires_at > limit:
        raise InvalidData(
            f"expires_at: this API key expires at {limit.isoformat()}, so keys it creates must "
            "expire too, no later than that: give expires_at up to that time",
            details={"field": "expires_at"},
        )


@router.get("/api/keys", response_model=list[KeyOut], summary="List API keys (yours; admins: all)")
async def list_keys(
    request: Request,
    response: Response,
    ctx: Ctx,
    caller: Caller,
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT)] = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    owner: Annotated[str | None, Query(max_length=512)] = None,
) -> list[KeyOut]:
    if not caller.is_admin and owner not in (None, caller.identity):
        raise PermissionDenied("only admins may list other owners' keys")
    scope_owner = owner if caller.is_admin else caller.identity
    async with ctx.store.unit_of_work() as repos:
        page = await ApiKeys(repos).list(owner=scope_owner, limit=limit, cursor=cursor)
    response.headers.update(page_headers(request.url, page.next_cursor))
    return [_out(k) for k in page.items]


@router.delete("/api/keys/{key_id}", status_code=204, summary="Revoke an API key")
async def revoke_key(key_id: Annotated[str, Path()], ctx: Ctx, caller: Caller) -> Response:
    caller.require_write()
    async with ctx.store.unit_of_work() as repos:
        record = await ApiKeys(repos).revoke(
            key_id, owner=None if caller.is_admin else caller.identity
        )
    ctx.auth.forget(record.id)
    return Response(status_code=204)
