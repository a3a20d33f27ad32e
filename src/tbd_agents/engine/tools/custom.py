"""Custom Python tools (the `custom_tools` records), each call run in the sandbox."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.sandbox import Sandbox, SandboxLimits, entry_point
from tbd_agents.engine.tools.base import ToolContext, ToolResult


@dataclass(slots=True)
class CustomPythonTool:
    """One custom tool; `env` holds its declared variables with secrets already resolved."""

    spec: ToolSpec
    source_code: str
    sandbox: Sandbox
    limits: SandboxLimits
    env: dict[str, str] = field(default_factory=dict, repr=False)
    allowed_hosts: list[str] = field(default_factory=list)
    entry: str = "run"
    source: str = "custom"
    timeout: float = field(init=False)

    def __post_init__(self) -> None:
        self.entry = entry_point(self.source_code, self.spec.name)
        # The sandbox enforces the limit itself; the outer timeout only catches a stuck spawn.
        self.timeout = self.limits.timeout_seconds + 5
        self.source = f"custom:{self.spec.name}"

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        res = await self.sandbox.run(
            self.source_code, self.entry, arguments, env=self.env, limits=self.limits,
            allowed_hosts=self.allowed_hosts,
        )  # fmt: skip
        if not res.ok:
            return ToolResult(f"Error: {res.error}", is_error=True, data=res.details or None)
        value = res.result
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return ToolResult(text, data=value)
