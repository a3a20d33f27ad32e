"""Which service object handles each resource, and the resource-specific rules on top of the
generic `Records`: connection strings with passwords moved into tokens, chat message counters."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from tbd_agents.domain.enums import KnowledgeSourceStatus, McpServerStatus
from tbd_agents.domain.models import (
    Agent,
    ChatMessage,
    ChatSession,
    CustomTool,
    Entity,
    KnowledgeSource,
    McpServer,
    Provider,
    Token,
)
from tbd_agents.domain.types import new_id
from tbd_agents.errors import InvalidData
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.security.outbound import (
    HostPolicy,
    OutboundPolicy,
    OutboundRefused,
    check_saved_pg_uri,
    check_saved_url,
)
from tbd_agents.services.access import Principal
from tbd_agents.services.agent_versions import AgentRecords
from tbd_agents.services.records import E, Records, expected_version
from tbd_agents.services.tokens import (
    TokenRecords,
    extract_connection_secrets,
    is_connection_secret,
    own_connection_tokens,
    referenced_names,
)
from tbd_agents.services.tool_schema import inferred_or_none, is_empty_schema
from tbd_agents.storage.protocol import Repositories, in_

#: Fields whose password-bearing connection strings are moved into tokens.
SECRET_FIELDS: dict[type[Entity], tuple[str, ...]] = {
    McpServer: ("connection_config",),
    KnowledgeSource: ("connection_config",),
    Provider: ("base_url",),
}


class SecretAwareRecords(Records[E]):
    """Records whose connection configs are scrubbed of passwords before they are stored."""

    def __init__(
        self,
        repos: Repositories,
        principal: Principal,
        model: type[E],
        cipher: Callable[[], TokenCipher],
    ) -> None:
        super().__init__(repos, principal, model)
        self.tokens = TokenRecords(repos, principal, cipher)

    async def _scrub(self, record_id: str, values: dict[str, Any]) -> dict[str, Any]:
        for name in SECRET_FIELDS[self.model]:
            if name not in values or values[name] is None:
                continue
            value = values[name]
            if not isinstance(value, str) or is_connection_secret(value):
                value = await extract_connection_secrets(
                    self.tokens, self.model.collection, record_id, value
                )
            values[name] = await own_connection_tokens(
                self.tokens, self.model.collection, record_id, value
            )
        return values

    async def create(self, data: Mapping[str, Any]) -> E:
        values = dict(data)
        values.setdefault("id", new_id())
        self.principal.require_write()
        return await super().create(await self._scrub(values["id"], values))

    async def update(
        self,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        expected_versions: Collection[int] | None = None,
    ) -> E:
        current = await self.get(record_id)
        expected_version(current, expected_versions)  # before any token is written
        values = await self._scrub(record_id, dict(changes))
        return await super().update(
            record_id,
            {**values, **_status_reset(current, values)},
            expected_versions=expected_versions,
        )

    async def delete(
        self, record_id: str, *, expected_versions: Collection[int] | None = None
    ) -> E:
        record = await super().delete(record_id, expected_versions=expected_versions)
        names = set()
        for name in SECRET_FIELDS[self.model]:
            names |= referenced_names(getattr(record, name))
        own = sorted(n for n in names if n.startswith(f"conn.{self.model.collection}.{record.id}"))
        if own:
            await self.repos.for_model(Token).delete_where(in_("name", own))
        return record


#: Fields whose change makes a knowledge source's last connectivity test stale.
_SOURCE_CONNECTION = ("source_type", "connection_config")


def _status_reset(current: Entity, changes: Mapping[str, Any]) -> dict[str, Any]:
    """`status: registered, last_error: null` when an update makes the last test stale: any
    change of an MCP server (a disabled one stays disabled), a change of a knowledge source's
    type or connection. The existing API does the same on PUT."""
    if not changes:
        return {}
    if isinstance(current, McpServer):
        if current.status is McpServerStatus.DISABLED:
            return {}
        return {"status": McpServerStatus.REGISTERED, "last_error": None}
    if isinstance(current, KnowledgeSource) and any(
        f in changes and changes[f] != getattr(current, f) for f in _SOURCE_CONNECTION
    ):
        return {"status": KnowledgeSourceStatus.REGISTERED, "last_error": None}
    return {}


def check_saved_addresses(
    model: type[Entity], values: Mapping[str, Any], principal: Principal, allowed: HostPolicy
) -> None:
    """Refuse (422) a non-admin's provider / MCP / knowledge record whose URL host is a literal
    internal address (any spelling), a qdrant local `path`, or a socket-style pgvector URI.
    DNS names are checked again at every connection (security.outbound)."""
    if principal.is_admin or model not in SECRET_FIELDS:
        return
    policy = OutboundPolicy(allowed=allowed)
    what = f"{model.collection[:-1]} {values.get('name') or ''}".strip()
    if model is Provider:
        check_saved_url(values.get("base_url"), policy, what)
        return
    config = values.get("connection_config")
    if not isinstance(config, Mapping):
        return
    check_saved_url(_str(config.get("url")), policy, what)
    if model is KnowledgeSource:
        if config.get("path") and not config.get("url"):
            raise OutboundRefused(
                f"{what}: a local qdrant `path` is a directory on the hub's host; only admins "
                "may register one (use connection_config.url)",
                details={"field": "connection_config.path"},
            )
        check_saved_pg_uri(_str(config.get("uri")), policy, what)
        check_saved_pg_uri(_str(config.get("dsn")), policy, what)  # the existing pgvector shape


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class CustomTools(Records[CustomTool]):
    """Custom tools whose `parameters_schema`, when nobody wrote one, is inferred from the entry
    point's signature (as the existing system does): on create, and on an update that changes
    the source or name of a tool whose schema was empty or inferred."""

    def __init__(self, repos: Repositories, principal: Principal) -> None:
        super().__init__(repos, principal, CustomTool)

    async def create(self, data: Mapping[str, Any]) -> CustomTool:
        values = dict(data)
        if is_empty_schema(values.get("parameters_schema")):
            inferred = inferred_or_none(
                str(values.get("source_code") or ""), str(values.get("name"))
            )
            if inferred is not None:
                values["parameters_schema"] = inferred
        return await super().create(values)

    async def update(
        self,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        expected_versions: Collection[int] | None = None,
    ) -> CustomTool:
        values = dict(changes)
        code_changed = {"source_code", "name"} & set(values)
        if code_changed and "parameters_schema" not in values:
            current = await self.get(record_id)
            before = inferred_or_none(current.source_code, current.name)
            if is_empty_schema(current.parameters_schema) or current.parameters_schema == before:
                after = inferred_or_none(
                    str(values.get("source_code", current.source_code) or ""),
                    str(values.get("name", current.name)),
                )
                if after is not None:
                    values["parameters_schema"] = after
        return await super().update(record_id, values, expected_versions=expected_versions)


class ChatMessages(Records[ChatMessage]):
    """Messages of a chat session; appending one updates the session's counters."""

    def __init__(self, repos: Repositories, principal: Principal) -> None:
        super().__init__(repos, principal, ChatMessage)

    async def create(self, data: Mapping[str, Any]) -> ChatMessage:
        # Storing it numbers it after the session's last message and counts it in the session's
        # message_count (`ChatMessage.numbering`).
        message = await super().create(data)
        sessions = self.repos.for_model(ChatSession)
        await sessions.update(message.session_id, {"last_message_at": message.created_at})
        return message

    async def update(
        self,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        expected_versions: Collection[int] | None = None,
    ) -> ChatMessage:
        raise InvalidData("chat messages cannot be edited; add a new message instead")


def writes_once(model: type[Entity]) -> bool:
    """Whether `records_for(model)` is the plain `Records`, which creates and updates a record
    with one write and nothing else (the services of tokens, secret-bearing records, chat
    messages, custom tools and agents, which record versions, do more). Keep in step with
    `records_for` (a test checks)."""
    return model not in (Token, ChatMessage, CustomTool, Agent) and model not in SECRET_FIELDS


def records_for(
    model: type[E], repos: Repositories, principal: Principal, cipher: Callable[[], TokenCipher]
) -> Records[Any]:
    """The service object for `model` within one unit of work (`cipher` is called only when a
    token value is encrypted)."""
    if model is Token:
        return TokenRecords(repos, principal, cipher)
    if model in SECRET_FIELDS:
        return SecretAwareRecords(repos, principal, model, cipher)
    if model is ChatMessage:
        return ChatMessages(repos, principal)
    if model is CustomTool:
        return CustomTools(repos, principal)
    if model is Agent:
        return AgentRecords(repos, principal)
    return Records(repos, principal, model)


__all__ = [
    "SECRET_FIELDS",
    "ChatMessages",
    "CustomTools",
    "SecretAwareRecords",
    "check_saved_addresses",
    "records_for",
]
