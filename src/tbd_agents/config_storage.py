"""Settings of the document store, the vector store, local data and the PostgreSQL engine."""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tbd_agents.errors import ConfigurationError


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


def default_data_dir() -> Path:
    return Path(user_data_dir("tbd-agents", appauthor=False))


class StorageSettings(BaseSettings):
    """Where records, vectors and local state live, and how PostgreSQL is reached.

    Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""

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

    @field_validator("db_backend", "vector_store_backend", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return value or None
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
