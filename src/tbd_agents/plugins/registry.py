"""Which plugins are installed: the `tbd_agents.plugins` entry-point group.

Our six plugins are declared in pyproject.toml like any third-party one. They are also listed
in `BUILTIN` so a source checkout whose installed metadata predates a plugin (an editable
install made before it was added) still finds them; an entry point of the same name wins.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import jsonschema

from tbd_agents.plugins.base import Plugin

log = logging.getLogger(__name__)

GROUP = "tbd_agents.plugins"
BUILTIN: dict[str, str] = {
    "mysql_read": "tbd_agents.plugins.mysql_read:MysqlReadPlugin",
    "bigquery_read": "tbd_agents.plugins.bigquery:BigqueryReadPlugin",
    "slack": "tbd_agents.plugins.slack:SlackPlugin",
    "google_sheets_read": "tbd_agents.plugins.google_sheets:GoogleSheetsReadPlugin",
    "google_sheets": "tbd_agents.plugins.google_sheets:GoogleSheetsPlugin",
    "notion": "tbd_agents.plugins.notion:NotionPlugin",
}


@dataclass(slots=True)
class Discovery:
    plugins: dict[str, Plugin] = field(default_factory=dict)
    #: (entry-point name, why it was not loaded)
    problems: list[tuple[str, str]] = field(default_factory=list)


def entry_points() -> list[importlib.metadata.EntryPoint]:
    """The group's entry points, plus the built-in ones the metadata does not list."""
    found = list(importlib.metadata.entry_points(group=GROUP))
    names = {ep.name for ep in found}
    found += [
        importlib.metadata.EntryPoint(name, value, GROUP)
        for name, value in BUILTIN.items()
        if name not in names
    ]
    return found


def load(points: Iterable[importlib.metadata.EntryPoint]) -> Discovery:
    """Import and instantiate each plugin; a broken one is reported, the others still load."""
    out = Discovery()
    for ep in points:
        try:
            plugin = _instantiate(ep)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("plugin entry point %s = %s not loaded: %s", ep.name, ep.value, reason)
            out.problems.append((ep.name, reason))
            continue
        if plugin.name in out.plugins:
            out.problems.append((ep.name, f"a second plugin named {plugin.name!r}; first kept"))
            continue
        out.plugins[plugin.name] = plugin
    return out


def _instantiate(ep: importlib.metadata.EntryPoint) -> Plugin:
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise TypeError(f"{ep.value} is not a subclass of tbd_agents.plugins.Plugin")
    plugin = cls()
    if plugin.name != ep.name:
        raise ValueError(
            f"the entry point is named {ep.name!r} but the plugin {plugin.name!r}: use the "
            "plugin's name for the entry point"
        )
    jsonschema.Draft202012Validator.check_schema(dict(plugin.parameters_schema))
    return plugin


def discover() -> Discovery:
    """Every installed plugin, freshly imported from the entry points."""
    return load(entry_points())


@functools.cache
def installed() -> dict[str, Plugin]:
    """The installed plugins by name, discovered once per process (what runs use)."""
    return discover().plugins


__all__ = ["BUILTIN", "GROUP", "Discovery", "discover", "entry_points", "installed", "load"]
