"""Custom Python tools, run one call per separate, confined process under limits.

What the sandbox guarantees (SANDBOX_ISOLATION=auto or namespaces, Linux):
- the tool runs in its own user, mount, network, PID, IPC and UTS namespaces (engine/confine.py):
  it sees only an allow-list of the filesystem (system dirs, a subset of /etc, the Python
  installation, a fresh /tmp), so never DATA_DIR, the key file, `.env` files, the checkout,
  homes, the host's /proc or any unix socket; Landlock repeats the allow-list in the kernel;
- no network: its namespace has only loopback. A tool with `allowed_hosts` reaches exactly
  those hosts through the egress proxy (engine/egress.py), internal addresses only when the
  operator lists them in OUTBOUND_ALLOWED_HOSTS;
- the environment holds only PATH, HOME/TMPDIR, LANG and the tool's declared variables;
- `setrlimit` caps CPU seconds, address space, file size, open files and new processes; the
  owner's timeout and memory are clamped to SANDBOX_MAX_TIMEOUT_SECONDS / SANDBOX_MAX_MEMORY_MB;
- a wall-clock timeout kills the whole process group (and with it the PID namespace);
- when the engine runs as root, the tool runs as ENGINE_SANDBOX_USER (default `nobody`);
- whatever the tool does (crash, `os._exit`, segfault, garbage on stdout) the engine gets an
  error result and carries on.
Where namespaces are unavailable (macOS, kernels without user namespaces) tools are refused
unless the operator sets SANDBOX_ISOLATION=none: then only the environment, rlimits and the uid
switch apply, as before. See docs/engine.md and docs/security.md.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import os
import pwd
import re
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from tbd_agents.engine.confine import CONFINE_FAILED, VIEW_TMP, Confiner, Isolation
from tbd_agents.errors import InvalidData

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("sandbox_runner.py")
RUNNER_IN_VIEW = "/run/tbd/sandbox_runner.py"
MAX_OUTPUT = 1_000_000
#: Imported before the privilege switch (the interpreter may be unreadable to the tool's user).
PRELOAD = (
    "json", "math", "re", "datetime", "decimal", "fractions", "statistics", "random", "string",
    "textwrap", "base64", "hashlib", "hmac", "uuid", "time", "collections", "itertools",
    "functools", "operator", "dataclasses", "enum", "typing", "csv", "io", "urllib.parse",
    "html", "unicodedata", "zoneinfo", "calendar", "copy", "pprint", "bisect", "heapq",
    "asyncio", "difflib", "struct", "binascii", "ipaddress", "secrets", "locale", "encodings.idna",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    timeout_seconds: float = 30.0
    memory_mb: int = 256
    file_size_mb: int = 16
    open_files: int = 64


@dataclass(frozen=True, slots=True)
class SandboxResult:
    ok: bool
    result: Any = None
    error: str | None = None
    stdout: str = ""
    exit_code: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def entry_point(source: str, tool_name: str) -> str:
    """Check `source` by parsing it (never executing) and return the function to call.

    The tool must define a top-level function `run` (or one named like the tool) taking the
    arguments of its parameters schema as keyword arguments. Raises InvalidData naming the fix.
    """
    try:
        tree = ast.parse(source, filename="<custom tool>")
    except SyntaxError as exc:
        raise InvalidData(
            f"custom tool {tool_name!r}: source_code has a syntax error at line {exc.lineno}: {exc.msg}",
            details={"line": exc.lineno},
        ) from None
    names = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    for candidate in ("run", tool_name):
        if candidate in names:
            return candidate
    raise InvalidData(
        f"custom tool {tool_name!r}: source_code must define a top-level function `run(**arguments)` "
        f"(found: {', '.join(sorted(names)) or 'no functions'})"
    )


def validate_custom_tool(name: str, source: str, parameters_schema: dict[str, Any]) -> str:
    """Validation on save: the source parses and has an entry point; the schema is a JSON Schema."""
    entry = entry_point(source, name)
    try:
        jsonschema.Draft202012Validator.check_schema(parameters_schema)
    except jsonschema.SchemaError as exc:
        raise InvalidData(
            f"custom tool {name!r}: parameters_schema is not a valid JSON Schema: {exc.message}"
        ) from None
    if parameters_schema.get("type", "object") != "object":
        raise InvalidData(f"custom tool {name!r}: parameters_schema must describe an object")
    return entry


def _drop_target(user: str | None) -> tuple[int, int] | None:
    if not user or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        log.warning("ENGINE_SANDBOX_USER=%s does not exist: custom tools run as root", user)
        return None
    return entry.pw_uid, entry.pw_gid


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _read_capped(stream: asyncio.StreamReader | None, cap: int) -> tuple[bytes, bool]:
    if stream is None:
        return b"", False
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return b"".join(chunks), False
        if size < cap:
            chunks.append(chunk[: cap - size])
        size += len(chunk)
        if size > cap:  # keep draining so the child never blocks on a full pipe
            continue


@dataclass(frozen=True, slots=True)
class Ceilings:
    """Operator limits no tool owner can exceed (SANDBOX_MAX_TIMEOUT_SECONDS / _MEMORY_MB)."""

    timeout_seconds: int = 120
    memory_mb: int = 1024

    def clamp(self, limits: SandboxLimits) -> SandboxLimits:
        return SandboxLimits(
            timeout_seconds=min(limits.timeout_seconds, self.timeout_seconds),
            memory_mb=min(limits.memory_mb, self.memory_mb),
            file_size_mb=limits.file_size_mb,
            open_files=limits.open_files,
        )


#: The ceilings that saving a custom tool checks (set from the settings at start-up).
_save_ceilings = Ceilings()


def set_save_ceilings(ceilings: Ceilings) -> None:
    global _save_ceilings
    _save_ceilings = ceilings


_HOST = re.compile(r"^(\*\.)?[A-Za-z0-9_.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def check_tool_policy(tool: Any) -> None:
    """On save: refuse limits above the operator's ceilings (naming the setting) and
    malformed `allowed_hosts` entries. `tool` is a CustomTool record."""
    c = _save_ceilings
    for field_name, value, ceiling, setting in (
        ("timeout_seconds", tool.timeout_seconds, c.timeout_seconds, "SANDBOX_MAX_TIMEOUT_SECONDS"),
        ("memory_limit_mb", tool.memory_limit_mb, c.memory_mb, "SANDBOX_MAX_MEMORY_MB"),
    ):
        if value > ceiling:
            raise InvalidData(
                f"custom tool {tool.name!r}: {field_name} {value} is above the server's ceiling "
                f"{setting}={ceiling}; lower it (or ask the operator to raise {setting})",
                details={"field": field_name, "setting": setting},
            )
    for host in tool.allowed_hosts:
        if not _HOST.match(host) or host.startswith(".") or len(host) > 260:
            raise InvalidData(
                f"custom tool {tool.name!r}: allowed_hosts entry {host!r} must be a host name "
                "or IP, optionally `*.` in front and `:port` behind (no scheme, no path)",
                details={"field": "allowed_hosts"},
            )


def _child_env(home: str, env: dict[str, str] | None) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        **(env or {}),
    }


def _entry_file(src: Path, dst: str) -> dict[str, Any]:
    return {"src": str(src), "dst": dst}


class Sandbox:
    """Runs custom tool calls in child processes (see the module docstring)."""

    def __init__(
        self,
        user: str | None = "nobody",
        *,
        isolation: Isolation | str = Isolation.AUTO,
        ceilings: Ceilings = Ceilings(),
        egress_internal_hosts: str = "",
        python: str = sys.executable,
    ) -> None:
        self._drop = _drop_target(user)
        self.ceilings = ceilings
        self.python = python
        self.confiner = Confiner(
            Isolation(isolation), self._drop, internal_hosts=egress_internal_hosts, python=python
        )
        if not self.confiner.enabled:
            log.warning(
                "SANDBOX_ISOLATION=none: custom tools run without namespaces (they can read "
                "what the sandbox user can read and use the network)"
            )

    @classmethod
    def from_config(cls, config: Any) -> Sandbox:
        """The sandbox an EngineConfig describes."""
        return cls(
            config.sandbox_user,
            isolation=config.sandbox_isolation,
            ceilings=Ceilings(config.sandbox_max_timeout_seconds, config.sandbox_max_memory_mb),
            egress_internal_hosts=config.outbound_allowed_hosts,
        )

    async def run(
        self,
        source: str,
        entry: str,
        arguments: dict[str, Any],
        *,
        env: dict[str, str] | None = None,
        limits: SandboxLimits = SandboxLimits(),
        allowed_hosts: list[str] | tuple[str, ...] = (),
    ) -> SandboxResult:
        """Run `entry(**arguments)` from `source` in a fresh process; never raises for tool faults."""
        limits = self.ceilings.clamp(limits)
        if self.confiner.enabled:
            problem = await asyncio.to_thread(self.confiner.problem)
            if problem:
                return SandboxResult(
                    ok=False,
                    error=f"custom tools cannot run: the sandbox is unavailable ({problem}); an "
                    "operator may set SANDBOX_ISOLATION=none to run them with rlimits only",
                )
        request: dict[str, Any] = {
            "source": source,
            "entry": entry,
            "arguments": arguments,
            "limits": {
                "cpu_seconds": max(1, int(limits.timeout_seconds + 0.999)),
                "memory_mb": limits.memory_mb,
                "file_size_mb": limits.file_size_mb,
                "open_files": limits.open_files,
            },
            "drop_to": None,
            "preload": list(PRELOAD),
        }
        if self.confiner.enabled:
            child_env = _child_env(VIEW_TMP, env)
            argv = [self.python, "-I", RUNNER_IN_VIEW]
            extra = [_entry_file(RUNNER, RUNNER_IN_VIEW)]
            async with self.confiner.launch(
                argv, child_env, limits=request["limits"], allowed_hosts=allowed_hosts,
                extra_binds=extra,
            ) as launch:  # fmt: skip
                return await self._spawn(
                    launch.argv, launch.env, str(launch.workdir), request, limits
                )
        workdir = tempfile.mkdtemp(prefix="tbd-tool-")
        try:
            if self._drop:
                os.chown(workdir, *self._drop)
                request["drop_to"] = list(self._drop)
            argv = [self.python, "-I", str(RUNNER)]
            return await self._spawn(argv, _child_env(workdir, env), workdir, request, limits)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        request: dict[str, Any],
        limits: SandboxLimits,
    ) -> SandboxResult:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            return await self._talk(proc, json.dumps(request).encode(), limits)
        finally:
            _kill_group(proc.pid)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def _talk(
        self, proc: asyncio.subprocess.Process, payload: bytes, limits: SandboxLimits
    ) -> SandboxResult:
        async def exchange() -> tuple[bytes, bytes]:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(payload)
                await proc.stdin.drain()
                proc.stdin.close()
            (out, _), (err, _) = await asyncio.gather(
                _read_capped(proc.stdout, MAX_OUTPUT), _read_capped(proc.stderr, 20_000)
            )
            await proc.wait()
            return out, err

        try:
            out, err = await asyncio.wait_for(exchange(), timeout=limits.timeout_seconds)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            return SandboxResult(
                ok=False,
                error=f"timed out after {limits.timeout_seconds:g} s; the tool's processes were killed",
                exit_code=proc.returncode,
            )
        return self._interpret(proc.returncode, out, err, limits)

    @staticmethod
    def _interpret(
        code: int | None, out: bytes, err: bytes, limits: SandboxLimits
    ) -> SandboxResult:
        stderr_tail = err.decode("utf-8", "replace")[-2000:]
        if code == CONFINE_FAILED and "sandbox: " in stderr_tail:
            line = stderr_tail[stderr_tail.rindex("sandbox: ") :].strip()
            return SandboxResult(ok=False, error=line, exit_code=code)
        if code is not None and code < 0:
            sig = (
                signal.Signals(-code).name
                if -code in signal.Signals._value2member_map_
                else str(-code)
            )
            hint = " (CPU time limit)" if sig in ("SIGXCPU", "SIGKILL") else ""
            return SandboxResult(
                ok=False, error=f"tool process crashed with signal {sig}{hint}", exit_code=code,
                details={"stderr": stderr_tail},
            )  # fmt: skip
        try:
            reply = json.loads(out.decode("utf-8"))
            if not isinstance(reply, dict) or "ok" not in reply:
                raise ValueError("not a reply object")
        except ValueError:
            reason = f"exited with code {code}" if code else "produced no result"
            if "MemoryError" in stderr_tail:
                reason = f"ran out of its {limits.memory_mb} MB memory limit"
            return SandboxResult(
                ok=False, error=f"tool process {reason} without a valid result", exit_code=code,
                details={"stderr": stderr_tail},
            )  # fmt: skip
        return SandboxResult(
            ok=bool(reply["ok"]),
            result=reply.get("result"),
            error=reply.get("error"),
            stdout=str(reply.get("stdout", "")),
            exit_code=code,
            details={"traceback": reply["traceback"]} if reply.get("traceback") else {},
        )
