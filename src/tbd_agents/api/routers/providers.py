"""Models of providers: GET /api/providers/{provider_id}/models and GET /api/models.

Without `refresh` the first answers the provider's configured model list; with `refresh=true`
the provider's API is asked, with the API key resolved from its token only for that call.
`GET /api/models` is the existing API's model listing (a JSON array of model objects).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import Caller, Ctx
from tbd_agents.api.schemas import json_response
from tbd_agents.domain.models import Provider
from tbd_agents.errors import TbdError
from tbd_agents.security.github import presented_github_token
from tbd_agents.services.access import owner_filters
from tbd_agents.services.copilot_models import (
    CopilotAccess,
    default_copilot_models,
    default_copilot_provider,
)
from tbd_agents.services.models import (
    fetch_models,
    list_provider_models,
    model_info,
    stored_model_infos,
)
from tbd_agents.services.privilege import outbound_guard
from tbd_agents.services.records import Records
from tbd_agents.storage.protocol import Query as StoreQuery
from tbd_agents.storage.protocol import Sort

router = APIRouter(tags=["providers"], responses=ERRORS)


class ModelsOut(BaseModel):
    provider_id: str
    default_model: str | None
    models: list[str]
    source: str


@router.get(
    "/api/providers/{provider_id}/models",
    response_model=ModelsOut,
    summary="List a provider's models",
)
async def provider_models(
    provider_id: Annotated[str, Path()],
    ctx: Ctx,
    caller: Caller,
    request: Request,
    refresh: Annotated[
        bool, Query(description="Ask the provider's API instead of the stored list.")
    ] = False,
) -> ModelsOut:
    async with ctx.store.unit_of_work() as repos:
        provider: Provider = await Records(repos, caller, Provider).get(provider_id)
        models, source = await list_provider_models(
            repos, ctx.cipher(), outbound_guard(ctx.settings), provider, refresh=refresh,
            copilot=CopilotAccess.from_settings(ctx.settings), caller=caller,
            caller_token=presented_github_token(request.headers.get("authorization"), caller.via),
        )  # fmt: skip
    return ModelsOut(
        provider_id=provider.id, default_model=provider.default_model, models=models, source=source
    )


@router.get(
    "/api/models",
    summary="List models (one provider's live listing, or every provider's configured models)",
    responses={200: {"content": {"application/json": {"schema": {"type": "array"}}}}},
)
async def list_models(
    ctx: Ctx,
    caller: Caller,
    request: Request,
    provider_id: Annotated[
        str | None,
        Query(max_length=128, description="Ask this provider's API for its models."),
    ] = None,
) -> Response:
    """A JSON array of models, each `{id, name, capabilities {supports {vision}, limits},
    policy?, billing?, provider_id, provider_name, provider_type, is_default, ...}`.

    With `provider_id` the provider's own API is asked (OpenAI-compatible `GET /models` for
    openai and custom; GitHub Copilot's `/models` after the token exchange; Anthropic's models
    API; Azure OpenAI's `/openai/models`): 502 when it fails, 422 when the provider has no
    address (or Copilot provider no GitHub token) to ask. Without it: the configured `models` /
    `default_model` of every provider you can see, then the live models of the default GitHub
    Copilot provider (agents without provider_id; `provider_id` null) when a GitHub token may
    ask for them — the caller's own, or GITHUB_TOKEN for admins. When it cannot, or Copilot
    fails, the `X-Models-Warning` header says why."""
    access = CopilotAccess.from_settings(ctx.settings)
    token = presented_github_token(request.headers.get("authorization"), caller.via)
    warning = None
    guard = outbound_guard(ctx.settings)
    async with ctx.store.unit_of_work(readonly=True) as repos:
        if provider_id is not None:
            provider: Provider = await Records(repos, caller, Provider).get(provider_id)
            listed = await fetch_models(
                repos, ctx.cipher(), guard, provider, copilot=access, caller=caller,
                caller_token=token,
            )  # fmt: skip
            items = [model_info(provider, m) for m in listed]
        else:
            query = StoreQuery(
                filters=owner_filters(Provider, caller), sort=(Sort("name"), Sort("id"))
            )
            items = [
                item
                async for p in repos.for_model(Provider).iterate(query)
                for item in stored_model_infos(p)
            ]
            policy = await guard.policy_for(repos, None)
    if provider_id is None:
        try:
            listed, warning = await default_copilot_models(access, caller, token, policy)
        except TbdError as exc:
            listed, warning = [], f"the default GitHub Copilot models are missing: {exc.message}"
        default = default_copilot_provider(access)
        items += [model_info(default, m) | {"provider_id": None} for m in listed]
    response = json_response(json.dumps(items, default=str).encode())
    if warning:
        response.headers["X-Models-Warning"] = warning
    return response
