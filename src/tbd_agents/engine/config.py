"""Engine tunables, built once from `Settings` (or directly in tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tbd_agents.engine.workspace import WorkspaceConfig
from tbd_agents.services.privilege import HostCapabilities


@dataclass(frozen=True, slots=True)
class EngineConfig:
    #: Seconds one model call may take (connect + whole stream).
    model_timeout: float = 120.0
    #: Retries after a 429 / 5xx / connection error before the call fails.
    model_max_retries: int = 3
    #: First backoff delay; doubled per retry, with jitter, unless Retry-After says otherwise.
    retry_base_delay: float = 0.5
    #: Longest wait the engine accepts (from Retry-After or backoff) before giving up.
    retry_max_delay: float = 60.0
    #: Seconds a whole run may last: with infinite_session=false (SESSION_TIMEOUT) and true.
    session_timeout: float = 600.0
    infinite_session_timeout: float = 86400.0
    #: TRACE_CAPTURE_CONTENT: model-call messages and tool arguments/results go into spans.
    trace_capture_content: bool = False
    #: Workflow runs offer manage_todo_list though the agent does not list it.
    workflow_todo_tool: bool = False
    #: STM_MAX_ENTRIES: the agent's latest memories recalled beside the semantic ones (0: off).
    stm_max_entries: int = 20
    #: Seconds to connect to (and list the tools of) one MCP server.
    mcp_connect_timeout: float = 15.0
    #: Seconds one MCP tool call may take.
    mcp_call_timeout: float = 60.0
    #: Seconds a built-in tool call may take.
    builtin_tool_timeout: float = 30.0
    #: Compact when the conversation exceeds this fraction of the model's context window.
    compaction_threshold: float = 0.8
    #: Extra model-catalog TOML whose entries override the built-in table.
    model_catalog: Path | None = None
    #: System user custom tools run as when the engine runs as root (None: do not switch).
    sandbox_user: str | None = "nobody"
    #: SANDBOX_ISOLATION: auto | namespaces | none (see engine/sandbox.py).
    sandbox_isolation: str = "auto"
    #: Operator ceilings on a custom tool's own timeout and memory limit.
    sandbox_max_timeout_seconds: int = 120
    sandbox_max_memory_mb: int = 1024
    #: OUTBOUND_ALLOWED_HOSTS: internal hosts/addresses/CIDRs that tools with allowed_hosts may
    #: reach through the egress proxy (the one outbound policy of security/outbound.py).
    outbound_allowed_hosts: str = ""
    #: Largest tool result (characters) fed back to the model; longer results are cut.
    max_tool_result_chars: int = 20_000
    #: DEFAULT_MODEL: the model of a run when the workflow, the agent and the provider name none.
    default_model: str | None = None
    #: GITHUB_TOKEN: the key of github_copilot providers that name none (see engine/builder.py).
    copilot_token: str | None = field(default=None, repr=False)
    #: COPILOT_TOKEN_URL: where GitHub tokens are exchanged for Copilot session tokens.
    copilot_token_url: str = "https://api.github.com/copilot_internal/v2/token"  # noqa: S105
    #: COPILOT_API_URL: Copilot chat API base overriding the exchange's `endpoints.api`.
    copilot_api_url: str | None = None
    #: DEFAULT_PROVIDER_ID: the provider record of agents without provider_id (None: Copilot).
    default_provider_id: str | None = None
    #: DEFAULT_PROVIDER_FOR_USERS: non-admins' agents may run on the operator's default
    #: credential (GITHUB_TOKEN or DEFAULT_PROVIDER_ID's key).
    default_provider_for_users: bool = False
    #: Prompt budgets in characters (PROMPT_*; converted to tokens by `context.Budgets`).
    prompt_context_chars: int | None = None
    prompt_skills_chars: int = 8000
    prompt_knowledge_chars: int = 12000
    prompt_memory_chars: int = 4000
    prompt_item_chars: int | None = None
    prompt_max_items: int | None = None
    knowledge_results: int = 5
    memory_results: int = 8
    #: Compaction (COMPACTION_ENABLED, TOOL_RESULT_CLEARING_*, COMPACTION_SUMMARY_MAX_CHARS).
    compaction_enabled: bool = True
    clear_tool_results: bool = True
    keep_recent_tool_groups: int = 2
    summary_max_chars: int | None = None
    #: TOOL_DEFINITION_DESCRIPTION_MAX_CHARS: clip on tool and parameter descriptions.
    tool_description_max_chars: int | None = None
    #: ANTHROPIC_GATEWAY_MAX_TOKENS: max_tokens of every Anthropic request (None: the catalog's).
    anthropic_max_tokens: int | None = None
    #: DELEGATION_MAX_DEPTH: how deep agents may call agents as tools (engine/delegation.py).
    delegation_max_depth: int = 3
    #: What non-admins' records may run on the host (stdio MCP servers, custom tools) and who
    #: counts as an admin, checked on the record's owner when a run loads it.
    host: HostCapabilities = field(default_factory=HostCapabilities)
    #: Workspaces, repository checkouts and the workspace built-ins (WORKSPACE_*, REPO_*, …).
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)

    @classmethod
    def from_settings(cls, settings: Any) -> EngineConfig:
        """Take every `engine_*` field (and `sandbox_*` one) that `settings` defines; defaults
        for the rest."""
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            direct = name.startswith("sandbox_") or name == "outbound_allowed_hosts"
            for key in (f"engine_{name}", name if direct else None):
                if key and hasattr(settings, key):
                    values[name] = getattr(settings, key)
                    break
        for name, key in _FROM_SETTINGS.items():
            if hasattr(settings, key):
                values[name] = getattr(settings, key)
        token = getattr(settings, "github_token", None)
        if token is not None:
            values["copilot_token"] = token.get_secret_value().strip() or None
        if hasattr(settings, "user_stdio_mcp_commands"):
            values["host"] = HostCapabilities.from_settings(settings)
        if hasattr(settings, "repo_clone_timeout_seconds"):
            values["workspace"] = WorkspaceConfig.from_settings(settings)
        return cls(**values)


#: EngineConfig fields read from settings of another name (the rest: `engine_<name>`).
_FROM_SETTINGS = {
    "default_model": "default_model",
    "copilot_token_url": "copilot_token_url",
    "copilot_api_url": "copilot_api_url",
    "default_provider_id": "default_provider_id",
    "default_provider_for_users": "default_provider_for_users",
    "prompt_context_chars": "prompt_context_char_budget",
    "prompt_skills_chars": "prompt_skills_char_budget",
    "prompt_knowledge_chars": "prompt_knowledge_char_budget",
    "prompt_memory_chars": "prompt_memory_char_budget",
    "prompt_item_chars": "prompt_context_item_char_limit",
    "prompt_max_items": "prompt_context_max_items",
    "knowledge_results": "knowledge_retrieval_top_k",
    "memory_results": "memory_retrieval_top_k",
    "stm_max_entries": "stm_max_entries",
    "compaction_enabled": "compaction_enabled",
    "clear_tool_results": "tool_result_clearing_enabled",
    "keep_recent_tool_groups": "tool_result_clearing_keep_recent",
    "summary_max_chars": "compaction_summary_max_chars",
    "max_tool_result_chars": "tool_result_context_max_chars",
    "tool_description_max_chars": "tool_definition_description_max_chars",
    "anthropic_max_tokens": "anthropic_gateway_max_tokens",
    "trace_capture_content": "trace_capture_content",
    "delegation_max_depth": "delegation_max_depth",
}
