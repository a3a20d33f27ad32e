"""Engine tunables, built once from `Settings` (or directly in tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tbd_agents.services.privilege import HostCapabilities


@dataclass(frozen=True, slots=True)
class EngineConfig:
    #: Seconds one model call may take (connect + whole stream).
    model_timeout: float = 120.0
    #: Retries after a 429 / 5xx / connection error before the call fails.
    model_max_retries: int = 3
    #: First backoff delay; doubled per retry, with jitter, unless Retry-After says otherwise.
    retry_base_delay: float = 0.5
    #: Longest wait the engine accepts (from Retry-After or backoff) before giving up.
    retry_max_delay: float = 60.0
    #: Seconds to connect to (and list the tools of) one MCP server.
    mcp_connect_timeout: float = 15.0
    #: Seconds one MCP tool call may take.
    mcp_call_timeout: float = 60.0
    #: Seconds a built-in tool call may take.
    builtin_tool_timeout: float = 30.0
    #: Compact when the conversation exceeds this fraction of the model's context window.
    compaction_threshold: float = 0.8
    #: Extra model-catalog TOML whose entries override the built-in table.
    model_catalog: Path | None = None
    #: System user custom tools run as when the engine runs as root (None: do not switch).
    sandbox_user: str | None = "nobody"
    #: SANDBOX_ISOLATION: auto | namespaces | none (see engine/sandbox.py).
    sandbox_isolation: str = "auto"
    #: Operator ceilings on a custom tool's own timeout and memory limit.
    sandbox_max_timeout_seconds: int = 120
    sandbox_max_memory_mb: int = 1024
    #: OUTBOUND_ALLOWED_HOSTS: internal hosts/addresses/CIDRs that tools with allowed_hosts may
    #: reach through the egress proxy (the one outbound policy of security/outbound.py).
    outbound_allowed_hosts: str = ""
    #: Largest tool result (characters) fed back to the model; longer results are cut.
    max_tool_result_chars: int = 20_000
    #: What non-admins' records may run on the host (stdio MCP servers, custom tools) and who
    #: counts as an admin, checked on the record's owner when a run loads it.
    host: HostCapabilities = field(default_factory=HostCapabilities)

    @classmethod
    def from_settings(cls, settings: Any) -> EngineConfig:
        """Take every `engine_*` field (and `sandbox_*` one) that `settings` defines; defaults
        for the rest."""
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            direct = name.startswith("sandbox_") or name == "outbound_allowed_hosts"
            for key in (f"engine_{name}", name if direct else None):
                if key and hasattr(settings, key):
                    values[name] = getattr(settings, key)
                    break
        if hasattr(settings, "user_stdio_mcp_commands"):
            values["host"] = HostCapabilities.from_settings(settings)
        return cls(**values)
