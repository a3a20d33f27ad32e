"""Runs inside the sandbox process: set limits, maybe drop privileges, run one custom tool.

Started as `python -I sandbox_runner.py` with a minimal environment. Reads one JSON object from
stdin ({source, entry, arguments, limits, drop_to, preload}) and writes one JSON object to the
original stdout ({ok, result | error, stdout}). It imports nothing from tbd_agents on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import io
import json
import os
import resource
import sys
import traceback
from typing import Any

MB = 1024 * 1024


def _limit(kind: int, value: int) -> None:
    soft_hard = (value, value)
    if kind == resource.RLIMIT_CPU:
        soft_hard = (value, value + 1)  # SIGXCPU first, SIGKILL one second later
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(kind, soft_hard)


def apply_limits(limits: dict[str, int]) -> None:
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_CPU, int(limits["cpu_seconds"]))
    _limit(resource.RLIMIT_AS, int(limits["memory_mb"]) * MB)
    _limit(resource.RLIMIT_FSIZE, int(limits["file_size_mb"]) * MB)
    _limit(resource.RLIMIT_NOFILE, int(limits.get("open_files", 64)))


def drop_privileges(uid: int, gid: int, preload: list[str]) -> None:
    # After the switch the interpreter's own files may be unreadable (e.g. under /root), so the
    # modules a tool commonly needs are imported first.
    for name in preload:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def main() -> int:
    out = sys.stdout
    request = json.loads(sys.stdin.read())
    apply_limits(request["limits"])
    if request.get("drop_to"):
        uid, gid = request["drop_to"]
        drop_privileges(int(uid), int(gid), list(request.get("preload", [])))
    # No new processes or threads from here on (not enforced for root: see docs/engine.md).
    _limit(resource.RLIMIT_NPROC, 0)
    captured = io.StringIO()
    reply: dict[str, Any]
    try:
        namespace: dict[str, Any] = {"__name__": "custom_tool"}
        code = compile(request["source"], "<custom tool>", "exec")
        with contextlib.redirect_stdout(captured):
            exec(code, namespace)  # noqa: S102 - running the user's tool is the sandbox's purpose
            func = namespace[request["entry"]]
            value = func(**request["arguments"])
            if inspect.isawaitable(value):
                value = asyncio.run(_await(value))
        reply = {"ok": True, "result": value}
    except MemoryError:
        reply = {
            "ok": False,
            "error": f"memory limit of {request['limits']['memory_mb']} MB exceeded",
        }
    except BaseException as exc:
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        reply = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(tb[-6:]),
        }
    reply["stdout"] = captured.getvalue()[-10_000:]
    try:
        text = json.dumps(reply, default=str)
    except (TypeError, ValueError) as exc:
        text = json.dumps({"ok": False, "error": f"result is not JSON-serialisable: {exc}"})
    out.write(text)
    out.flush()
    return 0


async def _await(value: Any) -> Any:
    return await value


if __name__ == "__main__":
    sys.exit(main())
