"""The table of the existing TBD Agents' variables (`LEGACY`): every one with its fate, what
differs here, and the converters of the renamed ones that need more than a new name. Applied by
`tbd_agents.config_legacy.apply_legacy`; rendered into docs/configuration.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tbd_agents.config_legacy_fate import Fate, LegacyVariable


def _embeddings_enabled(settings: Any, enabled: bool) -> dict[str, Any]:
    if enabled:
        return {}
    provider = settings.embedding_provider.strip().lower()
    if "embedding_provider" in settings.model_fields_set and provider != "hashing":
        raise ValueError(
            f"EMBEDDINGS_ENABLED=false contradicts EMBEDDING_PROVIDER={provider}: remove "
            "EMBEDDINGS_ENABLED (EMBEDDING_PROVIDER chooses the embedder; hashing is the one "
            "without a model)"
        )
    return {"embedding_provider": "hashing"}


def _embeddings_model(settings: Any, model: str) -> dict[str, Any]:
    provider = settings.embedding_provider.strip().lower().replace("-", "_")
    if provider not in ("fastembed", "hashing"):
        raise ValueError(
            f"EMBEDDINGS_MODEL names a fastembed model, but EMBEDDING_PROVIDER={provider}: set "
            "EMBEDDING_MODEL to a model of that provider and remove EMBEDDINGS_MODEL"
        )
    return {"embedding_model": model.strip()}


def _database_of(url: str) -> tuple[str | None, int, str | None]:
    parsed = make_url(url)
    return (parsed.host or "localhost", parsed.port or 5432, parsed.database)


def _pgvector_dsn(settings: Any, dsn: SecretStr) -> dict[str, Any]:
    from tbd_agents.config import VectorBackend, redact_url

    raw = dsn.get_secret_value().strip()
    if settings.vector_backend is not VectorBackend.PGVECTOR:
        raise ValueError(
            "PGVECTOR_DSN is set, but the vector store is Qdrant "
            f"(VECTOR_STORE_BACKEND={settings.vector_backend.value}): remove PGVECTOR_DSN"
        )
    fix = (
        "vectors are stored in the PostgreSQL database of POSTGRES_URI itself (tables "
        "knowledge_chunks and memory_vectors): set POSTGRES_URI to that database and remove "
        "PGVECTOR_DSN"
    )
    if settings.postgres_uri is None:
        raise ValueError(f"PGVECTOR_DSN={redact_url(raw)} but POSTGRES_URI is not set: {fix}")
    try:
        theirs = _database_of(raw)
    except ArgumentError:
        raise ValueError(f"PGVECTOR_DSN is not a URL: {fix}") from None
    ours = _database_of(settings.postgres_uri)
    ours = (ours[0], ours[1], ours[2] or settings.postgres_db_name)
    if theirs != ours:
        raise ValueError(
            f"PGVECTOR_DSN={redact_url(raw)} names another database than POSTGRES_URI="
            f"{redact_url(settings.postgres_uri)}: {fix}"
        )
    return {}


_FASTEMBED = "(only with EMBEDDING_PROVIDER=fastembed, the default)"
_NO_TRACES = "OpenTelemetry traces are exported to OTEL_EXPORTER_OTLP_ENDPOINT: set that one"
_PASSTHROUGH = (
    "stdio MCP servers here do not inherit the server's environment (it holds every secret of "
    "the server): store the value as a token (POST /api/tokens) and put {{token:NAME}} in the "
    "MCP server's connection_config env"
)

LEGACY: tuple[LegacyVariable, ...] = (
    # --- app/config.py (reference §3.1) --------------------------------------------------------
    LegacyVariable(
        "MONGO_URI",
        Fate.WORKS,
        "MONGO_URI",
        "Default `mongodb://localhost:27017` (was `mongodb://mongodb:27017`, the Compose "
        "service); only read with DB_BACKEND=mongo: files are in PostgreSQL on the postgres "
        "profile.",
    ),
    LegacyVariable("MONGO_DB_NAME", Fate.WORKS, "MONGO_DB_NAME", "Same default."),
    LegacyVariable(
        "DEFAULT_MODEL",
        Fate.WORKS,
        "DEFAULT_MODEL",
        "The model of a run whose workflow and agent name none, after the provider's own "
        "`default_model`. Default unset (was `gpt-4.1`, which not every provider serves): a "
        "run with no model anywhere is refused with a message, except on the default GitHub "
        "Copilot provider (agents without provider_id), which still uses `gpt-4.1`.",
    ),
    LegacyVariable(
        "DEFAULT_MAX_TURNS",
        Fate.WORKS,
        "DEFAULT_MAX_TURNS",
        "`max_turns` of a workflow created without one. Same default (5).",
    ),
    LegacyVariable(
        "GITHUB_TOKEN",
        Fate.WORKS,
        "GITHUB_TOKEN",
        "Credential of `github_copilot` providers that name no key token (operator and admin "
        "providers only, sent only to api.githubcopilot.com) and of the default model (agents "
        "without provider_id; users' agents only with DEFAULT_PROVIDER_FOR_USERS=true; "
        "exchanged for a Copilot session token at COPILOT_TOKEN_URL), and, unless "
        "GITHUB_TOKEN_AUTH="
        "false, a Bearer credential acting as the admin `server`. A request without "
        "credentials is NOT accepted (the existing fallback to `server` is a gap we do not "
        "copy).",
    ),
    LegacyVariable(
        "SESSION_TIMEOUT",
        Fate.RENAMED,
        "ENGINE_SESSION_TIMEOUT",
        "Both of its meanings: the longest a run of a workflow with infinite_session=false may "
        "last (ENGINE_SESSION_TIMEOUT, default 600) and the seconds a model call may take "
        "(ENGINE_MODEL_TIMEOUT, the OpenAI-compatible path's meaning; our default is 120).",
        convert=lambda _settings, value: {
            "engine_session_timeout": value,
            "engine_model_timeout": value,
        },
        label="read as `ENGINE_SESSION_TIMEOUT` and `ENGINE_MODEL_TIMEOUT`",
    ),
    LegacyVariable("REDIS_URL", Fate.WORKS, "REDIS_URL", "Default unset: runs in-process."),
    LegacyVariable(
        "STM_MAX_ENTRIES",
        Fate.WORKS,
        "STM_MAX_ENTRIES",
        "The agent's last N memories are recalled beside the semantic matches, read from the "
        "database (newest first) rather than a Redis set; 0 turns it off.",
    ),
    LegacyVariable(
        "LTM_MAX_ENTRIES",
        Fate.RENAMED,
        "MEMORY_MAX_PER_AGENT",
        "Same meaning, 0 = no cap. Our default is 1000 (was 200).",
    ),
    LegacyVariable(
        "PROMPT_CONTEXT_CHAR_BUDGET",
        Fate.WORKS,
        "PROMPT_CONTEXT_CHAR_BUDGET",
        "Characters, converted to tokens (4 per token); the output-format policy is always "
        "kept. Default unset: no overall clip, each section has its own budget (was 24000).",
    ),
    LegacyVariable(
        "PROMPT_SKILLS_CHAR_BUDGET",
        Fate.WORKS,
        "PROMPT_SKILLS_CHAR_BUDGET",
        "Characters, converted to tokens (4 per token). Default 8000 (was 6000).",
    ),
    LegacyVariable(
        "PROMPT_KNOWLEDGE_CHAR_BUDGET",
        Fate.WORKS,
        "PROMPT_KNOWLEDGE_CHAR_BUDGET",
        "Characters, converted to tokens (4 per token). Same default.",
    ),
    LegacyVariable(
        "PROMPT_MEMORY_CHAR_BUDGET",
        Fate.WORKS,
        "PROMPT_MEMORY_CHAR_BUDGET",
        "Characters, converted to tokens (4 per token). Same default.",
    ),
    LegacyVariable(
        "PROMPT_CONTEXT_ITEM_CHAR_LIMIT",
        Fate.WORKS,
        "PROMPT_CONTEXT_ITEM_CHAR_LIMIT",
        "Characters, converted to tokens. Default unset (was 1200): an item is only bounded "
        "by its section's budget.",
    ),
    LegacyVariable(
        "PROMPT_CONTEXT_MAX_ITEMS",
        Fate.WORKS,
        "PROMPT_CONTEXT_MAX_ITEMS",
        "Caps both the knowledge passages and the memories put in the prompt. Default unset "
        "(was 12): KNOWLEDGE_RETRIEVAL_TOP_K and MEMORY_RETRIEVAL_TOP_K decide.",
    ),
    LegacyVariable(
        "EMBEDDINGS_ENABLED",
        Fate.RENAMED,
        "EMBEDDING_PROVIDER",
        "`false` selects EMBEDDING_PROVIDER=hashing (offline, no model); `true` changes nothing.",
        _embeddings_enabled,
    ),
    LegacyVariable(
        "EMBEDDINGS_MODEL",
        Fate.RENAMED,
        "EMBEDDING_MODEL",
        f"The fastembed model {_FASTEMBED}; same default. fastembed is an optional extra "
        "(`tbd-agents[fastembed]`): without it, or without the cached model, start-up says so "
        "and falls back to the hashing embedder.",
        _embeddings_model,
    ),
    LegacyVariable(
        "EMBEDDINGS_DIM",
        Fate.NO_EFFECT,
        note="the vector size is the embedding model's own (the existing TBD Agents only "
        "logged this value); EMBEDDING_DIMENSIONS sets a size where the provider supports it",
    ),
    LegacyVariable(
        "MEMORY_RETRIEVAL_TOP_K",
        Fate.WORKS,
        "MEMORY_RETRIEVAL_TOP_K",
        "Memories recalled into a run's prompt. Same default.",
    ),
    LegacyVariable(
        "KNOWLEDGE_RETRIEVAL_TOP_K",
        Fate.WORKS,
        "KNOWLEDGE_RETRIEVAL_TOP_K",
        "Unused by the existing system; here it works: knowledge passages put in a run's "
        "prompt. Default 5 (was 8, unused).",
    ),
    LegacyVariable(
        "KNOWLEDGE_CHUNK_CHARS",
        Fate.RENAMED,
        "KNOWLEDGE_CHUNK_SIZE",
        "Effectively unused by the existing system; here it sizes the chunks of every "
        "ingested knowledge item. Same default.",
    ),
    LegacyVariable(
        "KNOWLEDGE_CHUNK_OVERLAP_CHARS",
        Fate.RENAMED,
        "KNOWLEDGE_CHUNK_OVERLAP",
        "As KNOWLEDGE_CHUNK_CHARS. Same default.",
    ),
    LegacyVariable(
        "QDRANT_URL",
        Fate.WORKS,
        "QDRANT_URL",
        "Unset: Qdrant's embedded local mode in DATA_DIR (semantic memory is never disabled "
        "silently).",
    ),
    LegacyVariable("QDRANT_API_KEY", Fate.WORKS, "QDRANT_API_KEY", "Same."),
    LegacyVariable(
        "VECTOR_STORE_BACKEND",
        Fate.WORKS,
        "VECTOR_STORE_BACKEND",
        "Default: follows DB_BACKEND (was `qdrant`); must match it.",
    ),
    LegacyVariable(
        "PGVECTOR_DSN",
        Fate.RENAMED,
        "POSTGRES_URI",
        "Vectors live in the PostgreSQL database of POSTGRES_URI: accepted when it names that "
        "database, refused otherwise (with the fix).",
        _pgvector_dsn,
        label="checked: must name the database of `POSTGRES_URI`",
    ),
    LegacyVariable(
        "PGVECTOR_TABLE_PREFIX",
        Fate.NO_EFFECT,
        note="the vector tables here have fixed names (knowledge_chunks and memory_vectors, "
        "created by the migrations); vectors of migrated memories are rebuilt from the "
        "memories with `tbd-agents vectors index-memories`",
    ),
    LegacyVariable(
        "COMPACTION_ENABLED",
        Fate.WORKS,
        "COMPACTION_ENABLED",
        "Applies to every provider. Same default.",
    ),
    LegacyVariable(
        "COMPACTION_TOKEN_THRESHOLD_PCT",
        Fate.RENAMED,
        "ENGINE_COMPACTION_THRESHOLD",
        "A fraction of the model's own context window (from the model catalog), not of an "
        "assumed 128k. Our default is 0.8 (was 0.75).",
    ),
    LegacyVariable(
        "COMPACTION_KEEP_RECENT_TURNS",
        Fate.REFUSED,
        note="compaction here keeps the most recent messages that fit in half of the "
        "compaction limit (ENGINE_COMPACTION_THRESHOLD of the model's context window) and "
        "summarises the rest with the model, never a fixed number of messages; remove "
        "COMPACTION_KEEP_RECENT_TURNS (TOOL_RESULT_CLEARING_KEEP_RECENT sets how many recent "
        "tool calls keep their results)",
    ),
    LegacyVariable(
        "COMPACTION_SUMMARY_MAX_CHARS",
        Fate.WORKS,
        "COMPACTION_SUMMARY_MAX_CHARS",
        "Unused by the existing system (it wrote no summary); here compaction summarises with "
        "the model and this caps the summary. Default unset (was 1500, unused).",
    ),
    LegacyVariable(
        "TOOL_RESULT_CLEARING_ENABLED",
        Fate.WORKS,
        "TOOL_RESULT_CLEARING_ENABLED",
        "Same default.",
    ),
    LegacyVariable(
        "TOOL_RESULT_CLEARING_KEEP_RECENT",
        Fate.WORKS,
        "TOOL_RESULT_CLEARING_KEEP_RECENT",
        "Counted in tool-call turns (a model reply with all of its tool results, which are "
        "never separated) rather than single results. Default 2 (was 4 results).",
    ),
    LegacyVariable(
        "TOOL_RESULT_CONTEXT_MAX_CHARS",
        Fate.WORKS,
        "TOOL_RESULT_CONTEXT_MAX_CHARS",
        "Default 20000 (was 4000): compaction clears old results when the context fills.",
    ),
    LegacyVariable(
        "TOOL_DEFINITION_DESCRIPTION_MAX_CHARS",
        Fate.WORKS,
        "TOOL_DEFINITION_DESCRIPTION_MAX_CHARS",
        "Default unset (was 240): descriptions are sent whole.",
    ),
    LegacyVariable(
        "TOKEN_ENCRYPTION_KEY",
        Fate.WORKS,
        "TOKEN_ENCRYPTION_KEY",
        "A bare Fernet key is key version 1, so existing encrypted tokens decrypt. Unset: a "
        "key file is created once (the existing system failed every token operation).",
    ),
    LegacyVariable(
        "OTEL_ENDPOINT",
        Fate.NO_EFFECT,
        note=f"the existing TBD Agents never used it either; {_NO_TRACES}",
    ),
    LegacyVariable(
        "OTEL_SERVICE_NAME",
        Fate.WORKS,
        "OTEL_SERVICE_NAME",
        "Same meaning; unset, each process names itself as before (tbd-agents-api, "
        "tbd-agents-worker, tbd-agents-beat).",
    ),
    LegacyVariable(
        "OTEL_HTTP_ENDPOINT",
        Fate.NO_EFFECT,
        note="it configured the Copilot CLI subprocess's telemetry; there is no Copilot CLI "
        "here (github_copilot is an HTTP provider)",
    ),
    LegacyVariable(
        "API_BASE_URL",
        Fate.NO_EFFECT,
        note="the memory tools run inside the engine; no memory MCP subprocess calls the API back",
    ),
    LegacyVariable(
        "PLUGINS_DIR",
        Fate.NO_EFFECT,
        note="plugins are installed Python packages found through the `tbd_agents.plugins` "
        "entry points (docs/plugins.md), not modules in a directory; the six bundled plugins "
        "are built in",
    ),
    LegacyVariable(
        "PLUGINS_CONFIG",
        Fate.WORKS,
        "PLUGINS_CONFIG",
        "The same plugins.yaml (`plugins: [{name, enabled}]`): `enabled: false` disables a "
        "plugin. Plugins it does not list stay enabled (they are discovered, not listed). "
        "Default unset (was app/plugins.yaml).",
    ),
    LegacyVariable(
        "ANTHROPIC_GATEWAY_MAX_TOKENS",
        Fate.WORKS,
        "ANTHROPIC_GATEWAY_MAX_TOKENS",
        "`max_tokens` of every Anthropic request (gateway or not). Default unset (was 8192): "
        "the model's own output limit from the model catalog.",
    ),
    LegacyVariable(
        "DB_BACKEND",
        Fate.WORKS,
        "DB_BACKEND",
        "Default `postgres` (was `mongo`).",
    ),
    LegacyVariable(
        "POSTGRES_URI",
        Fate.WORKS,
        "POSTGRES_URI",
        "Default unset: an embedded PostgreSQL in DATA_DIR. Any postgresql:// driver form.",
    ),
    LegacyVariable(
        "POSTGRES_DB_NAME",
        Fate.WORKS,
        "POSTGRES_DB_NAME",
        "Unused by the existing system; here the database when POSTGRES_URI names none (and "
        "of the embedded server). Same default.",
    ),
    # --- read outside Settings (reference §3.2) ------------------------------------------------
    LegacyVariable(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        Fate.WORKS,
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "Traces of the API, workers and scheduler go to this OTLP collector; the protocol is "
        "gRPC when the port is 4317 (as before), else HTTP, unless OTEL_EXPORTER_OTLP_PROTOCOL "
        "says which.",
    ),
    LegacyVariable(
        "OTEL_RESOURCE_ATTRIBUTES",
        Fate.WORKS,
        "OTEL_RESOURCE_ATTRIBUTES",
        "Same meaning (key=value pairs added to every span's resource).",
    ),
    LegacyVariable(
        "PROMETHEUS_MULTIPROC_DIR",
        Fate.WORKS,
        "PROMETHEUS_MULTIPROC_DIR",
        "Same meaning (prometheus_client's multiprocess mode); the process clears it at "
        "start, so give each service its own directory.",
    ),
    LegacyVariable(
        "WORKER_METRICS_PORT",
        Fate.WORKS,
        "WORKER_METRICS_PORT",
        "Same port (9101); scrapes need METRICS_TOKEN or a client in METRICS_ALLOWED_NETWORKS "
        "(loopback by default).",
    ),
    LegacyVariable(
        "COMPOSE_PROFILES",
        Fate.WORKS,
        "COMPOSE_PROFILES",
        "Read by Docker Compose; checked against DB_BACKEND here.",
    ),
    *(
        LegacyVariable(name, Fate.NO_EFFECT, note=_PASSTHROUGH)
        for name in (
            "DD_API_KEY",
            "DD_APP_KEY",
            "DD_SITE",
            "ATLASSIAN_API_TOKEN",
            "ATLASSIAN_EMAIL",
            "ATLASSIAN_URL",
            "NOTION_TOKEN",
            "SLACK_BOT_TOKEN",
        )
    ),
    *(
        LegacyVariable(name, Fate.NOT_READ, note="Docker Compose's (the container); as before.")
        for name in (
            "TBD_IMAGE",
            "PGVECTOR_USER",
            "PGVECTOR_PASSWORD",
            "PGVECTOR_DB",
            "PGVECTOR_PORT",
        )
    ),
    *(
        LegacyVariable(
            name,
            Fate.NOT_READ,
            note="Set by the existing application for its custom-tool and memory-MCP "
            "subprocesses; custom tools here run in the sandbox with their own environment.",
        )
        for name in (
            "TBD_PROJECT_ROOT",
            "PYTHONPATH",
            "TBD_AGENTS_REPO_ROOT",
            "AGENT_ID",
            "API_TOKEN",
        )
    ),
    LegacyVariable(
        "ANTHROPIC_API_KEY",
        Fate.NOT_READ,
        note="Read by the existing seed script only; keys are tokens (POST /api/tokens) "
        "named by a provider.",
    ),
    *(
        LegacyVariable(
            name, Fate.NOT_READ, note="The existing test suite's; ours starts its own servers."
        )
        for name in ("TEST_MONGO_URI", "TEST_POSTGRES_URI")
    ),
)

BY_NAME: Mapping[str, LegacyVariable] = {v.name: v for v in LEGACY}

#: `Settings` fields that exist only to read an old variable (not settings of ours).
INPUT_FIELDS: frozenset[str] = frozenset(
    v.field for v in LEGACY if v.fate in (Fate.RENAMED, Fate.REFUSED, Fate.NO_EFFECT)
)
