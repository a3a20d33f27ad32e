"""The start-up sync of installed plugins into `custom_tools` (API and worker start).

Each installed plugin gets one ownerless record with `is_plugin=True`, found by name, so every
agent can list it in `custom_tool_ids` like the existing TBD Agents' global plugin records (and
records migrated from it keep their ids). The sync is idempotent: a record is written only when
something differs. Per plugin:

* description, tags and parameter schema follow the code; `env_config` keeps the operator's
  values and gains any variable the plugin newly declares (a remapped token stays remapped);
* `is_enabled` is the configured state: PLUGINS_DISABLED and `enabled: false` in the
  PLUGINS_CONFIG file (the existing `plugins.yaml`) switch a plugin off; PLUGINS_ENABLED=false
  switches every existing plugin record off and creates none;
* an ownerless record of the same name that is not a plugin (an operator's own custom tool) is
  left alone and the plugin is skipped with a warning; users' own records of that name are
  separate records and untouched;
* a failure on one plugin is logged and the others are still synced.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tbd_agents.domain.models import CustomTool
from tbd_agents.errors import ConfigurationError, StorageError
from tbd_agents.plugins.base import Plugin
from tbd_agents.plugins.registry import discover
from tbd_agents.storage.protocol import DocumentStore, Query, Repositories, Sort, eq, is_null

log = logging.getLogger(__name__)


def source_marker(plugin: Plugin) -> str:
    """The `source_code` of a plugin record: it is never executed (the installed plugin runs),
    only shown, so it says where the code lives."""
    cls = type(plugin)
    return (
        f"# Plugin {plugin.name!r}: {cls.__module__}.{cls.__qualname__}\n"
        "# Installed Python code run in-process by the engine; this text is not executed.\n"
    )


@dataclass(slots=True)
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def disabled_names(settings: Any) -> set[str]:
    """Plugins switched off by PLUGINS_DISABLED and by the PLUGINS_CONFIG file."""
    names = {n.strip() for n in (settings.plugins_disabled or "").split(",") if n.strip()}
    if settings.plugins_config:
        names |= _yaml_disabled(Path(settings.plugins_config))
    return names


def _yaml_disabled(path: Path) -> set[str]:
    """Names with `enabled: false` in a plugins.yaml (`plugins: [{name, enabled}]`)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigurationError(
            f"PLUGINS_CONFIG={path}: cannot read it ({exc.strerror}); fix the path or unset it"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"PLUGINS_CONFIG={path} is not valid YAML: {exc}") from None
    entries = data.get("plugins", []) if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and e.get("name") for e in entries
    ):
        raise ConfigurationError(
            f"PLUGINS_CONFIG={path} must hold `plugins:` as a list of {{name, enabled}} entries"
        )
    return {str(e["name"]) for e in entries if e.get("enabled", True) is False}


async def sync_plugins(store: DocumentStore, settings: Any) -> SyncReport:
    """Upsert one record per installed plugin (see the module docstring)."""
    report = SyncReport()
    if not settings.plugins_enabled:
        async with store.unit_of_work() as repos:
            report.disabled = await _disable_all(repos)
        log.info("PLUGINS_ENABLED=false: %d plugin record(s) disabled", len(report.disabled))
        return report
    found = discover()
    report.failed += found.problems
    off = disabled_names(settings)
    unknown = sorted(off - set(found.plugins))
    if unknown:
        log.warning("disabled plugin(s) %s are not installed", ", ".join(unknown))
    for name, plugin in sorted(found.plugins.items()):
        enabled = name not in off
        try:
            async with store.unit_of_work() as repos:
                outcome = await _upsert(repos, plugin, enabled)
        except StorageError:
            raise  # the database, not this plugin: the caller retries (`sync_plugins_until_done`)
        except Exception as exc:
            log.exception("plugin %s: syncing its custom tool record failed", name)
            report.failed.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        if outcome.startswith("skipped"):
            log.warning("plugin %s %s", name, outcome)
            report.skipped.append((name, outcome))
            continue
        getattr(report, outcome).append(name)
        if not enabled:
            report.disabled.append(name)
    log.info(
        "plugins: %d created, %d updated, %d unchanged, %d disabled, %d skipped, %d failed",
        len(report.created), len(report.updated), len(report.unchanged), len(report.disabled),
        len(report.skipped), len(report.failed),
    )  # fmt: skip
    return report


async def sync_plugins_until_done(
    store: DocumentStore, settings: Any, *, first_delay: float = 1.0, max_delay: float = 60.0
) -> None:
    """`sync_plugins`, retried with a doubling delay while the database cannot be used (a
    process that starts during a database outage still gets its plugin records once the
    database is back). Cancelled with the process."""
    delay = first_delay
    while True:
        try:
            await sync_plugins(store, settings)
            return
        except StorageError as exc:
            log.warning(
                "plugin records not synced, the database cannot be used (%s): retrying in %.0f s",
                exc.message,
                delay,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


async def _settle_race(repos: Repositories, query: Query, created: CustomTool) -> str:
    """Several processes starting at once (API replicas, worker children) may each create the
    record: the one with the lowest id stays, the others remove their own fresh copy."""
    rivals = [r for r in (await repos.custom_tools.list(query)).items if r.is_plugin]
    if rivals and rivals[0].id != created.id:
        await repos.custom_tools.delete(created.id)
        return "unchanged"
    return "created"


async def _disable_all(repos: Repositories) -> list[str]:
    """PLUGINS_ENABLED=false: switch off the operator's plugin records, create none."""
    query = Query(
        filters=(eq("is_plugin", True), is_null("created_by"), eq("is_enabled", True)),
        sort=(Sort("id"),),
        limit=1000,
    )
    names = []
    for record in (await repos.custom_tools.list(query)).items:
        await repos.custom_tools.update(record.id, {"is_enabled": False})
        names.append(record.name)
    return names


async def _upsert(repos: Repositories, plugin: Plugin, enabled: bool) -> str:
    query = Query(
        filters=(eq("name", plugin.name), is_null("created_by")), sort=(Sort("id"),), limit=20
    )
    same_name: list[CustomTool] = list((await repos.custom_tools.list(query)).items)
    ours = next((r for r in same_name if r.is_plugin), None)
    if ours is None and same_name:
        return (
            f"skipped: the operator's custom tool {same_name[0].id} is already named "
            f"{plugin.name!r} and is not a plugin; rename it to install the plugin"
        )
    wanted: dict[str, Any] = {
        "description": plugin.description,
        "tags": list(plugin.tags),
        "parameters_schema": dict(plugin.parameters_schema),
        "source_code": source_marker(plugin),
        "is_plugin": True,
        "is_enabled": enabled,
    }
    timeout = max(1, min(3600, round(plugin.timeout_seconds)))
    if ours is None:
        record = CustomTool(
            name=plugin.name, env_config=dict(plugin.env_config), timeout_seconds=timeout, **wanted
        )
        created = await repos.custom_tools.create(record)
        return await _settle_race(repos, query, created)
    env = dict(ours.env_config)
    for key, template in plugin.env_config.items():
        if not env.get(key):
            env[key] = template
    wanted["env_config"] = env
    if ours.source_code != wanted["source_code"]:
        # taken over (a migrated shim) or new code: the plugin's own call timeout applies
        wanted["timeout_seconds"] = timeout
    changes = {k: v for k, v in wanted.items() if getattr(ours, k) != v}
    if not changes:
        return "unchanged"
    await repos.custom_tools.update(ours.id, changes)
    return "updated"


__all__ = ["SyncReport", "disabled_names", "source_marker", "sync_plugins"]
