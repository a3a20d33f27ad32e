"""Plugin tools: a `custom_tools` record with `is_plugin=True` run by the installed plugin of
the same name, in-process (plugins are operator-installed code, trusted like the server).

The plugin sees only the record's resolved `env_config` and reaches the network through an HTTP
client built on the outbound policy of the record's owner (security/outbound.py). Records
migrated from the existing TBD Agents (a shim importing `app.plugins.<name>`) run this way too:
the record's source is never executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from tbd_agents.domain.models import CustomTool, Token
from tbd_agents.engine.messages import ToolCall, ToolSpec
from tbd_agents.engine.tools.base import ToolContext, ToolResult, Toolset
from tbd_agents.errors import InvalidData
from tbd_agents.plugins.base import Plugin, PluginError
from tbd_agents.plugins.registry import installed
from tbd_agents.security.outbound import AdminLookup, OutboundPolicy, OutboundRefused, http_client
from tbd_agents.services.tokens import referenced_names
from tbd_agents.storage.protocol import Query, Repositories, eq, in_, is_null


async def shared_plugin_records(repos: Repositories, ids: list[str]) -> list[CustomTool]:
    """The operator's (ownerless) plugin records among `ids`: every agent may use them, as
    every agent could use the existing TBD Agents' global plugin records."""
    if not ids:
        return []
    query = Query(filters=(in_("id", ids), is_null("created_by"), eq("is_plugin", True)))
    return list((await repos.custom_tools.list(query)).items)


async def check_operator_tokens(
    repos: Repositories, admins: AdminLookup, record: CustomTool
) -> None:
    """Refuse (InvalidData) when an operator plugin record's `{{token:NAME}}` names a user's
    token. Ownerless records resolve token names among all tokens, and the operator's plugin
    records serve every user's runs: a user who created the token a plugin names (say before
    the operator did) would otherwise receive what everyone's runs send through it."""
    if record.created_by is not None:
        return
    names = referenced_names(dict(record.env_config))
    if not names:
        return
    page = await repos.for_model(Token).list(Query(filters=(in_("name", sorted(names)),)))
    for token in page.items:
        if token.created_by is not None and not await admins.is_admin(repos, token.created_by):
            raise InvalidData(
                f"token {token.name!r} belongs to a user, not the operator or an admin; plugin "
                "records use only those tokens: an admin should create it, or point the "
                "record's env_config at another token"
            )


@dataclass(slots=True)
class PluginTool:
    spec: ToolSpec
    plugin: Plugin
    policy: OutboundPolicy
    env: dict[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 60.0
    source: str = field(init=False)

    def __post_init__(self) -> None:
        self.source = f"plugin:{self.plugin.name}"

    @staticmethod
    def refusal(record: CustomTool, policy: OutboundPolicy) -> str | None:
        """Why `record` cannot run as a plugin tool, or None. Only records of the operator or
        an admin run installed code with their settings (`trusted` policy): a plugin's env may
        name hosts (a DSN, an API base URL) that a user's record must not point it at."""
        if record.name not in installed():
            return (
                f"plugin {record.name!r} is not installed on this server and was not offered "
                "(install the package that provides it, or remove the tool from the agent)"
            )
        if not policy.trusted:
            return (
                f"plugin tool {record.name!r} ({record.id}) belongs to a user, not the operator "
                "or an admin, and was not offered: use the operator's plugin record"
            )
        return None

    @classmethod
    def of(cls, record: CustomTool, env: dict[str, str], policy: OutboundPolicy) -> PluginTool:
        """The tool of a record `refusal` accepted. The schema is always the installed
        plugin's (the code decides what its arguments mean; a migrated record may still hold
        the old one); the description is the record's, which start-up keeps in sync."""
        plugin = installed()[record.name]
        schema = dict(plugin.parameters_schema)
        spec = ToolSpec(record.name, record.description or plugin.description, schema)
        return cls(spec, plugin, policy, env, float(record.timeout_seconds))

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        async with http_client(
            self.policy, f"plugin {self.plugin.name}", timeout=httpx.Timeout(self.timeout)
        ) as http:
            try:
                value = await self.plugin.execute(arguments, dict(self.env), http)
            except (PluginError, OutboundRefused) as exc:
                return ToolResult(f"Error: {self.plugin.name}: {exc}", is_error=True)
            except httpx.HTTPError as exc:
                return ToolResult(
                    f"Error: {self.plugin.name}: the request failed: {type(exc).__name__}: {exc}",
                    is_error=True,
                )
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return ToolResult(text, data=value)


async def run_once(
    record: CustomTool, env: dict[str, str], policy: OutboundPolicy, arguments: dict[str, Any]
) -> ToolResult:
    """One call of a plugin record outside a run (the ad-hoc `POST /api/custom-tools/{id}/run`),
    checked and executed exactly as an agent's call would be."""
    problem = PluginTool.refusal(record, policy)
    if problem:
        return ToolResult(f"Error: {problem}", is_error=True)
    tools = Toolset()
    tools.add(PluginTool.of(record, env, policy))
    result, _ = await tools.execute(ToolCall("adhoc", record.name, arguments), ToolContext(), 10**7)
    return result
