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
OBSERVABILITY = {"prometheus", "grafana", "otel-collector", "tempo", "tempo-init"}


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
    assert set(services) == APP_SERVICES | PROFILES["pgvector"] | PROFILES["qdrant"] | OBSERVABILITY
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
@pytest.mark.parametrize("observability", [False, True])
def test_compose_client_accepts_the_file(profile: str, observability: bool, tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose client installed (docker compose / docker-compose)")
    for name in ("docker-compose.yml", "Dockerfile", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    profiles = f"{profile},observability" if observability else profile
    env = {**os.environ, "COMPOSE_PROFILES": profiles}  # overrides the one in .env
    env |= {"METRICS_TOKEN": "t" * 32, "GRAFANA_ADMIN_PASSWORD": "p" * 16}
    shutil.copytree(ROOT / "observability", tmp_path / "observability")
    result = subprocess.run(
        [*command, "config"], cwd=tmp_path, capture_output=True, text=True, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)["services"]
    wanted = set(profiles.split(","))
    active = {n for n, svc in rendered.items() if wanted & set(svc.get("profiles", [profile]))}
    assert active == APP_SERVICES | PROFILES[profile] | (OBSERVABILITY if observability else set())
    for name in ("app", "worker", "scheduler"):
        assert rendered[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert rendered[name]["environment"]["COMPOSE_PROFILES"] == "qdrant"  # from .env


def active_services(profiles: set[str]) -> dict[str, dict]:  # type: ignore[type-arg]
    """The services Compose starts for `profiles`: those without a profile, and those in one."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if "profiles" not in service or profiles & set(service["profiles"])
    }


def _dependencies(service: dict) -> set[str]:  # type: ignore[type-arg]
    depends = service.get("depends_on", [])
    return set(depends if isinstance(depends, list) else depends.keys())


@pytest.mark.parametrize(
    "profiles",
    [{"qdrant"}, {"pgvector"}, {"qdrant", "observability"}, {"pgvector", "observability"}],
)
def test_compose_file_is_consistent_with_and_without_observability(profiles: set[str]) -> None:
    """What `docker compose config` would refuse, checked without a Compose client: a dependency
    on a service the profiles do not start, an undeclared volume or secret, a missing bind-mount
    source; and what it would accept but we do not: an unpinned image in the profile."""
    document = compose()
    services = active_services(profiles)
    has_observability = "observability" in profiles
    started = OBSERVABILITY & set(services)
    assert started == (OBSERVABILITY if has_observability else set())
    for name, service in services.items():
        assert _dependencies(service) <= set(services), name
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in document["volumes"], (name, source)
        for secret in service.get("secrets", []):
            assert secret in document["secrets"], (name, secret)


def test_observability_profile_services() -> None:
    services = compose()["services"]
    for name in OBSERVABILITY:
        service = services[name]
        assert service["profiles"] == ["observability"], name
        image = service["image"]
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest" and any(ch.isdigit() for ch in tag), (name, image)
    # Prometheus and Grafana take their secrets from .env and refuse to start without them (no
    # `secrets:` block: Compose v1, which CI renders the file with, has no environment secrets).
    assert "secrets" not in compose()
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["environment"]["METRICS_TOKEN"] == "${METRICS_TOKEN:-}"
    script = prometheus["entrypoint"][-1]
    assert 'test -n "$$METRICS_TOKEN"' in script
    assert "> /prometheus/.metrics_token" in script and "umask 077" in script
    assert "--config.file=/etc/prometheus/prometheus.yml" in script
    assert 'test -n "$$GF_SECURITY_ADMIN_PASSWORD"' in grafana["entrypoint"][-1]
    env = grafana["environment"]
    # no password baked into the file: only the variable from .env, empty by default
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    # Prometheus has no authentication: published on loopback only.
    assert prometheus["ports"] == ["127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"]
    assert all(port.startswith("127.0.0.1:") for port in services["otel-collector"]["ports"])
    # The metrics ports Prometheus scrapes are the ones the worker and scheduler are told to use.
    assert (
        services["worker"]["environment"]["WORKER_METRICS_PORT"] == "${WORKER_METRICS_PORT:-9101}"
    )
    assert (
        services["scheduler"]["environment"]["SCHEDULER_METRICS_PORT"]
        == "${SCHEDULER_METRICS_PORT:-9102}"
    )


def test_env_example_documents_the_observability_variables() -> None:
    commented = env_blocks()["commented"]
    assert commented["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert commented["METRICS_TOKEN"] == "" and commented["GRAFANA_ADMIN_PASSWORD"] == ""
    collector = yaml.safe_load((ROOT / "observability" / "otel-collector-config.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
