"""Settings from the environment: the guide's variables, URL forms, and profile mismatches that
stop start-up with one message naming the variables and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tbd_agents.config import DbBackend, VectorBackend, load_settings
from tbd_agents.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def _error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    return caught.value.message


def test_postgres_backend_with_qdrant_compose_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, DB_BACKEND="postgres", COMPOSE_PROFILES="qdrant")
    assert "COMPOSE_PROFILES=qdrant does not match DB_BACKEND=postgres" in message
    assert "set COMPOSE_PROFILES=pgvector" in message


def test_mongo_backend_with_pgvector_compose_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, DB_BACKEND="mongo", COMPOSE_PROFILES="pgvector")
    assert "COMPOSE_PROFILES=pgvector does not match DB_BACKEND=mongo" in message
    assert "set COMPOSE_PROFILES=qdrant" in message


def test_vector_store_backend_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, DB_BACKEND="postgres", VECTOR_STORE_BACKEND="qdrant")
    assert "DB_BACKEND=postgres goes with VECTOR_STORE_BACKEND=pgvector" in message
    assert "VECTOR_STORE_BACKEND=qdrant" in message
    assert "set VECTOR_STORE_BACKEND=pgvector" in message


def test_both_compose_profiles_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, COMPOSE_PROFILES="qdrant,pgvector")
    assert "starts both the qdrant and pgvector stacks" in message


def test_every_problem_is_reported_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(
        monkeypatch, DB_BACKEND="postgres", VECTOR_STORE_BACKEND="qdrant", COMPOSE_PROFILES="qdrant"
    )
    assert "VECTOR_STORE_BACKEND=qdrant" in message
    assert "COMPOSE_PROFILES=qdrant" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "uri", ["mysql://root@localhost/tbd", "mongodb://localhost:27017", "sqlite:///x.db"]
)
def test_bad_postgres_uri_scheme(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    message = _error(monkeypatch, POSTGRES_URI=uri)
    assert "POSTGRES_URI" in message
    assert "postgresql:// or postgresql+asyncpg://" in message


def test_postgres_uri_that_is_not_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, POSTGRES_URI="localhost 5432")
    assert "POSTGRES_URI is not a URL" in message
    assert "postgresql://user:password@host:5432/dbname" in message


def test_bad_db_backend_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, DB_BACKEND="mysql")
    assert "DB_BACKEND" in message


def test_guide_quick_start_env_is_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "COMPOSE_PROFILES": "pgvector",
        "VECTOR_STORE_BACKEND": "pgvector",
        "DB_BACKEND": "postgres",
        "POSTGRES_URI": "postgresql+asyncpg://postgres:postgres@pgvector:5432/tbd_agents",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.db_backend is DbBackend.POSTGRES
    assert settings.vector_backend is VectorBackend.PGVECTOR
    assert not settings.uses_embedded_postgres
    url = settings.postgres_url()
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+asyncpg",
        "pgvector",
        5432,
        "tbd_agents",
    )


@pytest.mark.parametrize(
    "uri", ["postgresql://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"]
)
def test_both_uri_forms_give_an_asyncpg_url(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    monkeypatch.setenv("POSTGRES_URI", uri)
    url = load_settings().postgres_url()
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.database, url.password) == ("db", "app", "p")


def test_database_name_from_postgres_db_name_when_the_uri_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTGRES_URI", "postgresql://u@db:5432")
    monkeypatch.setenv("POSTGRES_DB_NAME", "agents_prod")
    settings = load_settings()
    assert settings.postgres_database == "agents_prod"
    assert settings.postgres_url().database == "agents_prod"


def test_fresh_install_defaults_to_the_embedded_postgres(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.db_backend is DbBackend.POSTGRES
    assert settings.uses_embedded_postgres
    assert settings.postgres_database == "tbd_agents"
    assert settings.pg_data_dir == tmp_path / "xdg" / "tbd-agents" / "pgdata"
    assert settings.mongo_db_name == "copilot_agent_hub"


def test_embedded_data_dir_can_be_moved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBEDDED_PG_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_settings().pg_data_dir == tmp_path / "elsewhere"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DB_BACKEND=mongo\nCOMPOSE_PROFILES=qdrant\n")
    settings = load_settings()
    assert settings.db_backend is DbBackend.MONGO
    assert settings.vector_backend is VectorBackend.QDRANT
    assert not settings.uses_embedded_postgres


def test_dotenv_mismatch_is_reported_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DB_BACKEND=postgres\nCOMPOSE_PROFILES=qdrant\n")
    with pytest.raises(ConfigurationError, match="COMPOSE_PROFILES=qdrant does not match"):
        load_settings()


def test_values_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_BACKEND", "MONGO")
    monkeypatch.setenv("VECTOR_STORE_BACKEND", "Qdrant")
    settings = load_settings()
    assert (settings.db_backend, settings.vector_backend) == (DbBackend.MONGO, VectorBackend.QDRANT)
