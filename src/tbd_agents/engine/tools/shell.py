"""The `bash` built-in: one shell command per call, in the same sandbox as custom tools.

With namespaces (SANDBOX_ISOLATION auto / namespaces) the command runs through the confine
launcher (engine/confine.py) with the custom tools' view plus the workspace bind-mounted
read-write at /workspace (its working directory; Landlock allows writes there and in its own
/tmp only), the checkout's `.git` bound read-only on top (git runs as the server when the
checkout is synced: hooks or config planted there must not run), no network, the environment
PATH/HOME/TMPDIR/LANG only, and rlimits. Unlike a custom tool it may fork: RLIMIT_NPROC is
BASH_MAX_PROCESSES instead of 0. A wall-clock timeout kills the process group (and with it the
PID namespace). When namespaces are unavailable the call is refused with the reason.

SANDBOX_ISOLATION=none (the operator's documented opt-out) does what custom tools do there: a
plain child process with a clean environment, rlimits and the switch to ENGINE_SANDBOX_USER, in
the workspace directory; it can read what that user can read and use the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbd_agents.engine.confine import VIEW_PATH
from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.sandbox import Sandbox
from tbd_agents.engine.tools.base import FunctionTool, Tool, ToolContext, ToolResult

VIEW_WORKSPACE = "/workspace"
OUTPUT_CAP = 30_000
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ShellLimits:
    timeout_seconds: float = 60.0
    processes: int = 64
    memory_mb: int = 1024
    file_size_mb: int = 256
    open_files: int = 256


def _env(home: str) -> dict[str, str]:
    return {"PATH": VIEW_PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "TERM": "dumb"}


async def _collect(proc: asyncio.subprocess.Process, cap: int) -> bytes:
    assert proc.stdout is not None
    chunks: list[bytes] = []
    size = 0
    while chunk := await proc.stdout.read(65536):
        if size < cap:
            chunks.append(chunk[: cap - size])
        size += len(chunk)  # keep draining so the command never blocks on a full pipe
    await proc.wait()
    out = b"".join(chunks)
    return out + (f"\n…[{size - cap} bytes cut]".encode() if size > cap else b"")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _execute(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    wall_seconds: float,
    preexec: Callable[[], None] | None = None,
) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True,
        preexec_fn=preexec,
    )  # fmt: skip
    try:
        out = await asyncio.wait_for(_collect(proc, OUTPUT_CAP), timeout=wall_seconds)
    except TimeoutError:
        _kill(proc.pid)
        await proc.wait()
        return (
            f"Error: the command did not finish within {wall_seconds:g} s; its processes "
            "were killed"
        )
    finally:
        _kill(proc.pid)
    text = out.decode("utf-8", "replace")
    code = proc.returncode
    if code == 125 and "sandbox: " in text:
        return "Error: " + text[text.rindex("sandbox: ") :].strip()
    return f"exit code {code}\n{text}" if text else f"exit code {code} (no output)"


def _rlimits(limits: ShellLimits, drop: tuple[int, int] | None) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec (SANDBOX_ISOLATION=none)
        cpu = max(1, int(limits.timeout_seconds + 0.999))
        for kind, value in (
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_CPU, cpu),
            (resource.RLIMIT_AS, limits.memory_mb * MB),
            (resource.RLIMIT_FSIZE, limits.file_size_mb * MB),
            (resource.RLIMIT_NOFILE, limits.open_files),
        ):
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(
                    kind, (value, value + 1 if kind == resource.RLIMIT_CPU else value)
                )
        if drop is not None:
            os.setgroups([])
            os.setgid(drop[1])
            os.setuid(drop[0])
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    return apply


async def run_shell(sandbox: Sandbox, workspace: Path, command: str, limits: ShellLimits) -> str:
    """Run `command` with bash in `workspace` under `sandbox` (see the module docstring)."""
    confiner = sandbox.confiner
    argv = ["/bin/bash", "--noprofile", "--norc", "-c", command]
    if not confiner.enabled:
        preexec = _rlimits(limits, confiner.drop)
        return await _execute(
            argv, _env(str(workspace)), str(workspace), limits.timeout_seconds, preexec
        )
    problem = await asyncio.to_thread(confiner.problem)
    if problem:
        return (
            f"Error: bash cannot run: the sandbox is unavailable ({problem}); an operator may "
            "set SANDBOX_ISOLATION=none to run it with rlimits only"
        )
    binds: list[dict[str, Any]] = [{"src": str(workspace), "dst": VIEW_WORKSPACE, "rw": True}]
    if (workspace / ".git").is_dir() and not (workspace / ".git").is_symlink():
        binds.append({"src": str(workspace / ".git"), "dst": f"{VIEW_WORKSPACE}/.git"})
    spec_limits = {
        "cpu_seconds": max(1, int(limits.timeout_seconds + 0.999)),
        "memory_mb": limits.memory_mb,
        "file_size_mb": limits.file_size_mb,
        "open_files": limits.open_files,
        "processes": limits.processes,
    }
    async with confiner.launch(
        argv, _env("/tmp"), limits=spec_limits, extra_binds=binds,  # noqa: S108 - in the view
        cwd=VIEW_WORKSPACE, writable=[VIEW_WORKSPACE],
    ) as launch:  # fmt: skip
        return await _execute(launch.argv, launch.env, str(launch.workdir), limits.timeout_seconds)


def bash_tool(sandbox: Sandbox, workspace: Path, limits: ShellLimits) -> Tool:
    spec = ToolSpec(
        "bash",
        "Run a bash command in the workspace (the working directory, /workspace). No network; "
        f"the command is killed after {limits.timeout_seconds:g} s. Answers the exit code and "
        "the combined output.",
        {
            "type": "object",
            "properties": {"command": {"type": "string", "minLength": 1}},
            "required": ["command"],
            "additionalProperties": False,
        },
    )

    async def run(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        text = await run_shell(sandbox, workspace, args["command"], limits)
        return ToolResult(text, is_error=text.startswith("Error: "))

    # The launcher enforces the limit itself; the outer timeout only catches a stuck spawn.
    return FunctionTool(spec, run, timeout=limits.timeout_seconds + 15)
