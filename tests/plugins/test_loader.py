"""Plugin discovery (entry points) and the start-up sync into `custom_tools`, on a real
PostgreSQL: idempotent upserts, disabling (PLUGINS_DISABLED, PLUGINS_CONFIG, PLUGINS_ENABLED),
an operator's own tool of the same name left alone, a migrated shim record taken over, and the
API start-up running it."""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tbd_agents.api.app import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.models import CustomTool
from tbd_agents.errors import ConfigurationError, StorageError
from tbd_agents.plugins import registry
from tbd_agents.plugins.loader import source_marker, sync_plugins, sync_plugins_until_done
from tbd_agents.plugins.slack import SlackPlugin
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import DocumentStore, Query, Sort
from tests.api.conftest import Api, make_settings
from tests.plugins.fakes import SLACK_TOKEN, SlackFake
from tests.support import pg
from tests.support.mongo import make_mongo_store

SIX = {"mysql_read", "bigquery_read", "slack", "google_sheets_read", "google_sheets", "notion"}


def config(**kw: object) -> SimpleNamespace:
    values: dict[str, object] = {
        "plugins_enabled": True, "plugins_disabled": "", "plugins_config": None,
    }  # fmt: skip
    values.update(kw)
    return SimpleNamespace(**values)


@pytest.fixture(params=["pg18", "mongo"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[DocumentStore]:
    """A fresh database on each backend: the sync goes through the storage protocol only."""
    if request.param == "mongo":
        emulated = await make_mongo_store()
        yield emulated
        await emulated.close()
        return
    url = pg.create_migrated_database(request.getfixturevalue("pg18_server"), prefix="plug")
    s = PostgresStore(create_engine(url, pool_size=2, max_overflow=2), url=url)
    yield s
    await s.close()
    pg.drop_database(url)


async def records(store: DocumentStore) -> list[CustomTool]:
    async with store.unit_of_work() as repos:
        page = await repos.custom_tools.list(Query(sort=(Sort("name"), Sort("id"))))
    return list(page.items)


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed distribution (dist-info on sys.path) declaring plugins the way a
    third-party package would: one good, one whose module is missing, one misnamed."""
    (tmp_path / "acme_weather.py").write_text(
        textwrap.dedent(
            """
            from tbd_agents.plugins import Plugin

            class WeatherPlugin(Plugin):
                name = "acme_weather"
                description = "Weather by city"
                parameters_schema = {"type": "object", "properties": {"city": {"type": "string"}}}
                env_config = {"ACME_KEY": "{{token:acme-key}}"}

                async def execute(self, args, env, http):
                    return {"city": args["city"], "key_seen": bool(env.get("ACME_KEY"))}

            class Misnamed(WeatherPlugin):
                name = "something_else"
            """
        )
    )
    dist = tmp_path / "acme_weather-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-weather\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[tbd_agents.plugins]\n"
        "acme_weather = acme_weather:WeatherPlugin\n"
        "acme_broken = acme_missing_module:Nothing\n"
        "acme_misnamed = acme_weather:Misnamed\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("acme_weather", None)


def test_entry_point_discovery_finds_ours_and_a_third_party_plugin(third_party: Path) -> None:
    found = registry.discover()
    assert set(found.plugins) == SIX | {"acme_weather"}
    problems = dict(found.problems)
    assert "ModuleNotFoundError" in problems["acme_broken"]
    assert "use the plugin's name for the entry point" in problems["acme_misnamed"]
    assert isinstance(found.plugins["slack"], SlackPlugin)


def test_our_six_are_declared_as_entry_points_in_pyproject() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared[registry.GROUP] == registry.BUILTIN


async def test_sync_is_idempotent_and_keeps_operator_env_choices(store: DocumentStore) -> None:
    first = await sync_plugins(store, config())
    assert set(first.created) == SIX and not first.failed
    rows = await records(store)
    assert {r.name for r in rows} == SIX
    slack = next(r for r in rows if r.name == "slack")
    assert slack.is_plugin and slack.is_enabled and slack.created_by is None
    assert slack.env_config == {"SLACK_BOT_TOKEN": "{{token:slack-bot-token}}"}
    assert slack.parameters_schema["properties"]["operation"]["enum"][0] == "list_channels"
    assert slack.source_code == source_marker(SlackPlugin())
    bq = next(r for r in rows if r.name == "bigquery_read")
    assert bq.timeout_seconds == 120

    again = await sync_plugins(store, config())
    assert set(again.unchanged) == SIX and not again.created and not again.updated
    assert [r.id for r in await records(store)] == [r.id for r in rows]

    # an operator remaps the token and adds an override: both survive the next start
    async with store.unit_of_work() as repos:
        await repos.custom_tools.update(
            slack.id,
            {"env_config": {"SLACK_BOT_TOKEN": "{{token:other}}", "SLACK_API_URL": "http://x"},
             "description": "stale"},
        )  # fmt: skip
    third = await sync_plugins(store, config())
    assert third.updated == ["slack"]
    slack = next(r for r in await records(store) if r.name == "slack")
    assert slack.env_config == {"SLACK_BOT_TOKEN": "{{token:other}}", "SLACK_API_URL": "http://x"}
    assert slack.description == SlackPlugin.description


async def test_disabling_by_setting_by_yaml_and_globally(
    store: DocumentStore, tmp_path: Path
) -> None:
    yaml_file = tmp_path / "plugins.yaml"
    yaml_file.write_text(
        "plugins:\n  - name: notion\n    enabled: false\n  - name: slack\n    enabled: true\n"
    )
    report = await sync_plugins(
        store, config(plugins_disabled="bigquery_read, mysql_read", plugins_config=str(yaml_file))
    )
    assert set(report.disabled) == {"notion", "bigquery_read", "mysql_read"}
    enabled = {r.name: r.is_enabled for r in await records(store)}
    assert enabled == {n: n not in {"notion", "bigquery_read", "mysql_read"} for n in SIX}

    # back on once the setting no longer names it
    await sync_plugins(store, config())
    assert all(r.is_enabled for r in await records(store))

    off = await sync_plugins(store, config(plugins_enabled=False))
    assert set(off.disabled) == SIX
    assert not any(r.is_enabled for r in await records(store))

    yaml_file.write_text("plugins: {name: slack}\n")
    with pytest.raises(ConfigurationError, match="list of \\{name, enabled\\} entries"):
        await sync_plugins(store, config(plugins_config=str(yaml_file)))


async def test_plugins_enabled_false_creates_nothing(store: DocumentStore) -> None:
    report = await sync_plugins(store, config(plugins_enabled=False))
    assert report.disabled == [] and await records(store) == []


async def test_an_operator_tool_of_the_same_name_is_left_alone(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        own = await repos.custom_tools.create(
            CustomTool(name="slack", source_code="def slack():\n    return 1\n")
        )
        users = await repos.custom_tools.create(
            CustomTool(name="notion", source_code="def notion():\n    return 2\n", created_by="bob")
        )
    report = await sync_plugins(store, config())
    assert [name for name, _ in report.skipped] == ["slack"]
    assert "rename it" in report.skipped[0][1]
    rows = await records(store)
    mine = next(r for r in rows if r.id == own.id)
    assert mine.source_code == "def slack():\n    return 1\n" and not mine.is_plugin
    assert next(r for r in rows if r.id == users.id).source_code == "def notion():\n    return 2\n"
    # bob's tool is his own record; the operator's notion plugin record exists beside it
    assert sum(1 for r in rows if r.name == "notion" and r.is_plugin) == 1


async def test_a_migrated_shim_record_is_taken_over_in_place(store: DocumentStore) -> None:
    shim = (
        "from app.plugins.slack import SlackPlugin\n"
        "_plugin_instance = SlackPlugin()\n"
        "slack = _plugin_instance.execute\n"
    )
    async with store.unit_of_work() as repos:
        old = await repos.custom_tools.create(
            CustomTool(
                name="slack", source_code=shim, is_plugin=True,
                env_config={"SLACK_BOT_TOKEN": "{{token:slack-prod}}"},
                parameters_schema={"type": "object", "properties": {"operation": {"type": "string"}}},
            )
        )  # fmt: skip
    report = await sync_plugins(store, config())
    assert "slack" in report.updated
    rows = [r for r in await records(store) if r.name == "slack"]
    assert [r.id for r in rows] == [old.id]  # agents referencing the id keep working
    assert rows[0].env_config == {"SLACK_BOT_TOKEN": "{{token:slack-prod}}"}
    assert rows[0].source_code == source_marker(SlackPlugin())
    assert rows[0].timeout_seconds == 60


async def test_api_start_up_syncs_the_plugins(pg18_server: str, tmp_path: Path) -> None:
    url = pg.create_migrated_database(pg18_server, prefix="plugapi")
    store = PostgresStore(create_engine(url, pool_size=2, max_overflow=2), url=url)
    try:
        settings = make_settings(tmp_path, plugins_enabled=True, plugins_disabled="notion")
        app = create_app(settings, store)
        with SlackFake().running() as slack:
            async with app.router.lifespan_context(app):
                api = Api(app, store, settings)
                async with await api.user("root-admin", KeyScope.ADMIN) as admin:
                    listed = (await admin.get("/api/custom-tools")).json()
                    tools = listed if isinstance(listed, list) else listed["items"]
                    plugins = {t["name"]: t for t in tools if t["is_plugin"]}
                    assert set(plugins) == SIX
                    assert plugins["notion"]["is_enabled"] is False
                    assert plugins["slack"]["is_enabled"] is True
                    # the ad-hoc run endpoint runs the installed plugin, not the record's text
                    async with store.unit_of_work() as repos:
                        await repos.custom_tools.update(
                            plugins["slack"]["id"],
                            {"env_config": {"SLACK_BOT_TOKEN": SLACK_TOKEN,
                                            "SLACK_API_URL": f"{slack.url}/api"}},
                        )  # fmt: skip
                    ran = await admin.post(
                        f"/api/custom-tools/{plugins['slack']['id']}/run",
                        json={"arguments": {"operation": "get_channel_info", "channel_id": "C1"}},
                    )
                    assert ran.status_code == 200, ran.text
                    body = ran.json()
                    assert body["success"] is True, body
                    assert body["value"]["channel"]["name"] == "general"
                    bad = await admin.post(
                        f"/api/custom-tools/{plugins['slack']['id']}/run",
                        json={"arguments": {"operation": "nope"}},
                    )
                    assert bad.json()["success"] is False
                    assert "invalid arguments" in bad.json()["error"]
    finally:
        await store.close()
        pg.drop_database(url)


def test_a_celery_worker_process_syncs_the_plugins_when_it_starts(
    pg18_server: str, tmp_path: Path
) -> None:
    """A worker may start before any API process: its start-up syncs the records too."""
    from cryptography.fernet import Fernet

    from tbd_agents.config import Settings
    from tbd_agents.runtime.celery_app import WorkerState

    url = pg.create_migrated_database(pg18_server, prefix="plugwk")
    settings = Settings(
        postgres_uri=url.render_as_string(hide_password=False),
        token_encryption_key=f"1:{Fernet.generate_key().decode()}",
        data_dir=tmp_path,
        embedding_provider="hashing",
        redis_url=None,
        plugins_disabled="notion",
    )
    worker = WorkerState(settings)
    try:
        found = {r.name: r.is_enabled for r in worker.call(records(worker.runtime.store))}
    finally:
        worker.close()
        pg.drop_database(url)
    assert found == {name: name != "notion" for name in SIX}


async def test_a_start_during_a_database_outage_syncs_once_the_database_is_back(
    pg18_server: str,
) -> None:
    """The API starts while its database cannot be used (readiness answers 503): the plugin
    records are synced by a retry loop as soon as the database is back, not never."""
    url = pg.create_migrated_database(pg18_server, prefix="plugout")
    away = f"{url.database}_away"
    await pg._admin(pg18_server, f'ALTER DATABASE "{url.database}" RENAME TO "{away}"')
    store = PostgresStore(create_engine(url, pool_size=2, max_overflow=2), url=url)
    with pytest.raises(StorageError):
        await sync_plugins(store, config())  # what start-up meets: the caller starts the loop
    retrying = asyncio.create_task(sync_plugins_until_done(store, config(), first_delay=0.1))
    try:
        await asyncio.sleep(1.0)
        assert not retrying.done()  # still retrying, not crashed and not given up
        await pg._admin(pg18_server, f'ALTER DATABASE "{away}" RENAME TO "{url.database}"')
        await asyncio.wait_for(retrying, 30)
        assert {r.name for r in await records(store)} == SIX
    finally:
        retrying.cancel()
        await store.close()
        pg.drop_database(url)
