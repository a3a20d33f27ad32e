"""Settings: the one place that reads the environment.

`Settings()` is built once at start-up (CLI, API, worker, scripts) and passed down. Nothing else in
the package reads `os.environ`. Consistency between the backend variables is checked here so a
mismatched profile stops start-up with one message that names the variables and the fix.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_data_dir
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tbd_agents.config_legacy import apply_legacy
from tbd_agents.errors import ConfigurationError
from tbd_agents.observability.metrics_config import MetricsSettings
from tbd_agents.observability.tracing_config import TracingSettings
from tbd_agents.observability.usage_config import UsageSettings
from tbd_agents.services.retention_config import RetentionSettings


class DbBackend(StrEnum):
    POSTGRES = "postgres"
    MONGO = "mongo"


class VectorBackend(StrEnum):
    PGVECTOR = "pgvector"
    QDRANT = "qdrant"


#: Which vector store each document store belongs with (the guide's two profiles).
PROFILE_OF_BACKEND = {
    DbBackend.POSTGRES: VectorBackend.PGVECTOR,
    DbBackend.MONGO: VectorBackend.QDRANT,
}

_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg"}


#: Shortest GITHUB_TOKEN accepted as a Bearer credential (GitHub tokens are 40 or more).
MIN_SERVER_TOKEN_CHARS = 20


def _old() -> Any:
    """A field reading a variable of the existing TBD Agents (see tbd_agents.config_legacy)."""
    return Field(
        default=None,
        description="Variable of the existing TBD Agents: see the table of its settings below.",
    )


def default_data_dir() -> Path:
    return Path(user_data_dir("tbd-agents", appauthor=False))


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by `***` (safe to print and log)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not an SQLAlchemy-style URL (e.g. mongodb+srv://): hide user-info by hand.
        scheme, sep, rest = url.partition("://")
        if not sep or "@" not in rest:
            return url
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return parsed.render_as_string(hide_password=True)


class Settings(MetricsSettings, TracingSettings, UsageSettings, RetentionSettings, BaseSettings):
    """Every setting of TBD Agents, from the environment or a `.env` file (the observability
    parts' fields come from their own modules: `tbd_agents.observability.*_config`)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- document store -------------------------------------------------------------------
    db_backend: DbBackend = Field(
        default=DbBackend.POSTGRES,
        description="Document store: postgres (typed tables + pgvector) or mongo (MongoDB + Qdrant).",
    )
    postgres_uri: str | None = Field(
        default=None,
        description="PostgreSQL server. Unset: an embedded PostgreSQL is started in DATA_DIR.",
    )
    postgres_db_name: str = Field(default="tbd_agents", description="PostgreSQL database name.")
    mongo_uri: str = Field(default="mongodb://localhost:27017", description="MongoDB server.")
    mongo_db_name: str = Field(default="copilot_agent_hub", description="MongoDB database name.")

    # --- vectors and profiles ---------------------------------------------------------------
    vector_store_backend: VectorBackend | None = Field(
        default=None,
        description="pgvector or qdrant. Unset: follows DB_BACKEND (postgres→pgvector, mongo→qdrant).",
    )
    compose_profiles: str = Field(
        default="", description="Docker Compose profiles; checked against the two variables above."
    )
    qdrant_url: str | None = Field(
        default=None,
        description="Qdrant server URL; unset: Qdrant's embedded local mode in DATA_DIR.",
    )
    qdrant_api_key: SecretStr | None = Field(
        default=None, description="API key of the Qdrant server."
    )

    # --- local data ------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where local state lives (embedded PostgreSQL, Qdrant local mode, key files).",
    )
    embedded_pg_data_dir: Path | None = Field(
        default=None,
        description="Data directory of the embedded PostgreSQL (default DATA_DIR/pgdata).",
    )
    embedded_pg_shared_buffers: str | None = Field(
        default=None, description="shared_buffers for the embedded server; unset: sized from RAM."
    )
    embedded_pg_maintenance_work_mem: str | None = Field(
        default=None, description="maintenance_work_mem for the embedded server; unset: 512MB."
    )
    embedded_pg_password_file: Path | None = Field(
        default=None,
        description="File (0600) holding the embedded server's `postgres` password, created on "
        "first start (default: beside its data directory, DATA_DIR/pgdata.password).",
    )

    embedded_pg_supervise: bool = Field(
        default=True,
        description="`tbd-agents serve` restarts its embedded PostgreSQL when it stops, is "
        "killed or crashes (PostgreSQL replays its WAL on start), and reports a full disk in "
        "GET /health/ready and in the 503 answers. Off: the API answers 503 until someone "
        "restarts the server.",
    )
    embedded_pg_watch_interval: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between two checks of the embedded PostgreSQL by `serve` (is the "
        "postmaster alive, is there disk space).",
    )
    embedded_pg_restart_max_backoff: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest wait in seconds between two attempts to restart the embedded "
        "PostgreSQL (the first is immediate, then 1, 2, 4 … s); attempts go on until it starts.",
    )

    # --- PostgreSQL engine ------------------------------------------------------------------
    postgres_pool_size: int = Field(
        default=20,
        ge=1,
        le=500,
        description="Connections kept open per process; at least the requests served at once "
        "(connections above it are closed after each use, so a smaller pool reconnects).",
    )
    postgres_max_overflow: int = Field(
        default=10, ge=0, le=500, description="Extra connections allowed above the pool size."
    )
    postgres_pool_pre_ping: bool = Field(
        default=False,
        description="Test each pooled connection with a round trip before use. Off (faster: one "
        "round trip less per request): a connection the server closed (a restart, "
        "pg_terminate_backend) is still replaced before use, because the driver has seen it "
        "close; only a connection lost without the client noticing (a network cut, a proxy's "
        "idle timeout that sends nothing) fails its first request with a 503, after which the "
        "pool's older connections are replaced. Turn it on behind such proxies.",
    )
    postgres_connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a PostgreSQL connection."
    )
    application_name: str = Field(
        default="tbd-agents", description="application_name shown in pg_stat_activity."
    )

    # --- embeddings, knowledge and memory ---------------------------------------------------
    embedding_provider: str = Field(
        default="fastembed",
        description="fastembed, sentence_transformers, openai (any OpenAI-compatible /embeddings) "
        "or hashing (offline, no model). A model that cannot be loaded falls back to hashing, "
        "and start-up says so.",
    )
    embedding_model: str | None = Field(
        default=None,
        description="Model name or local path; unset: the provider's default "
        "(fastembed: BAAI/bge-small-en-v1.5).",
    )
    embedding_dimensions: int | None = Field(
        default=None, ge=1, le=16000, description="Vector size; unset: the model's own."
    )
    embedding_base_url: str | None = Field(
        default=None, description="Base URL of the OpenAI-compatible API (…/v1) for `openai`."
    )
    embedding_api_key: SecretStr | None = Field(
        default=None, description="API key for EMBEDDING_BASE_URL."
    )
    embedding_batch_size: int = Field(
        default=64, ge=1, le=4096, description="Texts per embedding call."
    )
    embedding_allow_download: bool = Field(
        default=True,
        description="Let fastembed / sentence-transformers download a model that is not cached "
        "yet, once, into DATA_DIR/models (later starts load it from there without network). "
        "Off: only local files are used; pre-load with `tbd-agents models fetch`.",
    )
    embedding_download_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds allowed for that one-time model download (an unreachable hub is "
        "detected within 5 s); on expiry start-up falls back to the hashing embedder.",
    )
    embedding_load_timeout: float = Field(
        default=120.0, gt=0, description="Seconds allowed for loading an embedding model."
    )
    knowledge_chunk_size: int = Field(
        default=1200, ge=100, le=100_000, description="Target characters per knowledge chunk."
    )
    knowledge_chunk_overlap: int = Field(
        default=150, ge=0, le=10_000, description="Characters repeated between adjacent chunks."
    )
    stm_max_entries: int = Field(
        default=20,
        ge=0,
        description="An agent's most recently written memories recalled into each run beside "
        "the semantic matches (the existing short-term memory; 0: off).",
    )
    memory_max_per_agent: int = Field(
        default=1000,
        ge=0,
        description="Memories kept per agent; the oldest are evicted (0: no cap).",
    )
    memory_retrieval_top_k: int = Field(
        default=8, ge=0, le=1000, description="Memories recalled into a run's prompt."
    )
    knowledge_retrieval_top_k: int = Field(
        default=5, ge=0, le=1000, description="Knowledge passages retrieved into a run's prompt."
    )
    memory_expiry_sweep_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How often the API server deletes expired memories with their vectors "
        "(0: never; expired memories are hidden from search either way).",
    )

    # --- runtime ---------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None, description="Redis for Celery workers and the event bus; unset: in-process."
    )
    run_queue: str = Field(
        default="tbd-agents-runs",
        min_length=1,
        description="Celery queue the runs are sent to and the workers consume.",
    )
    run_executor: str = Field(
        default="tbd_agents.engine.inprocess:build_executor",
        description="`module:factory` that builds what executes one run (default: the agent "
        "engine). Tests and custom deployments may point it at their own executor.",
    )
    run_lease_seconds: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="A running task whose worker has not heartbeaten for this long is marked "
        "failed (heartbeats are sent every third of it).",
    )
    run_dispatch_retry_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A run accepted but not yet handed to the workers (Redis was down, or the "
        "process that accepted it stopped) is handed over again this long after it was "
        "accepted, and then at this interval, until it is or until RUN_DISPATCH_DEADLINE_SECONDS.",
    )
    run_dispatch_deadline_seconds: float = Field(
        default=900.0,
        gt=0,
        description="A run that could not be handed to the workers within this many seconds "
        "of being accepted is marked failed, with the reason, its error event and its error "
        "webhook (it never stays pending).",
    )
    broker_reconnect_max_retries: int = Field(
        default=0,
        ge=0,
        description="How many times a Celery worker tries to reconnect to a lost Redis "
        "(every 2, 4, … up to 30 s) before it exits with code 1; 0: for ever.",
    )
    run_event_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Events of finished runs older than this are purged; replay with "
        "Last-Event-ID works while they are kept.",
    )
    scheduler_poll_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="How often the scheduler looks for due schedules."
    )
    scheduler_misfire_grace_seconds: float = Field(
        default=300.0,
        ge=0,
        description="An occurrence found later than this after its time counts as missed (after "
        "downtime) and follows the schedule's missed-run policy.",
    )
    webhook_allowed_hosts: str = Field(
        default="",
        description="Comma-separated host names, IPs or CIDR ranges that webhooks may reach even "
        "though they resolve to private, loopback or link-local addresses (refused otherwise).",
    )
    outbound_allowed_hosts: str = Field(
        default="",
        description="Comma-separated host names, IPs or CIDR ranges that provider base_urls, MCP "
        "server URLs and external knowledge sources of non-admin owners, and custom tools with "
        "allowed_hosts (through the sandbox's egress proxy), may reach although they resolve to "
        "internal addresses (records of admins may always, tools never; cloud metadata "
        "addresses only when listed here). Webhooks use WEBHOOK_ALLOWED_HOSTS instead.",
    )
    webhook_max_attempts: int = Field(
        default=5, ge=1, le=50, description="Delivery attempts per webhook before giving up."
    )
    webhook_backoff_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Delay before the second webhook attempt; doubled for each later one.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Timeout of one webhook HTTP request."
    )
    host: str = Field(default="127.0.0.1", description="Address the API server binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the API server.")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_http_level: str = Field(
        default="WARNING",
        description="Level of the HTTP client loggers (httpx, httpcore, openai, anthropic): their "
        "INFO line per request is noise; what they log is redacted like every other line.",
    )

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

    # --- request, upload and extraction limits -------------------------------------------
    max_request_body_mb: float = Field(
        default=10.0,
        gt=0,
        le=10_000,
        description="Largest request body in MB on every route except the upload routes; "
        "counted while it arrives (also chunked bodies), a larger one gets 413.",
    )
    max_upload_mb: float = Field(
        default=50.0,
        gt=0,
        le=10_000,
        description="Largest body in MB of the upload routes (POST /api/knowledge-items/upload "
        "and the bundle imports: POST /api/import, POST /api/<resource>/import).",
    )
    max_json_depth: int = Field(
        default=64,
        ge=2,
        le=1000,
        description="Deepest nesting of arrays/objects accepted in a JSON request body or an "
        "uploaded JSON knowledge file; deeper gets 422.",
    )
    knowledge_max_pdf_pages: int = Field(
        default=2000, ge=1, description="PDFs with more pages are refused (413)."
    )
    knowledge_max_extracted_chars: int = Field(
        default=5_000_000,
        ge=1000,
        description="Most characters of text one knowledge file may expand to (413 above).",
    )
    knowledge_extract_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds text extraction of one file may take; its worker process is "
        "killed then and the upload refused (422).",
    )
    knowledge_extract_memory_mb: int = Field(
        default=1024,
        ge=128,
        description="Address-space limit (MB) of the extraction worker process.",
    )

    # --- API security ----------------------------------------------------------------------
    token_encryption_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) encrypting tokens at rest: comma-separated `VERSION:KEY` "
        "entries (the highest version encrypts, every listed one decrypts). Unset: a key file "
        "DATA_DIR/token-encryption.keys created once with 0600 permissions.",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Serve requests without an API key as the local admin. Refused unless HOST "
        "is a loopback address; start-up warns loudly.",
    )
    github_auth: bool = Field(
        default=False,
        description="Also accept GitHub tokens as Bearer credentials (identity = GitHub login).",
    )
    github_api_url: str = Field(
        default="https://api.github.com", description="GitHub API used to validate GitHub tokens."
    )
    github_token: SecretStr | None = Field(
        default=None,
        description="The server's GitHub token: credential of github_copilot providers that "
        "name no key token (ownerless and admins' providers, sent only to "
        "api.githubcopilot.com) and, unless GITHUB_TOKEN_AUTH=false, a Bearer credential that "
        "acts as the admin `server` (compared in constant time; at least 20 characters).",
    )
    copilot_token_url: str = Field(
        default="https://api.github.com/copilot_internal/v2/token",
        description="Where a GitHub token is exchanged for a short-lived GitHub Copilot session "
        "token before Copilot's chat and models APIs are called (GitHub Enterprise: its API "
        "host's /copilot_internal/v2/token).",
    )
    copilot_api_url: str | None = Field(
        default=None,
        description="Base URL of Copilot's chat API for providers without a base_url of their "
        "own. Unset: the `endpoints.api` the token exchange names (per account plan), else "
        "https://api.githubcopilot.com.",
    )
    default_provider_id: str | None = Field(
        default=None,
        description="Provider record that agents without a provider_id run on (e.g. an Ollama "
        "`custom` provider). Unset: GitHub Copilot with the caller's GitHub token or "
        "GITHUB_TOKEN.",
    )
    default_provider_for_users: bool = Field(
        default=False,
        description="Let non-admin users' agents without a provider_id run on the operator's "
        "credential (GITHUB_TOKEN, or the key of DEFAULT_PROVIDER_ID). Off: only ownerless and "
        "admins' agents do; users sign in with their GitHub token or set a provider_id.",
    )
    github_token_auth: bool = Field(
        default=True,
        description="Accept GITHUB_TOKEN itself as a Bearer credential (identity `server`, "
        "admin), as the existing TBD Agents did. Requests without credentials are refused "
        "either way.",
    )
    github_admin_users: str = Field(
        default="", description="Comma-separated GitHub logins that get the admin scope."
    )
    user_stdio_mcp_commands: str = Field(
        default="",
        description="Comma-separated executables non-admins may start as stdio MCP servers "
        "(exact match on the command after token resolution; `*`: any). They run confined. "
        "Empty: only admins' stdio MCP servers start.",
    )
    allow_user_custom_tools: bool = Field(
        default=False,
        description="Let non-admins create, check and run custom tools (Python run in the "
        "sandbox). Admins always may.",
    )
    plugins_enabled: bool = Field(
        default=True,
        description="Offer the installed plugins (the `tbd_agents.plugins` entry points: slack, "
        "notion, google_sheets, google_sheets_read, bigquery_read, mysql_read, and any a package "
        "adds). False: every plugin's custom tool record is kept but disabled at start-up.",
    )
    plugins_disabled: str = Field(
        default="",
        description="Comma-separated plugin names to disable at start-up (e.g. `slack,notion`).",
    )
    plugins_config: str | None = Field(
        default=None,
        description="Path of a plugins.yaml (`plugins: [{name, enabled}]`, the existing "
        "format): entries with `enabled: false` are disabled like PLUGINS_DISABLED.",
    )
    auth_failure_limit: int = Field(
        default=20,
        ge=1,
        description="Failed authentications one client address may make per window before "
        "further failures are answered 429 (per server process).",
    )
    auth_failure_window_seconds: float = Field(
        default=60.0, gt=0, description="Window of AUTH_FAILURE_LIMIT, in seconds."
    )
    delegation_max_depth: int = Field(
        default=3,
        ge=0,
        le=20,
        description="How deep agents may call other agents as tools (an agent's "
        "agent_tool_ids): the run a user started is depth 0, the agent it calls depth 1, and "
        "so on. A call past it returns an error result to the calling model; 0: no "
        "delegation at all.",
    )

    # --- human approval of tool calls (docs/approvals.md) ------------------------------------
    public_base_url: str | None = Field(
        default=None,
        description="The address people reach this server at (e.g. https://agents.example.com): "
        "approval events and webhooks carry absolute approve/deny links under it. Unset: the "
        "links are paths (/api/approvals/...), to be joined to the address by the receiver.",
    )

    # --- variables of the existing TBD Agents read only to be converted, refused or warned
    # about (tbd_agents.config_legacy; docs/configuration.md lists what each one does) -------
    session_timeout: float | None = _old()
    ltm_max_entries: int | None = _old()
    embeddings_enabled: bool | None = _old()
    embeddings_model: str | None = _old()
    embeddings_dim: str | None = _old()
    knowledge_chunk_chars: int | None = _old()
    knowledge_chunk_overlap_chars: int | None = _old()
    pgvector_dsn: SecretStr | None = _old()
    pgvector_table_prefix: str | None = _old()
    compaction_token_threshold_pct: float | None = _old()
    compaction_keep_recent_turns: str | None = _old()
    otel_endpoint: str | None = _old()
    otel_http_endpoint: str | None = _old()
    api_base_url: str | None = _old()
    plugins_dir: str | None = _old()
    dd_api_key: SecretStr | None = _old()
    dd_app_key: SecretStr | None = _old()
    dd_site: SecretStr | None = _old()
    atlassian_api_token: SecretStr | None = _old()
    atlassian_email: SecretStr | None = _old()
    atlassian_url: SecretStr | None = _old()
    notion_token: SecretStr | None = _old()
    slack_bot_token: SecretStr | None = _old()

    _legacy_warnings: list[str] = PrivateAttr(default_factory=list)
    _legacy_reported: bool = PrivateAttr(default=False)

    @property
    def legacy_warnings(self) -> list[str]:
        """Start-up warnings about variables of the existing TBD Agents that have no effect."""
        return list(self._legacy_warnings)

    def take_legacy_warnings(self) -> list[str]:
        """`legacy_warnings` the first time, then nothing (start-up logs them once)."""
        if self._legacy_reported:
            return []
        self._legacy_reported = True
        return self.legacy_warnings

    @field_validator("db_backend", "vector_store_backend", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return value or None
        return value

    @field_validator("postgres_uri", "redis_url", "qdrant_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("postgres_uri")
    @classmethod
    def _check_postgres_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(
                f"POSTGRES_URI is not a URL ({exc}); write it as "
                "postgresql://user:password@host:5432/dbname"
            ) from None
        if url.drivername not in _POSTGRES_SCHEMES:
            raise ValueError(
                f"POSTGRES_URI must start with postgresql:// or postgresql+asyncpg:// "
                f"(got {url.drivername}://)"
            )
        return value

    @model_validator(mode="after")
    def _check_profiles(self) -> Settings:
        problems, self._legacy_warnings = apply_legacy(self)
        problems += profile_problems(self)
        token = self.github_token.get_secret_value() if self.github_token else ""
        if token and self.github_token_auth and len(token.strip()) < MIN_SERVER_TOKEN_CHARS:
            problems.append(
                f"GITHUB_TOKEN is shorter than {MIN_SERVER_TOKEN_CHARS} characters, too short "
                "to be accepted as a Bearer credential: set the real GitHub token, or "
                "GITHUB_TOKEN_AUTH=false to use it only as the Copilot credential"
            )
        if self.run_dispatch_deadline_seconds <= self.run_dispatch_retry_seconds:
            problems.append(
                f"RUN_DISPATCH_DEADLINE_SECONDS ({self.run_dispatch_deadline_seconds:g}) must be "
                f"longer than RUN_DISPATCH_RETRY_SECONDS ({self.run_dispatch_retry_seconds:g}): "
                "a run that could not be queued gets at least one more try before it fails"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- derived values ----------------------------------------------------------------------
    @property
    def vector_backend(self) -> VectorBackend:
        """The vector store in force (explicit setting, else the one of DB_BACKEND's profile)."""
        return self.vector_store_backend or PROFILE_OF_BACKEND[self.db_backend]

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.db_backend is DbBackend.POSTGRES and self.postgres_uri is None

    @property
    def pg_data_dir(self) -> Path:
        return self.embedded_pg_data_dir or (self.data_dir / "pgdata")

    @cached_property
    def postgres_database(self) -> str:
        """The database to use: the one named in POSTGRES_URI, else POSTGRES_DB_NAME."""
        if self.postgres_uri:
            name = make_url(self.postgres_uri).database
            if name:
                return name
        return self.postgres_db_name

    def postgres_url(self, base: str | None = None) -> URL:
        """SQLAlchemy URL (asyncpg driver) of the configured server, or of `base` if given."""
        raw = base or self.postgres_uri
        if raw is None:
            raise ConfigurationError(
                "No PostgreSQL server URI: the embedded server must be started first "
                "(tbd_agents.storage.postgres.embedded)."
            )
        url = make_url(raw).set(drivername="postgresql+asyncpg")
        if not url.database:
            url = url.set(database=self.postgres_database)
        return url


def profile_problems(settings: Settings) -> list[str]:
    """Return the profile mismatches of `settings`, each naming the variables and the fix."""
    problems: list[str] = []
    db = settings.db_backend
    wanted = PROFILE_OF_BACKEND[db]
    if settings.vector_store_backend and settings.vector_store_backend is not wanted:
        problems.append(
            f"DB_BACKEND={db.value} goes with VECTOR_STORE_BACKEND={wanted.value}, but "
            f"VECTOR_STORE_BACKEND={settings.vector_store_backend.value}: set "
            f"VECTOR_STORE_BACKEND={wanted.value} (or DB_BACKEND="
            f"{'mongo' if db is DbBackend.POSTGRES else 'postgres'} to use the other profile)"
        )
    profiles = {p.strip().lower() for p in settings.compose_profiles.split(",") if p.strip()}
    known = {v.value for v in VectorBackend}
    active = profiles & known
    if len(active) > 1:
        problems.append(
            f"COMPOSE_PROFILES={settings.compose_profiles} starts both the qdrant and pgvector "
            "stacks: keep one (pgvector with DB_BACKEND=postgres, qdrant with DB_BACKEND=mongo)"
        )
    elif active and active != {wanted.value}:
        other = active.pop()
        problems.append(
            f"COMPOSE_PROFILES={other} does not match DB_BACKEND={db.value}: set "
            f"COMPOSE_PROFILES={wanted.value} and restart, or set DB_BACKEND="
            f"{'postgres' if other == 'pgvector' else 'mongo'} with VECTOR_STORE_BACKEND={other}"
        )
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and `.env`); raise ConfigurationError on bad input."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]).upper()
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg}" if loc else msg)
        raise ConfigurationError(
            "Invalid configuration: " + "; ".join(lines), details={"errors": lines}
        ) from None
