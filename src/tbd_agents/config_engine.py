"""Settings of the agent engine: model calls, prompts and compaction, the sandbox, workspaces,
repository checkouts and the workspace built-ins."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings


class EngineSettings(BaseSettings):
    """What one run may do and use.

    Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""

    # --- agent engine ----------------------------------------------------------------------
    engine_model_timeout: float = Field(
        default=120.0, gt=0, description="Seconds a model call may take (connect and each read)."
    )
    engine_session_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a whole run of a workflow with infinite_session=false may last; "
        "past it the run fails with a session timeout (the existing SESSION_TIMEOUT).",
    )
    engine_infinite_session_timeout: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds a whole run of a workflow with infinite_session=true (the "
        "default) may last; past it the run fails with a session timeout.",
    )
    engine_workflow_todo_tool: bool = Field(
        default=False,
        description="Offer the manage_todo_list built-in to every workflow and schedule run, "
        "as the existing Copilot runtime did (its calls are stored as the task's progress); "
        "false: only to agents that list it in builtin_tools.",
    )
    engine_model_max_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Retries of a model call after 429 / 5xx / network errors.",
    )
    engine_mcp_connect_timeout: float = Field(
        default=15.0, gt=0, description="Seconds to connect to an MCP server and list its tools."
    )
    engine_mcp_call_timeout: float = Field(
        default=60.0, gt=0, description="Seconds one MCP tool call may take."
    )
    default_model: str | None = Field(
        default=None,
        description="Model of a run whose workflow and agent name none (after the provider's "
        "own default_model). Unset: such a run is refused with a message, except on the "
        "default GitHub Copilot provider (agents without provider_id), which uses gpt-4.1.",
    )
    default_max_turns: int = Field(
        default=5, ge=1, le=10_000, description="max_turns of a workflow created without one."
    )
    prompt_context_char_budget: int | None = Field(
        default=None,
        ge=100,
        description="Hard limit on the whole system prompt of a run, in characters (converted "
        "to tokens, 4 per token; the output-format policy is always kept). Unset: only the "
        "section budgets below apply.",
    )
    prompt_skills_char_budget: int = Field(
        default=8000,
        ge=0,
        description="Budget of the skills section of the system prompt, in characters "
        "(converted to tokens, 4 per token); skills that do not fit are left out.",
    )
    prompt_knowledge_char_budget: int = Field(
        default=12000,
        ge=0,
        description="Budget of the knowledge section (retrieved passages), in characters "
        "(converted to tokens, 4 per token).",
    )
    prompt_memory_char_budget: int = Field(
        default=4000,
        ge=0,
        description="Budget of the memories section, in characters (converted to tokens, 4 per "
        "token).",
    )
    prompt_context_item_char_limit: int | None = Field(
        default=None,
        ge=10,
        description="Clip on each knowledge passage and memory in the prompt, in characters "
        "(converted to tokens). Unset: items are bounded by their section's budget only.",
    )
    prompt_context_max_items: int | None = Field(
        default=None,
        ge=0,
        description="Most knowledge passages, and most memories, put in a run's prompt (caps "
        "KNOWLEDGE_RETRIEVAL_TOP_K and MEMORY_RETRIEVAL_TOP_K). Unset: no extra cap.",
    )
    compaction_enabled: bool = Field(
        default=True,
        description="Compact a run's conversation when it nears the model's context window "
        "(off: a run that outgrows the window fails at the provider).",
    )
    tool_result_clearing_enabled: bool = Field(
        default=True,
        description="First step of compaction: replace the results of older tool calls with a "
        "short note.",
    )
    tool_result_clearing_keep_recent: int = Field(
        default=2,
        ge=0,
        le=1000,
        description="Most recent tool-call turns (a model reply with all of its tool results) "
        "whose results compaction never clears.",
    )
    compaction_summary_max_chars: int | None = Field(
        default=None,
        ge=100,
        description="Longest summary (characters) compaction keeps of the earlier "
        "conversation. Unset: as long as the model writes it.",
    )
    tool_result_context_max_chars: int = Field(
        default=20_000,
        ge=100,
        description="Longest tool result (characters) fed back to the model; longer ones are "
        "cut, saying how much was cut.",
    )
    tool_definition_description_max_chars: int | None = Field(
        default=None,
        ge=10,
        description="Clip on tool and parameter descriptions sent to the model (characters). "
        "Unset: sent whole.",
    )
    anthropic_gateway_max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="max_tokens of every Anthropic request. Unset: the model's output limit "
        "from the model catalog. With extended thinking (reasoning_effort) the thinking budget "
        "is added, within the model's output limit.",
    )
    engine_compaction_threshold: float = Field(
        default=0.8,
        gt=0.1,
        le=1.0,
        description="Compact a run's context above this fraction of the model's context window.",
    )
    engine_model_catalog: Path | None = Field(
        default=None,
        description="TOML file of model context windows and prices overriding the built-in table.",
    )
    engine_sandbox_user: str | None = Field(
        default="nobody",
        description="System user custom tools run as when the server runs as root (empty: no switch).",
    )
    sandbox_isolation: Literal["auto", "namespaces", "none"] = Field(
        default="auto",
        description="Confinement of custom tools (and confined stdio MCP servers): `auto` and "
        "`namespaces` run them in Linux user/mount/network/PID namespaces and refuse to run them "
        "where the kernel cannot; `none` (explicit opt-out, warned at start) keeps only rlimits, "
        "a clean environment and the uid switch.",
    )
    sandbox_max_timeout_seconds: int = Field(
        default=120,
        ge=1,
        le=3600,
        description="Ceiling on a custom tool's timeout_seconds: higher values are refused on "
        "save and clamped at run time.",
    )
    sandbox_max_memory_mb: int = Field(
        default=1024,
        ge=16,
        le=65536,
        description="Ceiling on a custom tool's memory_limit_mb: higher values are refused on "
        "save and clamped at run time.",
    )
    # --- workspaces, repository checkouts, workspace built-ins (engine/workspace.py) ------
    workspace_dir: Path | None = Field(
        default=None,
        description="Parent directory of workflow repository checkouts and scratch workspaces "
        "of the bash/read/write/edit/glob/grep built-ins (default DATA_DIR/workspaces).",
    )
    workspace_retention_hours: float = Field(
        default=0,
        ge=0,
        description="Delete checkouts and scratch workspaces unused for this many hours (checked "
        "before each run that prepares one); 0 keeps them.",
    )
    repo_clone_timeout_seconds: float = Field(
        default=300,
        gt=0,
        le=86400,
        description="Longest a repository sync (clone, or fetch + reset) may take.",
    )
    repo_max_checkout_mb: int = Field(
        default=1024,
        ge=1,
        description="Largest checkout (MB, .git included); a bigger one is deleted and the sync "
        "fails (repo_sync_failed).",
    )
    repo_allow_insecure_urls: bool = Field(
        default=False,
        description="Also accept http:// and file:// repo_urls (tests, internal git servers); "
        "https:// only otherwise. Hosts follow OUTBOUND_ALLOWED_HOSTS either way.",
    )
    bash_timeout_seconds: float = Field(
        default=60,
        gt=0,
        le=3600,
        description="Wall-clock limit of one bash built-in call (also capped by "
        "SANDBOX_MAX_TIMEOUT_SECONDS).",
    )
    bash_max_processes: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="RLIMIT_NPROC of a bash built-in call (custom tools get 0: they may not "
        "start processes; a shell must).",
    )
    web_fetch_max_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="Bytes of a response the web_fetch built-in reads (the rest is cut).",
    )
    web_search_backend: Literal["searxng", "brave"] = Field(
        default="searxng",
        description="Shape of the web_search backend: `searxng` (GET WEB_SEARCH_URL?q=…&"
        "format=json) or `brave` (Brave Search API, key in WEB_SEARCH_API_KEY).",
    )
    web_search_url: str | None = Field(
        default=None,
        description="Endpoint of the web_search built-in (SearXNG: the instance's /search URL; "
        "brave: optional override of the API URL). Unset with searxng: web_search not offered.",
    )
    web_search_api_key: SecretStr | None = Field(
        default=None, description="API key of the web_search backend (brave)."
    )
