""" "Try it" endpoints for the tool screens: test an MCP server, validate and run a custom tool,
try a guardrail on a text.

None of these change a run; they report what a run would see. Failures of the thing under test
(a server that does not start, a tool that crashes or times out) are answers with `ok: false`,
never a 500, and every wait is bounded: MCP connections by the connect timeout (the record's
`connection_config.connect_timeout`, else ENGINE_MCP_CONNECT_TIMEOUT), tools by their own
`timeout_seconds`. Secrets (`{{token:NAME}}`) are resolved for the call only and never returned.

What executes code on the host is gated as at run time (services/privilege.py): a stdio server is
started only for an admin owner or, confined, for a command in USER_STDIO_MCP_COMMANDS; custom
tools are validated and run only for admins unless ALLOW_USER_CUSTOM_TOOLS is set (403 otherwise).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import jsonschema
from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from referencing.exceptions import Unresolvable

from tbd_agents.api.crud import ERRORS
from tbd_agents.api.deps import ApiContext, Caller, Ctx
from tbd_agents.domain.enums import GuardrailAction, GuardrailType, McpServerStatus
from tbd_agents.domain.models import CustomTool, Guardrail, McpServer
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.guardrails import Guardrails, Verdict, compile_rule
from tbd_agents.engine.sandbox import Sandbox, SandboxLimits, validate_custom_tool
from tbd_agents.engine.tools.mcp import McpConnection, McpServerConfig
from tbd_agents.engine.tools.plugin import check_operator_tokens
from tbd_agents.engine.tools.plugin import run_once as run_plugin_once
from tbd_agents.errors import Conflict, InvalidData, PermissionDenied, TbdError
from tbd_agents.services.access import Principal
from tbd_agents.services.privilege import custom_tool_refusal, outbound_guard
from tbd_agents.services.records import Records
from tbd_agents.services.tokens import resolve_tree
from tbd_agents.services.tool_schema import infer_parameters_schema
from tbd_agents.services.validation import Input

router = APIRouter(tags=["tool checks"], responses=ERRORS)


def _engine(ctx: ApiContext) -> tuple[EngineConfig, Sandbox]:
    """The engine settings and sandbox of this app, built on first use."""
    found = ctx.services.get("tool_checks")
    if found is None:
        config = EngineConfig.from_settings(ctx.settings)
        found = (config, Sandbox.from_config(config))
        ctx.services["tool_checks"] = found
    config, sandbox = found
    assert isinstance(config, EngineConfig)
    assert isinstance(sandbox, Sandbox)
    return config, sandbox


def _ms(start: float) -> int:
    return round((time.perf_counter() - start) * 1000)


# --- MCP servers ---------------------------------------------------------------------------
class McpToolOut(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any] = Field(description="The tool's JSON Schema for its arguments.")
    allowed: bool = Field(description="Offered to agents under the record's allowed_tools.")


class McpTestOut(BaseModel):
    success: bool = Field(description="Connected and listed the tools (the existing field).")
    ok: bool = Field(description="Same as success.")
    tools: list[McpToolOut]
    error: str | None
    latency_ms: int


class McpToolsOut(BaseModel):
    tools: list[McpToolOut]


class AllowedToolsIn(Input):
    allowed_tools: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        max_length=1000, description="Tools offered to agents; an empty list means all tools."
    )


class AllowedToolsOut(BaseModel):
    allowed_tools: list[str]


async def _mcp_config(
    ctx: ApiContext, caller: Principal, mcp_id: str
) -> tuple[McpServer, McpServerConfig | None, TbdError | None]:
    """The server (visible to the caller), its connection config with secrets resolved (None
    and the error when a token is missing or the config is invalid)."""
    config, sandbox = _engine(ctx)
    async with ctx.store.unit_of_work() as repos:
        server: McpServer = await Records(repos, caller, McpServer).get(mcp_id)
        try:
            resolved = await resolve_tree(
                repos, ctx.cipher(), server.created_by, dict(server.connection_config)
            )
            policy = await outbound_guard(ctx.settings).policy_for(repos, server.created_by)
            cfg: McpServerConfig | None = McpServerConfig.from_connection_config(
                server.name, server.transport_type, resolved, server.allowed_tools,
                connect_timeout=config.mcp_connect_timeout, call_timeout=config.mcp_call_timeout,
                outbound=policy,
            )  # fmt: skip
            problem = None
        except TbdError as exc:
            cfg, problem = None, exc
        if cfg is not None and cfg.command is not None:
            # As a run would: the owner decides (admin, or a command allowed for users).
            caller.require_stdio(cfg.command)
            cfg.confined = await config.host.stdio_launch(repos, server.created_by, cfg.command)
            cfg.confiner = sandbox.confiner if cfg.confined else None
    return server, cfg, problem


async def _list_mcp_tools(cfg: McpServerConfig) -> list[McpToolOut]:
    """Connect, list the tools, disconnect (within the connect timeout)."""
    conn = McpConnection(cfg)
    try:
        tools = await conn.connect()
    finally:
        await conn.aclose()
    allow = set(cfg.allowed_tools)
    return [
        McpToolOut(
            name=t.name,
            description=t.description or "",
            input_schema=dict(t.input_schema or {"type": "object"}),
            allowed=not allow or t.name in allow,
        )
        for t in tools
    ]


@router.post(
    "/api/mcps/{mcp_id}/test",
    response_model=McpTestOut,
    summary="Connect to an MCP server and list its tools",
)
async def test_mcp(mcp_id: Annotated[str, Path()], ctx: Ctx, caller: Caller) -> McpTestOut:
    """Connect with the stored config (secrets resolved), list the tools, disconnect. Records
    the outcome in the server's `status` / `last_error`."""
    caller.require_write()
    server, cfg, problem = await _mcp_config(ctx, caller, mcp_id)
    start = time.perf_counter()
    error = problem.message if problem is not None else None
    out = McpTestOut(success=False, ok=False, tools=[], error=error, latency_ms=0)
    if cfg is not None:
        try:
            out.tools = await _list_mcp_tools(cfg)
            out.ok = out.success = True
        except TbdError as exc:
            out.error = exc.message
        finally:
            out.latency_ms = _ms(start)
    if server.status is not McpServerStatus.DISABLED:
        status = McpServerStatus.CONNECTED if out.ok else McpServerStatus.ERROR
        async with ctx.store.unit_of_work() as repos:
            await repos.mcp_servers.update(server.id, {"status": status, "last_error": out.error})
    return out


@router.get(
    "/api/mcps/{mcp_id}/tools",
    response_model=McpToolsOut,
    summary="List an MCP server's tools live (502 when it cannot be reached)",
)
async def mcp_tools(mcp_id: Annotated[str, Path()], ctx: Ctx, caller: Caller) -> McpToolsOut:
    """Connect, list every tool the server offers (each marked `allowed` under the record's
    allowed_tools), disconnect. Unlike the test, the record's status is left as it is. A config
    that cannot be used (a missing token, an address the owner may not reach) answers with its
    own error (422 naming it); a server that does not answer, 502."""
    _server, cfg, problem = await _mcp_config(ctx, caller, mcp_id)
    if problem is not None:
        raise problem
    assert cfg is not None
    return McpToolsOut(tools=await _list_mcp_tools(cfg))


@router.put(
    "/api/mcps/{mcp_id}/tools",
    response_model=AllowedToolsOut,
    summary="Save the tools agents may use from an MCP server",
)
async def save_allowed_tools(
    mcp_id: Annotated[str, Path()], body: AllowedToolsIn, ctx: Ctx, caller: Caller
) -> AllowedToolsOut:
    """Replace `allowed_tools` (an empty list offers every tool). The names are not checked
    against the live server (it may be down); unknown names simply match nothing."""
    wanted = list(dict.fromkeys(body.allowed_tools))
    async with ctx.store.unit_of_work() as repos:
        server: McpServer = await Records(repos, caller, McpServer).update(
            mcp_id, {"allowed_tools": wanted}
        )
    return AllowedToolsOut(allowed_tools=server.allowed_tools)


# --- custom tools --------------------------------------------------------------------------
class ValidateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_code: str = Field(max_length=1_000_000)
    name: str = Field(default="run", max_length=200, description="The tool's name (entry point).")
    parameters_schema: dict[str, Any] | None = None


class ValidateOut(BaseModel):
    valid: bool = Field(description="The source parses and defines the entry point.")
    inferred_schema: dict[str, Any] | None = Field(
        description="parameters_schema inferred from the entry point's signature (null if invalid)."
    )
    error: str | None
    ok: bool = Field(description="Same as valid.")
    errors: list[str]
    entry_point: str | None = None


@router.post(
    "/api/custom-tools/validate",
    response_model=ValidateOut,
    summary="Check a custom tool's source (parsed, never run)",
)
async def validate_tool(body: ValidateIn, caller: Caller) -> ValidateOut:
    caller.require_custom_tools()
    try:
        inferred = infer_parameters_schema(body.source_code, body.name)
        schema = body.parameters_schema or inferred
        entry = validate_custom_tool(body.name, body.source_code, schema)
    except InvalidData as exc:
        return ValidateOut(
            valid=False, inferred_schema=None, error=exc.message, ok=False, errors=[exc.message]
        )
    return ValidateOut(
        valid=True, inferred_schema=inferred, error=None, ok=True, errors=[], entry_point=entry
    )


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arguments: dict[str, Any] = Field(default_factory=dict)


class RunOut(BaseModel):
    tool_name: str
    success: bool
    result: str | None = Field(
        description="The tool's return value as a JSON string (null when it failed)."
    )
    error: str | None
    ok: bool = Field(description="Same as success.")
    value: Any = Field(default=None, description="The return value itself (parsed JSON).")
    duration_ms: int
    stdout: str = ""


def _run_out(tool: CustomTool, ok: bool, value: Any, error: str | None, **extra: Any) -> RunOut:
    result = json.dumps(value, default=str) if ok else None
    return RunOut(
        tool_name=tool.name, success=ok, result=result, error=error, ok=ok, value=value, **extra
    )


@router.post(
    "/api/custom-tools/{tool_id}/run",
    response_model=RunOut,
    summary="Run a custom tool once in the sandbox (409 when it is disabled)",
)
async def run_tool(
    tool_id: Annotated[str, Path()], body: RunIn, ctx: Ctx, caller: Caller
) -> RunOut:
    """Run the stored tool with `arguments` (checked against its parameters_schema), its
    declared env (secrets resolved) and its own limits, as an agent's call would."""
    caller.require_write()
    caller.require_custom_tools()
    config, sandbox = _engine(ctx)
    async with ctx.store.unit_of_work() as repos:
        tool: CustomTool = await Records(repos, caller, CustomTool).get(tool_id)
        if not tool.is_enabled:
            raise Conflict(
                f"custom tool {tool.name!r} is disabled: enable it (is_enabled: true) to run it",
                details={"field": "is_enabled"},
            )
        if not await config.host.custom_tools_for(repos, tool.created_by):
            raise PermissionDenied(custom_tool_refusal())  # as a run would: the owner decides
        if tool.is_plugin:  # installed code, not the record's source (engine/tools/plugin.py)
            await check_operator_tokens(repos, config.host.admins, tool)
            policy = await outbound_guard(ctx.settings).policy_for(repos, tool.created_by)
        env = await resolve_tree(repos, ctx.cipher(), tool.created_by, dict(tool.env_config))
    start = time.perf_counter()
    if tool.is_plugin:
        out = await run_plugin_once(tool, env, policy, body.arguments)
        value = out.data if not out.is_error else None
        return _run_out(tool, not out.is_error, value, out.content if out.is_error else None,
                        duration_ms=_ms(start))  # fmt: skip
    try:
        entry = validate_custom_tool(tool.name, tool.source_code, tool.parameters_schema)
        jsonschema.validate(body.arguments, tool.parameters_schema)
    except InvalidData as exc:
        return _run_out(tool, False, None, exc.message, duration_ms=_ms(start))
    except Unresolvable as exc:
        msg = f"parameters_schema refers to {exc.ref!r}, which cannot be resolved (use #/$defs/...)"
        return _run_out(tool, False, None, msg, duration_ms=_ms(start))
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
        msg = f"arguments do not match parameters_schema at {where}: {exc.message}"
        return _run_out(tool, False, None, msg, duration_ms=_ms(start))
    limits = SandboxLimits(timeout_seconds=tool.timeout_seconds, memory_mb=tool.memory_limit_mb)
    res = await sandbox.run(
        tool.source_code, entry, body.arguments, env=env, limits=limits,
        allowed_hosts=tool.allowed_hosts,
    )  # fmt: skip
    return _run_out(tool, res.ok, res.result, res.error, duration_ms=_ms(start), stdout=res.stdout)


# --- guardrails ----------------------------------------------------------------------------
class TryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=200_000)


class TryUnsavedIn(TryIn):
    guardrail: dict[str, Any] = Field(
        description="A guardrail as it would be created (name optional)."
    )


class TryOut(BaseModel):
    action: str = Field(description="pass, flag, redact or block: what happened to the text.")
    triggered: bool
    output: str = Field(description="What the caller would receive.")
    reasons: list[str]


def _try(g: Guardrail, text: str) -> TryOut:
    try:
        return _apply_one(g, text)
    except Unresolvable as exc:
        raise InvalidData(
            f"guardrail {g.name!r}: prompt_config.json_schema refers to {exc.ref!r}, which cannot be "
            "resolved; use only local references (#/$defs/...)",
            details={"field": "prompt_config"},
        ) from None


def _apply_one(g: Guardrail, text: str) -> TryOut:
    rules = Guardrails([compile_rule(g)])
    verdict: Verdict
    if g.guardrail_type in (GuardrailType.INPUT, GuardrailType.PROMPT):
        verdict = rules.check_input(text)
    elif g.guardrail_type is GuardrailType.OUTPUT:
        verdict = rules.check_output(text)
    elif g.guardrail_type is GuardrailType.TOOL:
        verdict = rules.check_tool_arguments(_json_object(text, "tool call arguments"))
    else:
        verdict = rules.check_request(_json_object(text, "a request payload"))
        verdict.text = text if not verdict.blocked else ""
    reasons = [v.reason for v in verdict.violations]
    if verdict.blocked:
        return TryOut(action="block", triggered=True, output=verdict.block_message, reasons=reasons)
    actions = {v.action for v in verdict.violations}
    action = "pass"
    if GuardrailAction.REDACT in actions:
        action = "redact"
    elif actions:
        action = "flag"
    return TryOut(action=action, triggered=bool(reasons), output=verdict.text, reasons=reasons)


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        value = exc.msg
    if not isinstance(value, dict):
        raise InvalidData(
            f"this guardrail applies to {what}: text must be a JSON object",
            details={"field": "text"},
        )
    return value


@router.post(
    "/api/guardrails/try",
    response_model=TryOut,
    summary="Try an unsaved guardrail on a text",
)
async def try_unsaved(body: TryUnsavedIn, caller: Caller) -> TryOut:
    values = {"name": "unsaved", **body.guardrail}
    values.pop("created_by", None)
    try:
        g = Guardrail.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidData(
            f"invalid guardrail: {where}: {err['msg']}", details={"field": f"guardrail.{where}"}
        ) from None
    return _try(g, body.text)


@router.post(
    "/api/guardrails/{guardrail_id}/try",
    response_model=TryOut,
    summary="Try a saved guardrail on a text",
)
async def try_saved(
    guardrail_id: Annotated[str, Path()], body: TryIn, ctx: Ctx, caller: Caller
) -> TryOut:
    """Apply the guardrail (even when disabled) as a run would at its stage."""
    async with ctx.store.unit_of_work() as repos:
        g: Guardrail = await Records(repos, caller, Guardrail).get(guardrail_id)
    return _try(g, body.text)
