"""The deployment files: docker-compose.yml, Dockerfile and .env.example keep the guide's
contract (profiles, services, variables). Docker itself cannot run here: `docker compose config`
(or `docker-compose config`) validates the file when a Compose client is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tbd_agents.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = {"app", "worker", "scheduler", "redis"}
PROFILES = {"pgvector": {"pgvector"}, "qdrant": {"mongodb", "qdrant"}}


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_blocks() -> dict[str, dict[str, str]]:
    """The active settings of .env.example, and those of its commented pgvector block."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        text = line.strip()
        target = active
        if (
            text.startswith("# ")
            and "=" in text
            and text[2:3].isupper()
            and " " not in text[2:].split("=")[0]
        ):
            target, text = commented, text[2:]
        if text and not text.startswith("#") and "=" in text:
            key, _, value = text.partition("=")
            target[key] = value
    return {"active": active, "commented": commented}


def test_services_and_profiles() -> None:
    services = compose()["services"]
    assert set(services) == APP_SERVICES | PROFILES["pgvector"] | PROFILES["qdrant"]
    for name in APP_SERVICES:
        assert "profiles" not in services[name], name
    for profile, names in PROFILES.items():
        for name in names:
            assert services[name]["profiles"] == [profile]
    assert services["pgvector"]["image"] == "pgvector/pgvector:pg16"
    assert services["pgvector"]["environment"]["POSTGRES_DB"] == "tbd_agents"
    assert services["mongodb"]["image"].startswith("mongo:7")
    assert services["qdrant"]["image"].startswith("qdrant/qdrant")


def test_app_worker_and_scheduler_share_the_image_redis_and_data() -> None:
    services = compose()["services"]
    commands = {
        name: " ".join(services[name]["command"]) for name in ("app", "worker", "scheduler")
    }
    assert "alembic upgrade head" in commands["app"] and "tbd-agents serve" in commands["app"]
    assert commands["worker"].startswith("tbd-agents worker")
    assert commands["scheduler"] == "tbd-agents scheduler"
    for name in ("app", "worker", "scheduler"):
        service = services[name]
        assert service["build"] == "."
        assert service["env_file"] == ".env"
        assert service["environment"]["REDIS_URL"].endswith("redis://redis:6379/0}")
        assert "tbd-data:/data" in service["volumes"]  # one key file for every container
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["app"]["ports"] == ["${TBD_PORT:-8000}:8000"]


def test_env_example_has_both_profile_blocks_and_each_is_consistent() -> None:
    blocks = env_blocks()
    active, commented = blocks["active"], blocks["commented"]
    assert active["COMPOSE_PROFILES"] == "qdrant"  # the guide: "qdrant in .env.example"
    assert commented["COMPOSE_PROFILES"] == "pgvector"
    assert (
        commented["POSTGRES_URI"]
        == "postgresql+asyncpg://postgres:postgres@pgvector:5432/tbd_agents"
    )
    assert commented["DB_BACKEND"] == "postgres" and commented["VECTOR_STORE_BACKEND"] == "pgvector"
    assert active["DB_BACKEND"] == "mongo" and active["VECTOR_STORE_BACKEND"] == "qdrant"
    for values in (active, {**active, **commented}):
        settings = load_settings(**{k.lower(): v for k, v in values.items() if v})
        assert settings.compose_profiles == values["COMPOSE_PROFILES"]


def test_dockerfile_ships_the_migrations_and_alembic_ini() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md alembic.ini ./" in text
    assert "COPY src ./src" in text and "RUN pip install ." in text
    assert "WORKDIR /app" in text
    ini = (ROOT / "alembic.ini").read_text()
    assert "script_location = tbd_agents:migrations" in ini  # found in the installed package


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("profile", ["pgvector", "qdrant"])
def test_compose_client_accepts_the_file(profile: str, tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose client installed (docker compose / docker-compose)")
    for name in ("docker-compose.yml", "Dockerfile", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    env = {**os.environ, "COMPOSE_PROFILES": profile}  # overrides the one in .env
    result = subprocess.run(
        [*command, "config"], cwd=tmp_path, capture_output=True, text=True, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)["services"]
    active = {name for name, svc in rendered.items() if profile in svc.get("profiles", [profile])}
    assert active == APP_SERVICES | PROFILES[profile]
    for name in ("app", "worker", "scheduler"):
        assert rendered[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert rendered[name]["environment"]["COMPOSE_PROFILES"] == "qdrant"  # from .env
