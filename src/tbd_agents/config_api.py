"""Settings of the API: request, upload and extraction limits, authentication and who may do
what, plugins, delegation depth and the public address of approval links."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings


class ApiSettings(BaseSettings):
    """What requests may carry and who may do what.

    Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""

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
