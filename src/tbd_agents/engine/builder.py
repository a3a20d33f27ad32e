"""From stored records to a ready `RunSpec`: the same path for workflow runs, chat and schedules.

`load_plan` reads everything an agent uses in one unit of work (provider, skills by id and tag,
guardrails, custom tools, MCP servers by id and tag, knowledge sources) — only records of the
agent's owner — applies the host gates (stdio MCP servers and custom tools need an admin owner
unless the operator allows users; services/privilege.py) and resolves `{{token:NAME}}` references;
`open_plan` then connects MCP servers outside any transaction and assembles the toolset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tbd_agents.domain.enums import AuthType, McpServerStatus, ProviderType
from tbd_agents.domain.models import (
    Agent,
    CustomTool,
    Entity,
    Guardrail,
    KnowledgeSource,
    McpServer,
    Provider,
    Skill,
    Workflow,
)
from tbd_agents.engine.catalog import ModelCatalog, ModelInfo
from tbd_agents.engine.compaction import CompactionPolicy
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.context import Budgets, RunSpec, SkillText
from tbd_agents.engine.default_provider import default_provider
from tbd_agents.engine.guardrails import Guardrails
from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.options import RunOptions
from tbd_agents.engine.overrides import apply_credential_overrides
from tbd_agents.engine.providers import ProviderSettings, build_provider
from tbd_agents.engine.sandbox import Sandbox, SandboxLimits
from tbd_agents.engine.sources import KnowledgeSearch, MemoryStore, Passage
from tbd_agents.engine.tools.base import Toolset
from tbd_agents.engine.tools.builtins import builtin_tools
from tbd_agents.engine.tools.custom import CustomPythonTool
from tbd_agents.engine.tools.mcp import McpConnection, McpServerConfig, open_servers
from tbd_agents.engine.tools.plugin import (
    PluginTool,
    check_operator_tokens,
    shared_plugin_records,
)
from tbd_agents.engine.tools.workspace_tools import WorkspaceTools
from tbd_agents.engine.workspace import Workspace
from tbd_agents.errors import InvalidData, TbdError
from tbd_agents.observability.model_calls import instrumented
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.security.outbound import HostPolicy, OutboundGuard, OutboundPolicy
from tbd_agents.services.privilege import CUSTOM_TOOLS_SETTING, AdminDirectory
from tbd_agents.services.tokens import resolve_tree
from tbd_agents.storage.protocol import (
    Filter,
    Query,
    Repositories,
    Sort,
    contains_any,
    eq,
    in_,
    is_null,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunPlan:
    agent: Agent
    provider: ProviderSettings
    model: str
    skills: list[Skill] = field(default_factory=list)
    guardrails: list[Guardrail] = field(default_factory=list)
    custom_tools: list[tuple[CustomTool, dict[str, str]]] = field(default_factory=list)
    #: Records run by an installed plugin (engine/tools/plugin.py), with the owner's policy.
    plugin_tools: list[tuple[CustomTool, dict[str, str], OutboundPolicy]] = field(
        default_factory=list
    )
    mcp: list[McpServerConfig] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The agent's knowledge sources the run may search (its owner's).
    knowledge_source_ids: list[str] = field(default_factory=list)
    #: Every source a knowledge tag may match in (its owner's); None: no restriction.
    knowledge_scope: frozenset[str] | None = None
    #: What web_fetch may reach: the agent owner's outbound policy.
    tool_outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    #: Whether the bash built-in may run (the custom tools' host gate, on the agent's owner).
    shell_allowed: bool = False
    #: The agents this agent may call as tools (its owner's; engine/delegation.py).
    agent_tools: list[Agent] = field(default_factory=list)


@dataclass(slots=True)
class _Owner:
    """Whose records a run may load: the agent owner's; ownerless (operator) records only when
    the agent itself is ownerless or its owner is an admin."""

    owner: str | None
    ownerless_ok: bool

    def allows(self, record_owner: str | None) -> bool:
        return self.ownerless_ok if record_owner is None else record_owner == self.owner

    def filters(self, model: type[Entity]) -> list[tuple[Filter, ...]]:
        """One filter group per query selecting the records `allows` accepts."""
        field_name = model.owner_field
        if field_name is None:
            return [()]
        groups: list[tuple[Filter, ...]] = [
            (is_null(field_name),) if self.owner is None else (eq(field_name, self.owner),)
        ]
        if self.owner is not None and self.ownerless_ok:
            groups.append((is_null(field_name),))
        return groups


async def _by_ids_and_tags(
    repos: Repositories,
    model: type[Any],
    ids: list[str],
    tags: list[str],
    who: _Owner,
    warnings: list[str],
    label: str,
) -> list[Any]:
    """Records named by id or carrying a tag, only those `who` may use; ids of others' records
    are reported in the run's warnings (by id: their names are not the agent owner's to see)."""
    found: dict[str, Any] = {}
    if ids:
        for rec in (await repos.for_model(model).list(Query(filters=(in_("id", ids),)))).items:
            if who.allows(getattr(rec, model.owner_field)):
                found[rec.id] = rec
            else:
                warnings.append(
                    f"{label} {rec.id} belongs to another owner and was not loaded: "
                    "reference your own records"
                )
    if tags:
        for group in who.filters(model):
            q = Query(filters=(contains_any("tags", tags), *group), limit=200)
            for rec in (await repos.for_model(model).list(q)).items:
                found.setdefault(rec.id, rec)
    return list(found.values())


async def _resolve(repos: Repositories, cipher: TokenCipher, owner: str | None, tree: Any) -> Any:
    """`tree` with `{{token:…}}` resolved among `owner`'s tokens (ownerless records, the
    operator's: among all tokens, see `resolve_tree`)."""
    return await resolve_tree(repos, cipher, owner, tree)


async def load_plan(
    repos: Repositories,
    cipher: TokenCipher,
    agent: Agent,
    config: EngineConfig,
    *,
    model_override: str | None = None,
    outbound: OutboundGuard | None = None,
    workflow: Workflow | None = None,
    inherited: Workflow | None = None,
) -> RunPlan:
    """Everything `agent` uses, with secrets resolved; raises InvalidData naming what is missing.

    Only records of the agent's owner are loaded (see `_Owner`); records another owner holds
    are skipped with a warning and never resolved with anyone's tokens. `outbound` decides, per
    record owner, which addresses its provider and MCP servers may reach (default: no
    allow-list, admins and ownerless records trusted). For a run of `workflow`, its skills and
    guardrails join the agent's (`_workflow_records`: the existing TBD Agents kept them on the
    workflow). For a delegated run, `inherited` is the workflow of its chain: its guardrails
    join the agent's too, its skills do not (engine/delegation.py)."""
    outbound = outbound or OutboundGuard(HostPolicy(), AdminDirectory())
    owner: str | None = getattr(agent, Agent.owner_field or "created_by")
    who = _Owner(owner, owner is None or await config.host.admins.is_admin(repos, owner))
    key: str | None = None
    if not agent.provider_id:  # the default model (engine/default_provider.py)
        provider, key = await default_provider(repos, agent, config, operator_ok=who.ownerless_ok)
    else:
        provider = await repos.providers.get(agent.provider_id)
        if not who.allows(provider.created_by):
            raise InvalidData(
                f"agent {agent.name!r}: provider {provider.id} belongs to another owner: set a "
                "provider_id of yours (GET /api/providers)"
            )
    if key is None and provider.api_key_token_name and provider.auth_type is not AuthType.NONE:
        key = await _resolve(
            repos, cipher, provider.created_by, "{{token:" + provider.api_key_token_name + "}}"
        )
    headers = await _resolve(repos, cipher, provider.created_by, dict(provider.extra_headers))
    # A password moved into a token ({{token:conn.providers.<id>.base_url}}) is put back here.
    base_url = await _resolve(repos, cipher, provider.created_by, provider.base_url)
    model = model_override or agent.model or provider.default_model or config.default_model
    if not model:
        raise InvalidData(
            f"agent {agent.name!r} has no model and its provider no default_model: set the "
            "agent's model (or the provider's default_model, or DEFAULT_MODEL on the server)"
        )
    if key is None and _uses_server_copilot_token(provider, base_url, who, config):
        key = config.copilot_token
    plan = RunPlan(
        agent=agent,
        provider=ProviderSettings(
            name=provider.name,
            provider_type=provider.provider_type,
            api_key=key,
            auth_type=provider.auth_type,
            base_url=base_url,
            azure_deployment=provider.azure_deployment,
            azure_api_version=provider.azure_api_version,
            default_model=provider.default_model,
            extra_headers=headers,
            outbound=await outbound.policy_for(repos, provider.created_by),
        ),
        model=model,
    )
    plan.skills = await _by_ids_and_tags(
        repos, Skill, agent.skill_ids, agent.skill_tags, who, plan.warnings, "skill"
    )
    if workflow is not None and (workflow.skill_ids or workflow.skill_tags):
        known = {s.id for s in plan.skills}
        for skill in await _workflow_records(
            repos, Skill, workflow, workflow.skill_ids, workflow.skill_tags, plan.warnings
        ):
            if skill.id not in known:
                known.add(skill.id)
                plan.skills.append(skill)
    plan.guardrails, skipped = await load_guardrails(
        repos, agent, config.host.admins, workflow=workflow or inherited
    )
    plan.warnings += skipped
    await _load_custom_tools(repos, cipher, agent, config, who, plan, outbound)
    if workflow is not None:  # engine/overrides.py
        await apply_credential_overrides(repos, cipher, RunOptions.of_workflow(workflow), plan)
    await _load_mcp(repos, cipher, agent, config, who, plan, outbound)
    await _load_knowledge_scope(repos, agent, who, plan)
    if agent.agent_tool_ids:
        found = await _by_ids_and_tags(
            repos, Agent, agent.agent_tool_ids, [], who, plan.warnings, "agent tool"
        )
        order = {agent_id: n for n, agent_id in enumerate(agent.agent_tool_ids)}
        plan.agent_tools = sorted(found, key=lambda a: order.get(a.id, len(order)))
    plan.tool_outbound = await outbound.policy_for(repos, owner)
    plan.shell_allowed = await config.host.custom_tools_for(repos, owner)
    return plan


def _uses_server_copilot_token(
    provider: Provider, base_url: str | None, who: _Owner, config: EngineConfig
) -> bool:
    """GITHUB_TOKEN is the key of a github_copilot provider that names no key token, when the
    provider is the operator's (ownerless) or an admin's, and only on its way to GitHub Copilot
    (a provider with another base_url would hand the server's token to that host)."""
    from tbd_agents.engine.providers.openai_compat import COPILOT_URL

    return (
        config.copilot_token is not None
        and provider.provider_type is ProviderType.GITHUB_COPILOT
        and not provider.api_key_token_name
        and provider.auth_type is not AuthType.NONE
        and who.allows(provider.created_by)
        and who.ownerless_ok
        and (not base_url or base_url.rstrip("/") == COPILOT_URL)
    )


async def _owner_of(repos: Repositories, record: Entity, admins: AdminDirectory) -> _Owner:
    owner: str | None = getattr(record, type(record).owner_field or "created_by")
    return _Owner(owner, owner is None or await admins.is_admin(repos, owner))


async def _workflow_records(
    repos: Repositories,
    model: type[Any],
    workflow: Workflow,
    ids: list[str],
    tags: list[str],
    warnings: list[str],
) -> list[Any]:
    """The records a workflow names itself (its skills and guardrails, by id and by tag): the
    workflow owner's and the operator's (ownerless) ones.

    Ownerless records come from a deployment of the existing TBD Agents, where skills and
    guardrails were global and workflows named them whoever owned the workflow (`local`,
    `server` or a GitHub login): its workflows keep their skills and guardrails. Records of
    another user are never loaded."""
    who = _Owner(workflow.github_user, ownerless_ok=True)
    label = "skill" if model is Skill else "guardrail"
    found: list[Any] = await _by_ids_and_tags(repos, model, ids, tags, who, warnings, label)
    return found


async def load_guardrails(
    repos: Repositories,
    agent: Agent,
    admins: AdminDirectory,
    *,
    workflow: Workflow | None = None,
) -> tuple[list[Guardrail], list[str]]:
    """The guardrails a run of `agent` applies, and warnings about records it skipped: the
    agent's `guardrail_ids` (records of the agent's owner), plus, for a workflow run, the
    workflow's `guardrail_ids` and the records carrying one of its `guardrail_tags` (records
    of the workflow's owner and the operator's: `_workflow_records`). Disabled ones are
    returned too; `Guardrails` drops them."""
    warnings: list[str] = []
    found: dict[str, Guardrail] = {}
    who = await _owner_of(repos, agent, admins)
    for rec in await _by_ids_and_tags(
        repos, Guardrail, agent.guardrail_ids, [], who, warnings, "guardrail"
    ):
        found[rec.id] = rec
    if workflow is not None and (workflow.guardrail_ids or workflow.guardrail_tags):
        for rec in await _workflow_records(
            repos, Guardrail, workflow, workflow.guardrail_ids, workflow.guardrail_tags, warnings
        ):
            found.setdefault(rec.id, rec)
    return list(found.values()), warnings


async def _load_custom_tools(
    repos: Repositories,
    cipher: TokenCipher,
    agent: Agent,
    config: EngineConfig,
    who: _Owner,
    plan: RunPlan,
    outbound: OutboundGuard,
) -> None:
    # The operator's plugin records serve every agent, whoever owns it.
    shared = await shared_plugin_records(repos, agent.custom_tool_ids)
    ids = [i for i in agent.custom_tool_ids if i not in {t.id for t in shared}]
    tools: list[CustomTool] = shared + await _by_ids_and_tags(
        repos, CustomTool, ids, [], who, plan.warnings, "custom tool"
    )
    for tool in tools:
        if not tool.is_enabled:
            plan.warnings.append(f"custom tool {tool.name!r} is disabled and was not offered")
            continue
        if tool.is_plugin:
            try:
                await check_operator_tokens(repos, config.host.admins, tool)
                env = await _resolve(repos, cipher, tool.created_by, dict(tool.env_config))
            except TbdError as exc:
                plan.warnings.append(f"plugin {tool.name!r} not offered: {exc.message}")
                continue
            policy = await outbound.policy_for(repos, tool.created_by)
            plan.plugin_tools.append((tool, env, policy))
            continue
        if not await config.host.custom_tools_for(repos, tool.created_by):
            plan.warnings.append(
                f"custom tool {tool.name!r} was not offered: its owner is not an admin and "
                f"{CUSTOM_TOOLS_SETTING} is false"
            )
            continue
        env = await _resolve(repos, cipher, tool.created_by, dict(tool.env_config))
        plan.custom_tools.append((tool, env))


async def _load_mcp(
    repos: Repositories,
    cipher: TokenCipher,
    agent: Agent,
    config: EngineConfig,
    who: _Owner,
    plan: RunPlan,
    outbound: OutboundGuard,
) -> None:
    servers: list[McpServer] = await _by_ids_and_tags(
        repos,
        McpServer,
        agent.mcp_server_ids,
        agent.mcp_server_tags,
        who,
        plan.warnings,
        "MCP server",
    )
    for server in servers:
        if server.status is McpServerStatus.DISABLED:
            continue
        try:
            cfg = await _resolve(repos, cipher, server.created_by, dict(server.connection_config))
            mcp = McpServerConfig.from_connection_config(
                server.name, server.transport_type, cfg, server.allowed_tools,
                connect_timeout=config.mcp_connect_timeout, call_timeout=config.mcp_call_timeout,
                outbound=await outbound.policy_for(repos, server.created_by),
            )  # fmt: skip
            if mcp.command is not None:
                mcp.confined = await config.host.stdio_launch(repos, server.created_by, mcp.command)
            plan.mcp.append(mcp)
        except TbdError as exc:
            plan.warnings.append(f"MCP server {server.name!r} skipped: {exc.message}")


async def _load_knowledge_scope(
    repos: Repositories, agent: Agent, who: _Owner, plan: RunPlan
) -> None:
    """The owner's sources: the agent's ids among them, and the scope its tags search in."""
    owned: set[str] = set()
    for group in who.filters(KnowledgeSource):
        async for src in repos.for_model(KnowledgeSource).iterate(
            Query(filters=group, sort=(Sort("id"),))
        ):
            owned.add(src.id)
    plan.knowledge_scope = frozenset(owned)
    plan.knowledge_source_ids = [i for i in agent.knowledge_source_ids if i in owned]
    for other in sorted(set(agent.knowledge_source_ids) - owned):
        plan.warnings.append(
            f"knowledge source {other} is not one of the agent owner's and is not searched"
        )


class OwnedKnowledge:
    """`KnowledgeSearch` confined to the sources a run may use: tag matches in other owners'
    sources are excluded in the query when the search supports it, and filtered out after."""

    def __init__(self, inner: KnowledgeSearch, scope: frozenset[str]) -> None:
        self.inner = inner
        self.scope = scope

    async def search(
        self, query: str, *, source_ids: Sequence[str], tags: Sequence[str], limit: int
    ) -> list[Passage]:
        ids = [i for i in source_ids if i in self.scope]
        if not ids and not tags:
            return []
        scoped = getattr(self.inner, "search_within", None)
        if scoped is not None:
            found: list[Passage] = await scoped(
                query, source_ids=ids, tags=tags, limit=limit, within=sorted(self.scope)
            )
        else:
            found = await self.inner.search(query, source_ids=ids, tags=tags, limit=limit)
        return [p for p in found if p.source_id in self.scope][:limit]


async def open_plan(
    plan: RunPlan,
    config: EngineConfig,
    catalog: ModelCatalog,
    *,
    memory: MemoryStore | None,
    knowledge: KnowledgeSearch | None,
    sandbox: Sandbox,
    workspace: Workspace | None = None,
    options: RunOptions | None = None,
) -> tuple[RunSpec, list[McpConnection]]:
    """Connect MCP servers, build tools and the provider: the spec of one run. `workspace`:
    the directory the workspace built-ins act in (engine/run_workspace.py); `options`: the
    workflow's (bypass_memory, auto_memory, the todo tool; engine/options.py)."""
    agent = plan.agent
    options = options or RunOptions()
    if knowledge is not None and plan.knowledge_scope is not None:
        knowledge = OwnedKnowledge(knowledge, plan.knowledge_scope)
    tools = Toolset()
    warnings = list(plan.warnings)
    for cfg in plan.mcp:
        if cfg.confined:
            cfg.confiner = sandbox.confiner
    conns, per_server, problems = await open_servers(plan.mcp)
    for name, reason in problems:
        warnings.append(f"MCP server {name!r}: {reason}")
    for cfg, mcp_tools in per_server:
        tools.extend(mcp_tools, prefix=cfg.name)
    # H1: the checkout's path is only exported where a custom tool can see it (no namespaces)
    repo_env = {}
    if workspace is not None and workspace.repo_url and not sandbox.confiner.enabled:
        repo_env["TBD_AGENTS_REPO_ROOT"] = str(workspace.path)
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
                    env={**env, **repo_env},
                    allowed_hosts=list(record.allowed_hosts),
                )
            )
        except TbdError as exc:
            warnings.append(f"custom tool {record.name!r} skipped: {exc.message}")
    for record, env, policy in plan.plugin_tools:
        problem = PluginTool.refusal(record, policy)
        if problem:
            warnings.append(problem)
            continue
        tools.add(PluginTool.of(record, env, policy))
    memory = memory if agent.memory_enabled and not options.bypass_memory else None
    if options.auto_memory and memory is None and not options.bypass_memory:
        warnings.append("auto_memory: this run has no memory store, so nothing can be stored")
        options = replace(options, auto_memory=False)
    offered = options.builtin_names(agent.builtin_tools, memory is not None)
    builtins, missing = builtin_tools(
        offered, memory=memory, knowledge=knowledge,
        knowledge_source_ids=plan.knowledge_source_ids, knowledge_tags=agent.knowledge_tags,
        timeout=config.builtin_tool_timeout,
        workspace=WorkspaceTools(
            workspace, sandbox, config.workspace, plan.tool_outbound, plan.shell_allowed
        ),
    )  # fmt: skip
    tools.extend(builtins)
    warnings += [f"built-in tool {n!r} not offered: {why}" for n, why in missing]
    rails = Guardrails.from_records(plan.guardrails)
    warnings += rails.warnings
    model_info = priced_for(plan.provider, catalog.get(plan.model))
    provider = instrumented(  # every model call measured: metrics and a `chat` span
        build_provider(plan.provider, config), plan.provider.provider_type, model_info,
        capture_content=config.trace_capture_content,
    )  # fmt: skip
    spec = RunSpec(
        provider=provider,
        model=plan.model,
        model_info=model_info,
        system_prompt="\n\n".join(  # H1: the `## Repository` section of a checkout
            p for p in (agent.system_prompt, workspace and workspace.prompt_section()) if p
        ),
        agent_id=agent.id,
        owner=agent.created_by,
        tools=tools,
        guardrails=rails,
        skills=[SkillText(s.name, s.instructions, s.description) for s in plan.skills],
        knowledge=knowledge,
        knowledge_source_ids=list(plan.knowledge_source_ids),
        knowledge_tags=list(agent.knowledge_tags),
        memory=memory,
        output_format=agent.output_format,
        max_turns=agent.max_turns or 10,
        temperature=agent.temperature,
        budgets=Budgets.from_config(config),
        compaction=CompactionPolicy(
            threshold=config.compaction_threshold,
            enabled=config.compaction_enabled,
            keep_recent_tool_groups=config.keep_recent_tool_groups,
            clear_tool_results=config.clear_tool_results,
            summary_max_chars=config.summary_max_chars,
        ),
        config=config,
        warnings=warnings,
        options=options,
    )
    return spec, conns


def priced_for(provider: ProviderSettings, info: ModelInfo) -> ModelInfo:
    """`info` with the prices that apply through `provider`: GitHub Copilot bills premium
    requests per call, not tokens, so a Copilot run costs no token dollars even for a model the
    catalog prices at its maker's API rates (gpt-4.1, gpt-4o…)."""
    if provider.provider_type is ProviderType.GITHUB_COPILOT:
        return replace(info, input_per_mtok=0.0, output_per_mtok=0.0)
    return info


async def close_run(spec: RunSpec, conns: list[McpConnection]) -> None:
    """Release what `open_plan` opened (MCP sessions and the provider's HTTP client)."""
    for conn in conns:
        try:
            await conn.aclose()
        except Exception:
            log.warning("closing MCP server %s failed", conn.cfg.name, exc_info=True)
    await spec.provider.aclose()
