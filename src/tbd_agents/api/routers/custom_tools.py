"""Custom tool routes of the existing API beyond CRUD: `.py` upload and the env var → token
mapping. Validate and run are in `tool_checks.py`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Response, UploadFile
from pydantic import BaseModel, Field

from tbd_agents.api.crud import ERRORS, outbound_allow_list
from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.api.present import masked_value
from tbd_agents.api.routers.knowledge import parse_tags
from tbd_agents.api.schemas import json_response, output_schema, record_json
from tbd_agents.domain.models import CustomTool, Token
from tbd_agents.services.catalog import check_saved_addresses, records_for
from tbd_agents.services.custom_tools import env_mapping, owner_tokens, read_upload, remap_env
from tbd_agents.services.records import Records
from tbd_agents.services.tool_schema import infer_parameters_schema
from tbd_agents.services.validation import Input

log = logging.getLogger("tbd_agents.api")
router = APIRouter(tags=["custom tools"], responses=ERRORS)
ToolId = Annotated[str, Path(description="Custom tool id.")]


@router.post(
    "/api/custom-tools/upload",
    status_code=201,
    response_model=output_schema(CustomTool),
    summary="Create a custom tool from an uploaded .py file",
)
async def upload_tool(
    ctx: Ctx,
    caller: Caller,
    file: Annotated[UploadFile, File(description="The tool's source, a .py file.")],
    name: Annotated[
        str | None, Form(max_length=200, description="Default: the file name's stem.")
    ] = None,
    description: Annotated[
        str | None, Form(max_length=10_000, description='Default: "Uploaded from <file>".')
    ] = None,
    tags: Annotated[
        list[str] | None,
        Form(description="A JSON array string, comma-separated names, or repeated fields."),
    ] = None,
) -> Response:
    """400 for a file that is not `.py`; 422 when the source does not parse or has no entry
    point (`run`, or a function named like the tool). parameters_schema is inferred from the
    entry point's signature."""
    caller.require_write()
    caller.require_custom_tools()
    uploaded = read_upload(file.filename, await file.read(), name or None, description)
    values: dict[str, Any] = {
        "name": uploaded.name,
        "description": uploaded.description,
        "source_code": uploaded.source_code,
        "parameters_schema": infer_parameters_schema(uploaded.source_code, uploaded.name),
        "tags": parse_tags(tags),
    }
    check_saved_addresses(CustomTool, values, caller, outbound_allow_list(ctx))
    async with ctx.store.unit_of_work() as repos:
        tool = await records_for(CustomTool, repos, caller, ctx.cipher).create(values)
    return json_response(record_json(tool), 201)


class EnvVarOut(BaseModel):
    env_var: str
    current_token: str | None = Field(description="The token the value names, if exactly one.")
    template: str = Field(description="The stored value (a literal or {{token:NAME}}).")


class TokenRefOut(BaseModel):
    id: str
    name: str
    description: str
    masked_value: str = Field(
        description='"…" and the last 4 characters of the secret, or "****" (as GET /api/tokens).'
    )


class EnvMappingOut(BaseModel):
    tool_id: str
    tool_name: str
    env_vars: list[EnvVarOut]
    available_tokens: list[TokenRefOut] = Field(
        description="Tokens the tool's owner has (what {{token:NAME}} resolves among)."
    )


class EnvMappingIn(Input):
    env_var_mapping: dict[
        Annotated[str, Field(min_length=1, max_length=200)],
        Annotated[str, Field(max_length=200)],
    ] = Field(description='{"ENV_VAR": "token name"}; an empty name clears the value.')


@router.get(
    "/api/custom-tools/{tool_id}/env-mapping",
    response_model=EnvMappingOut,
    summary="Show which token each env var of a custom tool uses",
)
async def get_env_mapping(tool_id: ToolId, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    async with ctx.store.unit_of_work(readonly=True) as repos:
        tool: CustomTool = await Records(repos, caller, CustomTool).get(tool_id)
        tokens = await owner_tokens(repos, tool.created_by)
    return env_mapping(tool, tokens, _masker(ctx))


@router.put(
    "/api/custom-tools/{tool_id}/env-mapping",
    response_model=EnvMappingOut,
    summary="Point env vars of a custom tool at tokens",
)
async def put_env_mapping(
    tool_id: ToolId, body: EnvMappingIn, ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    """Values are stored as `{{token:NAME}}`. Only env vars already in env_config and tokens
    the tool's owner has are accepted (422 naming them); an empty name clears the value."""
    async with ctx.store.unit_of_work() as repos:
        tool, tokens = await remap_env(repos, caller, ctx.cipher, tool_id, body.env_var_mapping)
    return env_mapping(tool, tokens, _masker(ctx))


def _masker(ctx: ApiContext) -> Callable[[Token], str]:
    """A token's `masked_value`, as the token routes show it."""

    def mask(token: Token) -> str:
        try:
            secret: str | None = ctx.cipher().decrypt(token.encrypted_value)
        except Exception as exc:  # a value under a retired key: masked entirely, and logged
            log.warning("token %s cannot be decrypted for its masked value: %s", token.id, exc)
            secret = None
        return masked_value(secret)

    return mask
