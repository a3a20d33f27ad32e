"""The plugin interface: installed Python code offered to agents as a tool.

A plugin is operator-installed code (a package in the server's environment), so it runs inside
the engine process like the server itself, not in the custom-tool sandbox. What keeps it
contained is what it is given: `env` holds only the credentials its tool record declares in
`env_config` (resolved from the secret store, never `os.environ`), and `http` is an HTTP client
whose every request passes the outbound-address policy of the tool record's owner.

Third-party packages add plugins the same way ours do: a `Plugin` subclass named in the
`tbd_agents.plugins` entry-point group (docs/plugins.md, "Writing a plugin").
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx


class PluginError(Exception):
    """A failure the model should read: bad arguments, a missing credential, an upstream API
    error. The message names what went wrong and, where there is one, the fix."""


class Plugin(ABC):
    """One plugin. Subclasses set the class attributes and implement `execute`.

    `name` is the tool name agents see and the name of the `custom_tools` record the loader
    keeps for it (the existing TBD Agents' plugin names are kept: `slack`, `mysql_read`, …).
    `env_config` maps each environment name the plugin reads to its default template, usually a
    `{{token:NAME}}` reference into the secret store; an operator may point it at another token
    through the tool's env mapping. `parameters_schema` is the JSON Schema of the arguments
    (validated by the engine before `execute` is called)."""

    name: ClassVar[str]
    description: ClassVar[str]
    tags: ClassVar[tuple[str, ...]] = ()
    env_config: ClassVar[Mapping[str, str]] = {}
    parameters_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {}}
    #: Seconds one call may take before the engine gives up on it.
    timeout_seconds: ClassVar[float] = 60.0

    @abstractmethod
    async def execute(
        self, args: Mapping[str, Any], env: Mapping[str, str], http: httpx.AsyncClient
    ) -> Any:
        """Run one call. Returns JSON-compatible data (or text); raises PluginError for a
        failure the caller should see."""

    # --- helpers for subclasses ------------------------------------------------------------
    def need(self, env: Mapping[str, str], key: str) -> str:
        """The credential `key`, or a PluginError saying how to provide it."""
        value = env.get(key, "").strip()
        if not value:
            template = self.env_config.get(key, "{{token:NAME}}")
            raise PluginError(
                f"{self.name}: {key} is not set: create the token it names ({template}) under "
                f"/api/tokens, or map {key} to another token (PUT /api/custom-tools/<id>/env-mapping)"
            )
        return value

    @staticmethod
    def arg(args: Mapping[str, Any], key: str, operation: str | None = None) -> Any:
        """A required argument, or a PluginError naming it (and the operation needing it)."""
        value = args.get(key)
        if value is None or value == "":
            needed_by = f" for operation {operation!r}" if operation else ""
            raise PluginError(f"argument {key!r} is required{needed_by}")
        return value

    @staticmethod
    def json_body(response: httpx.Response, service: str) -> Any:
        """The JSON body of `response`, or a PluginError quoting what came back instead."""
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PluginError(
                f"{service} answered HTTP {response.status_code} with a body that is not JSON: "
                f"{response.text[:200]!r}"
            ) from None


def operation_of(args: Mapping[str, Any], allowed: tuple[str, ...]) -> str:
    """The `operation` argument, checked against `allowed` (the schema's enum says the same;
    this keeps direct callers honest too)."""
    op = args.get("operation")
    if op not in allowed:
        raise PluginError(f"operation must be one of {', '.join(allowed)}, not {op!r}")
    return str(op)


def base_url(env: Mapping[str, str], key: str, default: str) -> str:
    """An API base URL: `env[key]` when the tool record sets it (tests, proxies), else the
    vendor's."""
    return (env.get(key) or default).rstrip("/")


__all__ = ["Plugin", "PluginError", "base_url", "operation_of"]
