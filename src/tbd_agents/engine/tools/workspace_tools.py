"""What the workspace built-ins (`bash, read, write, edit, glob, grep, web_fetch, web_search`)
need from a run, and how each is built (registered in builtins.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tbd_agents.engine.sandbox import Sandbox
from tbd_agents.engine.tools.base import Tool
from tbd_agents.engine.tools.files import FILE_TOOLS, file_tools
from tbd_agents.engine.tools.shell import ShellLimits, bash_tool
from tbd_agents.engine.tools.web import search_problem, web_fetch_tool, web_search_tool
from tbd_agents.engine.workspace import Workspace, WorkspaceConfig
from tbd_agents.security.outbound import OutboundPolicy
from tbd_agents.services.privilege import CUSTOM_TOOLS_SETTING

WORKSPACE_TOOL_NAMES = ("bash", *FILE_TOOLS, "web_fetch", "web_search")


@dataclass(slots=True)
class WorkspaceTools:
    """The run's workspace (None: no directory prepared), sandbox, settings, the agent
    owner's outbound policy (for web_fetch) and whether it may run bash: a shell runs code
    on the host like a custom tool, so it passes the same gate (an admin owner, or
    ALLOW_USER_CUSTOM_TOOLS=true)."""

    workspace: Workspace | None
    sandbox: Sandbox
    config: WorkspaceConfig
    outbound: OutboundPolicy
    shell_allowed: bool = True

    def tool(self, name: str, timeout: float) -> Tool | str:
        """The built-in `name`, or why it cannot be offered."""
        if name == "web_fetch":
            return web_fetch_tool(self.outbound, self.config.web_fetch_max_bytes, timeout)
        if name == "web_search":
            problem = search_problem(self.config)
            return problem or web_search_tool(self.config, timeout)
        if self.workspace is None:
            return "no workspace was prepared for this run"
        if name == "bash" and not self.shell_allowed:
            return (
                "it runs commands on the host like a custom tool: the agent's owner is not an "
                f"admin and {CUSTOM_TOOLS_SETTING} is false"
            )
        if name == "bash":
            limits = ShellLimits(
                timeout_seconds=min(
                    self.config.bash_timeout_seconds, self.sandbox.ceilings.timeout_seconds
                ),
                processes=self.config.bash_max_processes,
                memory_mb=self.sandbox.ceilings.memory_mb,
            )
            return bash_tool(self.sandbox, self.workspace.path, limits)
        owner = self.sandbox.confiner.drop
        return file_tools(self.workspace.path, {name}, timeout, owner)[0]
