"""Base class of every request body: unknown fields refused, NUL characters refused.

PostgreSQL text and JSONB cannot hold U+0000, so a NUL anywhere in a body is refused with 422
(naming where it is) on every backend alike, instead of failing deep in the database.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, model_validator


def find_nul(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (key or value) holding U+0000, or None."""
    if isinstance(value, str):
        return path or "(value)" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return where
            found = find_nul(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_nul(item, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Read-only fields of the resource's responses (ids, timestamps, server-managed and
    #: computed fields): a client that sends a record back as it received it (the existing
    #: API ignored unknown fields) gets them dropped, not a 422. Other unknown fields stay 422.
    ignored_fields: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _drop_read_only(cls, data: Any) -> Any:
        if (
            cls.ignored_fields
            and isinstance(data, dict)
            and not cls.ignored_fields.isdisjoint(data)
        ):
            return {k: v for k, v in data.items() if k not in cls.ignored_fields}
        return data

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        where = find_nul(data)
        if where is not None:
            raise ValueError(f"{where}: text may not contain the NUL character (U+0000)")
        return data


#: Longest MCP connect/call timeout accepted (seconds).
MAX_TIMEOUT_SECONDS = 3600.0
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def timeout_seconds(config: dict[str, Any], name: str, default: float, where: str) -> float:
    """`config[name]` as a number of seconds in (0, MAX_TIMEOUT_SECONDS], or `default` when
    absent; ValueError naming `where.name` otherwise (strings, booleans, NaN, ±inf, ≤ 0)."""
    value = config.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}.{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"{where}.{name} must be more than 0 and at most {MAX_TIMEOUT_SECONDS:g}")
    return seconds


def check_http_url(url: str, where: str) -> None:
    """ValueError naming `where` unless `url` is an http(s) URL an HTTP client can send."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError(f"{where} may not contain control characters (CR, LF, tab, …)")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise ValueError(f"{where} is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{where} must be an http:// or https:// URL with a host")


def check_headers(headers: dict[str, str], where: str) -> None:
    """ValueError naming the header unless every name is an HTTP token and every value is
    Latin-1 text without CR, LF or other control characters (what HTTP/1.1 can carry)."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{where}: {name!r} is not a valid header name")
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
            raise ValueError(f"{where}.{name} may not contain CR, LF or control characters")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{where}.{name} must be Latin-1 text (HTTP header values)") from None


#: Transports that connect to `connection_config.url` (`http` is the existing TBD Agents name of
#: streamable HTTP, the same transport as `streamable_http`).
URL_TRANSPORTS = frozenset({"sse", "http", "streamable_http"})


def check_mcp_config(config: dict[str, Any], transport: Any = None) -> None:
    """ValueError naming the field for bad timeouts, or, for a URL transport (sse, http,
    streamable_http), a `url` that is not an http(s) URL (`{{token:…}}` templates are checked
    when used)."""
    for name in ("connect_timeout", "call_timeout"):
        timeout_seconds(config, name, 1.0, "connection_config")
    kind = getattr(transport, "value", transport)
    url = config.get("url")
    if kind in URL_TRANSPORTS and isinstance(url, str) and "{{" not in url:
        check_http_url(url, "connection_config.url")


def check_provider(base_url: str | None, extra_headers: dict[str, str] | None) -> None:
    if base_url and "{{" not in base_url:
        check_http_url(base_url, "base_url")
    check_headers(extra_headers or {}, "extra_headers")


class ToolPolicyInput(Input):
    """A body with a `tool_policy` (agents, workflows): checked here so a bad rule is a 422
    naming it (`tool_policy.rules.2.args.path: ...`), and stored in its normal form."""

    @model_validator(mode="after")
    def _tool_policy(self) -> Any:
        from tbd_agents.domain.approvals import parse_policy

        raw = getattr(self, "tool_policy", None)
        if isinstance(raw, dict):
            policy = parse_policy(raw)
            assert policy is not None
            self.__dict__["tool_policy"] = policy.model_dump(mode="json", exclude_none=True)
        return self


class AgentInput(ToolPolicyInput):
    pass


class McpServerInput(Input):
    @model_validator(mode="after")
    def _mcp_config(self) -> Any:
        config = getattr(self, "connection_config", None)
        if isinstance(config, dict):
            check_mcp_config(config, getattr(self, "transport_type", None))
        return self


class ProviderInput(Input):
    @model_validator(mode="after")
    def _provider(self) -> Any:
        check_provider(getattr(self, "base_url", None), getattr(self, "extra_headers", None))
        return self


#: Workflow statuses a client may set; the others describe runs and are set by the run-time.
SETTABLE_WORKFLOW_STATUSES = ("active", "inactive")


#: `max_turns` of a workflow created without one (DEFAULT_MAX_TURNS; set by `create_app`).
_default_max_turns = 5


def set_default_max_turns(value: int) -> None:
    """Make `value` the max_turns of workflows created without one (DEFAULT_MAX_TURNS)."""
    global _default_max_turns
    _default_max_turns = value


class WorkflowInput(ToolPolicyInput):
    @model_validator(mode="after")
    def _default_max_turns(self) -> Any:
        """A create body without max_turns gets DEFAULT_MAX_TURNS (an update body without it
        leaves the field as it is: its unset fields are None and are not applied)."""
        if (
            "max_turns" not in self.model_fields_set
            and getattr(self, "max_turns", None) is not None
        ):
            self.__dict__["max_turns"] = _default_max_turns  # not marked as sent by the client
        return self

    @model_validator(mode="after")
    def _status(self) -> Any:
        status = getattr(self, "status", None)
        if status is not None and str(status) not in SETTABLE_WORKFLOW_STATUSES:
            raise ValueError(
                f"status: a workflow can be set to {' or '.join(SETTABLE_WORKFLOW_STATUSES)} "
                f"(not {str(status)!r}); the other statuses describe its runs"
            )
        return self
