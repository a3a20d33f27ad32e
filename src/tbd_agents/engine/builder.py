"""From stored records to a ready `RunSpec`: the same path for workflow runs, chat and schedules.

`load_plan` reads everything an agent uses in one unit of work (provider, skills by id and tag,
guardrails, custom tools, MCP servers by id and tag) and resolves `{{token:NAME}}` references;
`open_plan` then connects MCP servers outside any transaction and assembles the toolset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from tbd_agents.domain.enums import AuthType, McpServerStatus
from tbd_agents.domain.models import Agent, CustomTool, Guardrail, McpServer, Provider, Skill
from tbd_agents.engine.catalog import ModelCatalog
from tbd_agents.engine.compaction import CompactionPolicy
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.context import RunSpec, SkillText
from tbd_agents.engine.guardrails import Guardrails
from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.providers import ProviderSettings, build_provider
from tbd_agents.engine.sandbox import Sandbox, SandboxLimits
from tbd_agents.engine.sources import KnowledgeSearch, MemoryStore
from tbd_agents.engine.tools.base import Toolset
from tbd_agents.engine.tools.builtins import builtin_tools
from tbd_agents.engine.tools.custom import CustomPythonTool
from tbd_agents.engine.tools.mcp import McpConnection, McpServerConfig, open_servers
from tbd_agents.errors import InvalidData, TbdError
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.security.outbound import HostPolicy, OutboundGuard
from tbd_agents.services.privilege import AdminDirectory
from tbd_agents.services.tokens import resolve_tree
from tbd_agents.storage.protocol import Query, Repositories, contains_any, in_

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunPlan:
    agent: Agent
    provider: ProviderSettings
    model: str
    skills: list[Skill] = field(default_factory=list)
    guardrails: list[Guardrail] = field(default_factory=list)
    custom_tools: list[tuple[CustomTool, dict[str, str]]] = field(default_factory=list)
    mcp: list[McpServerConfig] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


async def _by_ids_and_tags(
    repos: Repositories, model: type[Any], ids: list[str], tags: list[str]
) -> list[Any]:
    found: dict[str, Any] = {}
    if ids:
        for rec in (await repos.for_model(model).list(Query(filters=(in_("id", ids),)))).items:
            found[rec.id] = rec
    if tags:
        q = Query(filters=(contains_any("tags", tags),), limit=200)
        for rec in (await repos.for_model(model).list(q)).items:
            found.setdefault(rec.id, rec)
    return list(found.values())


async def load_plan(
    repos: Repositories,
    cipher: TokenCipher,
    agent: Agent,
    config: EngineConfig,
    *,
    model_override: str | None = None,
    outbound: OutboundGuard | None = None,
) -> RunPlan:
    """Everything `agent` uses, with secrets resolved; raises InvalidData naming what is missing.

    `outbound` decides, per record owner, which addresses its provider and MCP servers may
    reach (default: no allow-list, admins and ownerless records trusted)."""
    outbound = outbound or OutboundGuard(HostPolicy(), AdminDirectory())
    if not agent.provider_id:
        raise InvalidData(f"agent {agent.name!r} has no provider_id: set one (GET /api/providers)")
    provider: Provider = await repos.providers.get(agent.provider_id)
    owner = provider.created_by
    key = None
    if provider.api_key_token_name and provider.auth_type is not AuthType.NONE:
        key = await resolve_tree(
            repos, cipher, owner, "{{token:" + provider.api_key_token_name + "}}"
        )
    headers = await resolve_tree(repos, cipher, owner, dict(provider.extra_headers))
    model = model_override or agent.model or provider.default_model
    if not model:
        raise InvalidData(f"agent {agent.name!r} has no model and its provider no default_model")
    plan = RunPlan(
        agent=agent,
        provider=ProviderSettings(
            name=provider.name,
            provider_type=provider.provider_type,
            api_key=key,
            auth_type=provider.auth_type,
            base_url=provider.base_url,
            azure_deployment=provider.azure_deployment,
            azure_api_version=provider.azure_api_version,
            default_model=provider.default_model,
            extra_headers=headers,
            outbound=await outbound.policy_for(repos, owner),
        ),
        model=model,
    )
    plan.skills = await _by_ids_and_tags(repos, Skill, agent.skill_ids, agent.skill_tags)
    if agent.guardrail_ids:
        page = await repos.guardrails.list(Query(filters=(in_("id", agent.guardrail_ids),)))
        plan.guardrails = list(page.items)
    if agent.custom_tool_ids:
        page = await repos.custom_tools.list(Query(filters=(in_("id", agent.custom_tool_ids),)))
        for tool in page.items:
            if not tool.is_enabled:
                plan.warnings.append(f"custom tool {tool.name!r} is disabled and was not offered")
                continue
            env = await resolve_tree(repos, cipher, tool.created_by, dict(tool.env))
            plan.custom_tools.append((tool, env))
    servers: list[McpServer] = await _by_ids_and_tags(
        repos, McpServer, agent.mcp_server_ids, agent.mcp_server_tags
    )
    for server in servers:
        if server.status is McpServerStatus.DISABLED:
            continue
        try:
            cfg = await resolve_tree(
                repos, cipher, server.created_by, dict(server.connection_config)
            )
            plan.mcp.append(
                McpServerConfig.from_connection_config(
                    server.name,
                    server.transport_type,
                    cfg,
                    server.allowed_tools,
                    connect_timeout=config.mcp_connect_timeout,
                    call_timeout=config.mcp_call_timeout,
                    outbound=await outbound.policy_for(repos, server.created_by),
                )
            )
        except TbdError as exc:
            plan.warnings.append(f"MCP server {server.name!r} skipped: {exc.message}")
    return plan


async def open_plan(
    plan: RunPlan,
    config: EngineConfig,
    catalog: ModelCatalog,
    *,
    memory: MemoryStore | None,
    knowledge: KnowledgeSearch | None,
    sandbox: Sandbox,
) -> tuple[RunSpec, list[McpConnection]]:
    """Connect MCP servers, build tools and the provider: the spec of one run."""
    agent = plan.agent
    tools = Toolset()
    warnings = list(plan.warnings)
    conns, per_server, problems = await open_servers(plan.mcp)
    for name, reason in problems:
        warnings.append(f"MCP server {name!r}: {reason}")
    for cfg, mcp_tools in per_server:
        tools.extend(mcp_tools, prefix=cfg.name)
    for record, env in plan.custom_tools:
        try:
            tools.add(
                CustomPythonTool(
                    ToolSpec(
                        record.name, record.description or record.name, record.parameters_schema
                    ),
                    record.source_code,
                    sandbox,
                    SandboxLimits(
                        timeout_seconds=record.timeout_seconds, memory_mb=record.memory_limit_mb
                    ),
                    env=env,
                )
            )
        except TbdError as exc:
            warnings.append(f"custom tool {record.name!r} skipped: {exc.message}")
    memory = memory if agent.memory_enabled else None
    builtins, missing = builtin_tools(
        agent.builtin_tools, memory=memory, knowledge=knowledge,
        knowledge_source_ids=agent.knowledge_source_ids, knowledge_tags=agent.knowledge_tags,
        timeout=config.builtin_tool_timeout,
    )  # fmt: skip
    tools.extend(builtins)
    warnings += [f"built-in tool {n!r} not offered: {why}" for n, why in missing]
    spec = RunSpec(
        provider=build_provider(plan.provider, config),
        model=plan.model,
        model_info=catalog.get(plan.model),
        system_prompt=agent.system_prompt,
        agent_id=agent.id,
        owner=agent.created_by,
        tools=tools,
        guardrails=Guardrails.from_records(plan.guardrails),
        skills=[SkillText(s.name, s.instructions, s.description) for s in plan.skills],
        knowledge=knowledge,
        knowledge_source_ids=list(agent.knowledge_source_ids),
        knowledge_tags=list(agent.knowledge_tags),
        memory=memory,
        output_format=agent.output_format,
        max_turns=agent.max_turns or 10,
        temperature=agent.temperature,
        compaction=CompactionPolicy(threshold=config.compaction_threshold),
        config=config,
        warnings=warnings,
    )
    return spec, conns


async def close_run(spec: RunSpec, conns: list[McpConnection]) -> None:
    """Release what `open_plan` opened (MCP sessions and the provider's HTTP client)."""
    for conn in conns:
        try:
            await conn.aclose()
        except Exception:
            log.warning("closing MCP server %s failed", conn.cfg.name, exc_info=True)
    await spec.provider.aclose()
