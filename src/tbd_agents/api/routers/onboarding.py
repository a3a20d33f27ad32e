"""A provider set up in one step with its API key (the dashboard's first-run wizard).

* `POST /api/providers/test-connection`: ask a provider that is not stored yet for its models,
  with the key given in the body; nothing is stored.
* `POST /api/providers/with-key`: store the key as a token named after the provider and the
  provider naming that token, in one transaction: if the provider is refused (a taken name, a
  bad address), the token is not kept either.

A refusal of the provider (401/403 to its model listing) is a 422 on `api_key` that says what to
do; an unreachable provider or another failure is a 502 that says so.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tbd_agents.api.crud import ERRORS, outbound_allow_list, record_response
from tbd_agents.api.deps import Caller, Ctx
from tbd_agents.api.present import present_one
from tbd_agents.api.schemas import create_schema
from tbd_agents.domain.enums import AuthType, ProviderType
from tbd_agents.domain.models import Provider, Token
from tbd_agents.errors import InvalidData, UpstreamError
from tbd_agents.services.catalog import check_saved_addresses, records_for
from tbd_agents.services.models import fetch_models
from tbd_agents.services.privilege import outbound_guard
from tbd_agents.storage.protocol import eq

router = APIRouter(tags=["providers"], responses=ERRORS)

#: What a token name may hold (the `{{token:NAME}}` reference syntax).
_NOT_IN_TOKEN_NAME = re.compile(r"[^A-Za-z0-9_.\-]+")


class ConnectionIn(BaseModel):
    """Where the provider is and the key it takes."""

    model_config = ConfigDict(extra="forbid")

    provider_type: ProviderType = ProviderType.OPENAI
    base_url: str | None = Field(
        default=None,
        max_length=2048,
        description="The API's address (needed for custom, OpenAI-compatible servers).",
    )
    api_key: str = Field(
        min_length=1,
        max_length=8192,
        description="The provider's API key (printable ASCII, as an HTTP header carries it).",
    )
    auth_type: AuthType = AuthType.X_API_KEY
    azure_deployment: str | None = Field(default=None, max_length=512)
    azure_api_version: str | None = Field(default=None, max_length=64)

    @field_validator("api_key")
    @classmethod
    def _sendable(cls, value: str) -> str:
        value = value.strip()
        if not value or not all("!" <= c <= "~" for c in value):
            raise ValueError(
                "an API key is printable ASCII without spaces: check that the whole key, and "
                "only the key, was pasted"
            )
        return value


class ProviderWithKeyIn(ConnectionIn):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    default_model: str | None = Field(default=None, max_length=512)
    models: list[str] = Field(default_factory=list, max_length=1000)


class ConnectionOut(BaseModel):
    models: list[str] = Field(description="The model ids the provider lists, sorted.")


def _provider_values(body: ConnectionIn) -> dict[str, Any]:
    values = body.model_dump(exclude={"api_key"}, exclude_none=True)
    if isinstance(body, ProviderWithKeyIn):
        values.setdefault("name", body.name)
    values.setdefault("name", "connection test")
    return values


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    """`values` checked as a POST /api/providers body would be (422 naming the field)."""
    try:
        body = create_schema(Provider).model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "base_url"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise InvalidData(message, details={"field": where}) from None
    checked: dict[str, Any] = body.model_dump(exclude_unset=False)
    return checked


def _refused(exc: UpstreamError) -> InvalidData | UpstreamError:
    status = exc.details.get("upstream_status")
    if status in (401, 403):
        return InvalidData(
            f"The provider refused the key ({status}). Check the key and try again.",
            details={"field": "api_key", "upstream_status": status},
        )
    if status == 404:
        return InvalidData(
            "The provider has no model listing at this address (404). Check the base URL: "
            "OpenAI-compatible servers usually end in /v1.",
            details={"field": "base_url", "upstream_status": status},
        )
    if status is None:
        return UpstreamError(
            f"{exc.message[:1].upper()}{exc.message[1:]}. Check the base URL and that the "
            "server is running, then try again."
        )
    return exc


@router.post(
    "/api/providers/test-connection",
    response_model=ConnectionOut,
    summary="Ask a provider (not stored) for its models with the key given",
)
async def test_connection(body: Annotated[ConnectionIn, Body()], ctx: Ctx, caller: Caller) -> Any:
    values = _checked(_provider_values(body))
    check_saved_addresses(Provider, values, caller, outbound_allow_list(ctx))
    provider = Provider(**values, created_by=caller.identity)
    async with ctx.store.unit_of_work(readonly=True) as repos:
        try:
            listed = await fetch_models(
                repos, ctx.cipher(), outbound_guard(ctx.settings), provider, caller=caller,
                api_key=body.api_key,
            )  # fmt: skip
        except UpstreamError as exc:
            raise _refused(exc) from None
    return ConnectionOut(models=sorted({str(m["id"]) for m in listed}))


async def _free_token_name(repos: Any, provider_name: str) -> str:
    stem = _NOT_IN_TOKEN_NAME.sub("-", provider_name).strip("-.")[:150] or "provider"
    repo = repos.for_model(Token)
    for n in range(1, 100):
        name = f"{stem}-api-key" + ("" if n == 1 else f"-{n}")
        if await repo.find_one(eq("name", name)) is None:
            return name
    raise InvalidData("no free token name for this provider: choose another provider name")


@router.post(
    "/api/providers/with-key",
    status_code=201,
    summary="Create a provider and the token holding its API key, in one step",
)
async def create_with_key(
    body: Annotated[ProviderWithKeyIn, Body()], ctx: Ctx, caller: Caller
) -> Response:
    """The created provider (as `GET /api/providers/{id}` answers it); its
    `api_key_token_name` names the new token. Nothing is stored when either is refused."""
    caller.require_write()
    checked = _checked(_provider_values(body))
    check_saved_addresses(Provider, checked, caller, outbound_allow_list(ctx))
    async with ctx.store.unit_of_work() as repos:
        token_name = await _free_token_name(repos, body.name)
        await records_for(Token, repos, caller, ctx.cipher).create(
            {"name": token_name, "value": body.api_key,
             "description": f"API key of the provider {body.name!r}"}
        )  # fmt: skip
        checked["api_key_token_name"] = token_name
        provider = await records_for(Provider, repos, caller, ctx.cipher).create(checked)
        answer = await present_one(provider, repos, ctx)
    return record_response(answer, provider, 201)
