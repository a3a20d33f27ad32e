"""Plugins: installed Python tools (Slack, Notion, Google Sheets, BigQuery, MySQL, …) that
agents use like custom tools. See base.py for the interface, registry.py for discovery,
loader.py for the start-up sync into `custom_tools`, docs/plugins.md for the user guide."""

from tbd_agents.plugins.base import Plugin, PluginError

__all__ = ["Plugin", "PluginError"]
