"""Models of a provider: GET /api/providers/{provider_id}/models.

Without `refresh` the answer is the provider's configured model list. With `refresh=true` the
provider's OpenAI-compatible `GET {base_url}/models` is asked, with the API key resolved from its
token only for that call.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import Caller, Ctx
from tbd_agents.domain.models import Provider
from tbd_agents.services.models import list_provider_models
from tbd_agents.services.privilege import outbound_guard
from tbd_agents.services.records import Records

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
    refresh: Annotated[
        bool, Query(description="Ask the provider's API instead of the stored list.")
    ] = False,
) -> ModelsOut:
    async with ctx.store.unit_of_work() as repos:
        provider: Provider = await Records(repos, caller, Provider).get(provider_id)
        models, source = await list_provider_models(
            repos, ctx.cipher(), outbound_guard(ctx.settings), provider, refresh=refresh
        )
    return ModelsOut(
        provider_id=provider.id, default_model=provider.default_model, models=models, source=source
    )
