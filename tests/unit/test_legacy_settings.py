"""Every setting of the existing TBD Agents (reference §3.1 and §3.2) works here, stops start-up
naming what to do instead, or is accepted with a start-up warning: never ignored silently.

The cases are table-driven over `config_legacy.LEGACY`: each variable is set in the environment,
the settings are built like start-up builds them (`load_settings`), and the test asserts the value
the code reads (the engine's config, its prompt budgets, the fields the services read) or the
error message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tbd_agents.api.app import server_token
from tbd_agents.config import DbBackend, Settings, VectorBackend, load_settings
from tbd_agents.config_legacy import LEGACY, Fate
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.context import Budgets
from tbd_agents.errors import ConfigurationError
from tbd_agents.logs import protect
from tbd_agents.observability.tracing_setup import otlp_config
from tbd_agents.security.cipher import parse_key_ring

#: Every variable the reference lists in §3.1 (app/config.py) and §3.2 (read elsewhere).
REFERENCE_VARIABLES = {
    # §3.1
    "MONGO_URI", "MONGO_DB_NAME", "DEFAULT_MODEL", "DEFAULT_MAX_TURNS", "GITHUB_TOKEN",
    "SESSION_TIMEOUT", "REDIS_URL", "STM_MAX_ENTRIES", "LTM_MAX_ENTRIES",
    "PROMPT_CONTEXT_CHAR_BUDGET", "PROMPT_SKILLS_CHAR_BUDGET", "PROMPT_KNOWLEDGE_CHAR_BUDGET",
    "PROMPT_MEMORY_CHAR_BUDGET", "PROMPT_CONTEXT_ITEM_CHAR_LIMIT", "PROMPT_CONTEXT_MAX_ITEMS",
    "EMBEDDINGS_ENABLED", "EMBEDDINGS_MODEL", "EMBEDDINGS_DIM", "MEMORY_RETRIEVAL_TOP_K",
    "KNOWLEDGE_RETRIEVAL_TOP_K", "KNOWLEDGE_CHUNK_CHARS", "KNOWLEDGE_CHUNK_OVERLAP_CHARS",
    "QDRANT_URL", "QDRANT_API_KEY", "VECTOR_STORE_BACKEND", "PGVECTOR_DSN",
    "PGVECTOR_TABLE_PREFIX", "COMPACTION_ENABLED", "COMPACTION_TOKEN_THRESHOLD_PCT",
    "COMPACTION_KEEP_RECENT_TURNS", "COMPACTION_SUMMARY_MAX_CHARS",
    "TOOL_RESULT_CLEARING_ENABLED", "TOOL_RESULT_CLEARING_KEEP_RECENT",
    "TOOL_RESULT_CONTEXT_MAX_CHARS", "TOOL_DEFINITION_DESCRIPTION_MAX_CHARS",
    "TOKEN_ENCRYPTION_KEY", "OTEL_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_HTTP_ENDPOINT",
    "API_BASE_URL", "PLUGINS_DIR", "PLUGINS_CONFIG", "ANTHROPIC_GATEWAY_MAX_TOKENS",
    "DB_BACKEND", "POSTGRES_URI", "POSTGRES_DB_NAME",
    # §3.2
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES", "PROMETHEUS_MULTIPROC_DIR",
    "WORKER_METRICS_PORT", "COMPOSE_PROFILES", "TBD_IMAGE", "PGVECTOR_USER",
    "PGVECTOR_PASSWORD", "PGVECTOR_DB", "PGVECTOR_PORT", "DD_API_KEY", "DD_APP_KEY", "DD_SITE",
    "ATLASSIAN_API_TOKEN", "ATLASSIAN_EMAIL", "ATLASSIAN_URL", "NOTION_TOKEN",
    "SLACK_BOT_TOKEN", "TBD_PROJECT_ROOT", "PYTHONPATH", "TBD_AGENTS_REPO_ROOT", "AGENT_ID",
    "API_TOKEN", "ANTHROPIC_API_KEY", "TEST_MONGO_URI", "TEST_POSTGRES_URI",
}  # fmt: skip

TOKEN = "ghp_" + "Z" * 36
FERNET_KEY = Fernet.generate_key().decode()
PG = "postgresql://app:pw@db.internal:5432/tbd_agents"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    for variable in LEGACY:  # nothing of the machine's own environment
        monkeypatch.delenv(variable.name, raising=False)
    for ours in ("MEMORY_MAX_PER_AGENT", "EMBEDDING_PROVIDER", "EMBEDDING_MODEL"):
        monkeypatch.delenv(ours, raising=False)


def build(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def otlp(s: Settings) -> Any:
    return otlp_config(s, "tbd-agents-test")


def engine(s: Settings) -> EngineConfig:
    return EngineConfig.from_settings(s)


def budgets(s: Settings) -> Budgets:
    return Budgets.from_config(engine(s))


@dataclass(frozen=True)
class Works:
    """Setting `env` (the variable under test first) makes `check(settings)` true."""

    env: dict[str, str]
    check: Callable[[Settings], Any]

    @property
    def name(self) -> str:
        return next(iter(self.env))


WORKS = [
    Works({"MONGO_URI": "mongodb://mongo.internal:27017"},
          lambda s: s.mongo_uri == "mongodb://mongo.internal:27017"),
    Works({"MONGO_DB_NAME": "hub"}, lambda s: s.mongo_db_name == "hub"),
    Works({"DEFAULT_MODEL": "gpt-4.1"}, lambda s: engine(s).default_model == "gpt-4.1"),
    Works({"DEFAULT_MAX_TURNS": "12"}, lambda s: s.default_max_turns == 12),
    Works({"GITHUB_TOKEN": TOKEN},
          lambda s: engine(s).copilot_token == TOKEN and server_token(s) == TOKEN),
    Works({"SESSION_TIMEOUT": "300"},
          lambda s: engine(s).model_timeout == 300.0 and engine(s).session_timeout == 300.0),
    Works({"STM_MAX_ENTRIES": "5"}, lambda s: engine(s).stm_max_entries == 5),
    Works({"REDIS_URL": "redis://redis:6379/0"},
          lambda s: s.redis_url == "redis://redis:6379/0"),
    Works({"LTM_MAX_ENTRIES": "200"}, lambda s: s.memory_max_per_agent == 200),
    Works({"PROMPT_CONTEXT_CHAR_BUDGET": "24000"}, lambda s: budgets(s).context_tokens == 6000),
    Works({"PROMPT_SKILLS_CHAR_BUDGET": "6000"}, lambda s: budgets(s).skills_tokens == 1500),
    Works({"PROMPT_KNOWLEDGE_CHAR_BUDGET": "2000"},
          lambda s: budgets(s).knowledge_tokens == 500),
    Works({"PROMPT_MEMORY_CHAR_BUDGET": "400"}, lambda s: budgets(s).memory_tokens == 100),
    Works({"PROMPT_CONTEXT_ITEM_CHAR_LIMIT": "1200"}, lambda s: budgets(s).item_tokens == 300),
    Works({"PROMPT_CONTEXT_MAX_ITEMS": "3"},
          lambda s: (budgets(s).knowledge_results, budgets(s).memory_results) == (3, 3)),
    Works({"EMBEDDINGS_ENABLED": "false"}, lambda s: s.embedding_provider == "hashing"),
    Works({"EMBEDDINGS_MODEL": "BAAI/bge-base-en-v1.5"},
          lambda s: s.embedding_model == "BAAI/bge-base-en-v1.5"
          and s.embedding_provider == "fastembed"),
    Works({"MEMORY_RETRIEVAL_TOP_K": "4"}, lambda s: budgets(s).memory_results == 4),
    Works({"KNOWLEDGE_RETRIEVAL_TOP_K": "9"}, lambda s: budgets(s).knowledge_results == 9),
    Works({"KNOWLEDGE_CHUNK_CHARS": "800"}, lambda s: s.knowledge_chunk_size == 800),
    Works({"KNOWLEDGE_CHUNK_OVERLAP_CHARS": "80"}, lambda s: s.knowledge_chunk_overlap == 80),
    Works({"QDRANT_URL": "http://qdrant:6333", "DB_BACKEND": "mongo"},
          lambda s: s.qdrant_url == "http://qdrant:6333"),
    Works({"QDRANT_API_KEY": "qk-1"},
          lambda s: s.qdrant_api_key is not None and s.qdrant_api_key.get_secret_value() == "qk-1"),
    Works({"VECTOR_STORE_BACKEND": "qdrant", "DB_BACKEND": "mongo"},
          lambda s: s.vector_backend is VectorBackend.QDRANT),
    # PGVECTOR_DSN naming the database of POSTGRES_URI (other driver, other credentials): fine.
    Works({"PGVECTOR_DSN": "postgresql+psycopg://vs:other@db.internal/tbd_agents",
           "POSTGRES_URI": PG},
          lambda s: s.postgres_uri == PG),
    Works({"COMPACTION_ENABLED": "false"}, lambda s: engine(s).compaction_enabled is False),
    Works({"COMPACTION_TOKEN_THRESHOLD_PCT": "0.75"},
          lambda s: engine(s).compaction_threshold == 0.75),
    Works({"COMPACTION_SUMMARY_MAX_CHARS": "1500"},
          lambda s: engine(s).summary_max_chars == 1500),
    Works({"TOOL_RESULT_CLEARING_ENABLED": "false"},
          lambda s: engine(s).clear_tool_results is False),
    Works({"TOOL_RESULT_CLEARING_KEEP_RECENT": "4"},
          lambda s: engine(s).keep_recent_tool_groups == 4),
    Works({"TOOL_RESULT_CONTEXT_MAX_CHARS": "4000"},
          lambda s: engine(s).max_tool_result_chars == 4000),
    Works({"TOOL_DEFINITION_DESCRIPTION_MAX_CHARS": "240"},
          lambda s: engine(s).tool_description_max_chars == 240),
    Works({"TOKEN_ENCRYPTION_KEY": FERNET_KEY},  # a bare key (the existing form): version 1
          lambda s: s.token_encryption_key is not None
          and parse_key_ring(s.token_encryption_key.get_secret_value()) == {1: FERNET_KEY}),
    Works({"ANTHROPIC_GATEWAY_MAX_TOKENS": "8192"},
          lambda s: engine(s).anthropic_max_tokens == 8192),
    Works({"DB_BACKEND": "mongo"}, lambda s: s.db_backend is DbBackend.MONGO),
    Works({"POSTGRES_URI": PG}, lambda s: s.postgres_uri == PG),
    Works({"POSTGRES_DB_NAME": "agents_prod", "POSTGRES_URI": "postgresql://u@db:5432"},
          lambda s: s.postgres_database == "agents_prod"),
    Works({"COMPOSE_PROFILES": "pgvector"}, lambda s: s.compose_profiles == "pgvector"),
    Works({"PLUGINS_CONFIG": "app/plugins.yaml"}, lambda s: s.plugins_config == "app/plugins.yaml"),
    Works({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317"},
          lambda s: (o := otlp(s)) is not None and o.protocol == "grpc"
          and o.endpoint == "http://otel-collector:4317"),
    Works({"OTEL_SERVICE_NAME": "hub", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
          lambda s: (o := otlp(s)) is not None and o.service_name == "hub"),
    Works({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
          lambda s: (o := otlp(s)) is not None
          and o.resource.get("deployment.environment") == "prod"),
    Works({"PROMETHEUS_MULTIPROC_DIR": "/tmp/prom"},
          lambda s: str(s.prometheus_multiproc_dir) == "/tmp/prom"),
    Works({"WORKER_METRICS_PORT": "9111"}, lambda s: s.worker_metrics_port == 9111),
]  # fmt: skip

REFUSED = {
    "COMPACTION_KEEP_RECENT_TURNS": ("6", "ENGINE_COMPACTION_THRESHOLD"),
}

NO_EFFECT = {
    "EMBEDDINGS_DIM": ("384", "EMBEDDING_DIMENSIONS"),
    "PGVECTOR_TABLE_PREFIX": ("vs", "memory_vectors"),
    "OTEL_ENDPOINT": ("http://otel-collector:4317", "OpenTelemetry"),
    "OTEL_HTTP_ENDPOINT": ("http://otel-collector:4318", "Copilot CLI"),
    "API_BASE_URL": ("http://app:8000", "memory tools"),
    "PLUGINS_DIR": ("app/plugins", "entry points"),
    **dict.fromkeys(
        (
            "DD_API_KEY", "DD_APP_KEY", "DD_SITE", "ATLASSIAN_API_TOKEN", "ATLASSIAN_EMAIL",
            "ATLASSIAN_URL", "NOTION_TOKEN", "SLACK_BOT_TOKEN",
        ),
        ("value-1", "{{token:NAME}}"),
    ),
}  # fmt: skip


def test_the_table_covers_every_variable_of_the_reference() -> None:
    assert {v.name for v in LEGACY} == REFERENCE_VARIABLES
    assert len({v.name for v in LEGACY}) == len(LEGACY)


def test_every_variable_read_has_a_case_here() -> None:
    read = {v.name for v in LEGACY if v.fate is not Fate.NOT_READ}
    assert read == {w.name for w in WORKS} | set(REFUSED) | set(NO_EFFECT)
    fates = {v.name: v.fate for v in LEGACY}
    assert all(fates[w.name] in (Fate.WORKS, Fate.RENAMED) for w in WORKS)
    assert all(fates[n] is Fate.REFUSED for n in REFUSED)
    assert all(fates[n] is Fate.NO_EFFECT for n in NO_EFFECT)


@pytest.mark.parametrize("case", WORKS, ids=lambda c: c.name)
def test_a_working_variable_reaches_the_setting_our_code_reads(
    monkeypatch: pytest.MonkeyPatch, case: Works
) -> None:
    before = load_settings()
    assert not case.check(before), "the case must change something from the defaults"
    settings = build(monkeypatch, case.env)
    assert case.check(settings)
    assert settings.legacy_warnings == []


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_variable_stops_start_up_naming_it_and_what_instead(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    value, replacement = REFUSED[name]
    with pytest.raises(ConfigurationError) as caught:
        build(monkeypatch, {name: value})
    message = caught.value.message
    assert f"{name} is not supported" in message
    assert replacement in message and f"remove {name}" in message


@pytest.mark.parametrize("name", sorted(NO_EFFECT))
def test_a_variable_without_effect_is_accepted_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    value, why = NO_EFFECT[name]
    settings = build(monkeypatch, {name: value})
    [warning] = settings.legacy_warnings
    assert warning.startswith(f"{name} has no effect: ") and why in warning
    assert "value-1" not in warning  # secrets (DD_API_KEY…) are never echoed


def test_the_warnings_are_logged_once_at_start_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = build(monkeypatch, {"OTEL_ENDPOINT": "http://c:4317", "DD_SITE": "eu"})
    with caplog.at_level(logging.WARNING, logger="tbd_agents.config"):
        protect(settings)  # create_app, make_celery and configure_logging all call it
        protect(settings)
    logged = [r.getMessage() for r in caplog.records if r.name == "tbd_agents.config"]
    assert sorted(m.split(" ")[0] for m in logged) == ["DD_SITE", "OTEL_ENDPOINT"]


def test_blank_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = build(monkeypatch, {"EMBEDDINGS_DIM": "", "OTEL_ENDPOINT": "  "})
    assert settings.legacy_warnings == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"LTM_MAX_ENTRIES": "200", "MEMORY_MAX_PER_AGENT": "500"},
            "LTM_MAX_ENTRIES and MEMORY_MAX_PER_AGENT are both set, to different values: keep "
            "MEMORY_MAX_PER_AGENT",
        ),
        (
            {"EMBEDDINGS_ENABLED": "false", "EMBEDDING_PROVIDER": "openai"},
            "EMBEDDINGS_ENABLED=false contradicts EMBEDDING_PROVIDER=openai",
        ),
        (
            {"EMBEDDINGS_MODEL": "BAAI/bge-small-en-v1.5", "EMBEDDING_PROVIDER": "openai"},
            "EMBEDDINGS_MODEL names a fastembed model, but EMBEDDING_PROVIDER=openai: set "
            "EMBEDDING_MODEL",
        ),
        (
            {"PGVECTOR_DSN": "postgresql://vs:hunter2@vectors:5432/vs", "POSTGRES_URI": PG},
            "PGVECTOR_DSN=postgresql://vs:***@vectors:5432/vs names another database than "
            "POSTGRES_URI=postgresql://app:***@db.internal:5432/tbd_agents",
        ),
        (
            {"PGVECTOR_DSN": "postgresql://vs:hunter2@vectors:5432/vs"},
            "but POSTGRES_URI is not set",
        ),
        (
            {"PGVECTOR_DSN": PG, "POSTGRES_URI": PG, "DB_BACKEND": "mongo"},
            "PGVECTOR_DSN is set, but the vector store is Qdrant",
        ),
        (
            {"COMPACTION_TOKEN_THRESHOLD_PCT": "75"},
            "COMPACTION_TOKEN_THRESHOLD_PCT (read as ENGINE_COMPACTION_THRESHOLD): Input should "
            "be less than or equal to 1",
        ),
        ({"LTM_MAX_ENTRIES": "-1"}, "LTM_MAX_ENTRIES (read as MEMORY_MAX_PER_AGENT)"),
        ({"SESSION_TIMEOUT": "soon"}, "SESSION_TIMEOUT"),
        ({"GITHUB_TOKEN": "short"}, "GITHUB_TOKEN is shorter than 20 characters"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else "",
)
def test_contradictions_and_bad_values_stop_start_up_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build(monkeypatch, env)
    assert expected in caught.value.message
    assert "hunter2" not in caught.value.message and "pw@" not in caught.value.message


def test_the_same_value_under_both_names_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = build(monkeypatch, {"LTM_MAX_ENTRIES": "300", "MEMORY_MAX_PER_AGENT": "300"})
    assert settings.memory_max_per_agent == 300


def test_ltm_zero_means_no_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build(monkeypatch, {"LTM_MAX_ENTRIES": "0"}).memory_max_per_agent == 0


def test_a_short_github_token_is_fine_when_not_a_credential(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = build(monkeypatch, {"GITHUB_TOKEN": "short", "GITHUB_TOKEN_AUTH": "false"})
    assert server_token(settings) is None and engine(settings).copilot_token == "short"


def test_defaults_keep_our_engine_budgets() -> None:
    """Our defaults, expressed in the existing character units, are the token budgets the
    engine had (2000 / 3000 / 1000 tokens, 5 passages, 8 memories, no overall clip)."""
    assert budgets(load_settings()) == Budgets()
