"""Settings: the one place that reads the environment.

`Settings()` is built once at start-up (CLI, API, worker, scripts) and passed down. Nothing else in
the package reads `os.environ`. Consistency between the backend variables is checked here so a
mismatched profile stops start-up with one message that names the variables and the fix.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tbd_agents.config_api import ApiSettings
from tbd_agents.config_engine import EngineSettings
from tbd_agents.config_knowledge import KnowledgeSettings
from tbd_agents.config_legacy import apply_legacy
from tbd_agents.config_runtime import RuntimeSettings
from tbd_agents.config_storage import (
    PROFILE_OF_BACKEND,
    DbBackend,
    StorageSettings,
    VectorBackend,
    default_data_dir,
)
from tbd_agents.errors import ConfigurationError
from tbd_agents.observability.metrics_config import MetricsSettings
from tbd_agents.observability.tracing_config import TracingSettings
from tbd_agents.observability.usage_config import UsageSettings
from tbd_agents.services.retention_config import RetentionSettings

__all__ = [
    "PROFILE_OF_BACKEND",
    "DbBackend",
    "Settings",
    "VectorBackend",
    "default_data_dir",
    "load_settings",
    "profile_problems",
    "redact_url",
]

#: Shortest GITHUB_TOKEN accepted as a Bearer credential (GitHub tokens are 40 or more).
MIN_SERVER_TOKEN_CHARS = 20


def _old() -> Any:
    """A field reading a variable of the existing TBD Agents (see tbd_agents.config_legacy)."""
    return Field(
        default=None,
        description="Variable of the existing TBD Agents: see the table of its settings below.",
    )


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


class Settings(
    ApiSettings,
    EngineSettings,
    RuntimeSettings,
    KnowledgeSettings,
    StorageSettings,
    MetricsSettings,
    TracingSettings,
    UsageSettings,
    RetentionSettings,
):
    """Every setting of TBD Agents, from the environment or a `.env` file. The fields of each
    part come from its own module (`tbd_agents.config_*`, `tbd_agents.observability.*_config`,
    `tbd_agents.services.retention_config`); the variables of the existing TBD Agents and the
    checks across parts are here.

    The parts are listed last-first: pydantic orders the fields from the last base to the first,
    and that order (storage, knowledge, runtime, engine, API, then the existing system's
    variables) is the order of the generated reference in docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
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

    @field_validator("postgres_uri", "redis_url", "qdrant_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
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
