"""Text extraction in a worker process, bounded in time and memory.

`extract_isolated` starts `python -m tbd_agents.knowledge.isolate` for one file: the bytes go in on
stdin, one JSON answer comes back on stdout. The worker caps its own address space
(KNOWLEDGE_EXTRACT_MEMORY_MB) and CPU time before it reads anything; the parent kills it when
KNOWLEDGE_EXTRACT_TIMEOUT_SECONDS have passed. The API's event loop only waits on pipes, so a file
built to expand hugely (a PDF bomb) costs the worker, never the other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from tbd_agents.errors import InvalidData, PayloadTooLarge, TbdError
from tbd_agents.knowledge.extract import ExtractLimits, extract

#: The directory holding the `tbd_agents` package, put first on the worker's path so the worker
#: runs the same code as the server (also from a source tree that is not installed).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _worker_env() -> dict[str, str]:
    """Only what the worker needs to start: it parses untrusted files, so the server's secrets
    (TOKEN_ENCRYPTION_KEY, POSTGRES_URI, …) are not passed on."""
    inherited = os.environ.get("PYTHONPATH", "")
    paths = [_PACKAGE_ROOT, *filter(None, inherited.split(os.pathsep))]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(paths),
    }


async def extract_isolated(
    data: bytes, content_type: str, limits: ExtractLimits
) -> tuple[str, str]:
    """(text, title) of `data`, extracted by a worker process within `limits`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tbd_agents.knowledge.isolate",
        json.dumps(dataclasses.asdict(limits)),
        content_type,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_worker_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), limits.timeout_seconds)
    except TimeoutError:
        raise InvalidData(
            f"extracting the file's text took longer than {limits.timeout_seconds:g} s "
            "(KNOWLEDGE_EXTRACT_TIMEOUT_SECONDS): the file is too large or built to expand; "
            "split it or raise the setting",
            details={
                "limit": limits.timeout_seconds,
                "setting": "KNOWLEDGE_EXTRACT_TIMEOUT_SECONDS",
            },
        ) from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: the worker goes now
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return _answer(out, err, proc.returncode, limits)


def _answer(
    out: bytes, err: bytes, returncode: int | None, limits: ExtractLimits
) -> tuple[str, str]:
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        # No answer: the worker died (out of memory, CPU limit, a crash in a parser).
        raise PayloadTooLarge(
            f"extracting the file's text failed (worker exit {returncode}): it needs more than "
            f"the {limits.memory_mb} MB (KNOWLEDGE_EXTRACT_MEMORY_MB) or "
            f"{limits.timeout_seconds:g} s (KNOWLEDGE_EXTRACT_TIMEOUT_SECONDS) allowed, "
            "or is not a valid file",
            details={"exit": returncode, "stderr": err.decode(errors="replace")[-500:]},
        )
    if answer.get("ok"):
        return str(answer["text"]), str(answer["title"])
    error = PayloadTooLarge if answer.get("status") == 413 else InvalidData
    raise error(str(answer.get("message")), details=dict(answer.get("details") or {}))


def _confine(limits: ExtractLimits) -> None:
    """Cap this process's address space and CPU time (where the OS supports it)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX system
        return
    memory = limits.memory_mb * 1024 * 1024
    cpu = int(limits.timeout_seconds) + 2
    for which, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu)):
        with contextlib.suppress(ValueError, OSError):  # e.g. RLIMIT_AS on macOS
            resource.setrlimit(which, (value, value))


def _work(limits: ExtractLimits, content_type: str, data: bytes) -> dict[str, Any]:
    try:
        text, title = extract(data, content_type, limits)
    except TbdError as exc:
        return {
            "ok": False,
            "status": exc.http_status,
            "message": exc.message,
            "details": exc.details,
        }
    except MemoryError:
        return {
            "ok": False,
            "status": 413,
            "message": f"extracting the file's text needs more than {limits.memory_mb} MB "
            "(KNOWLEDGE_EXTRACT_MEMORY_MB): split it or raise the setting",
            "details": {"limit": limits.memory_mb, "setting": "KNOWLEDGE_EXTRACT_MEMORY_MB"},
        }
    except Exception as exc:  # a parser choking on a malformed file (RecursionError too)
        return {
            "ok": False,
            "status": 422,
            "message": f"could not extract text from the {content_type} file "
            f"({type(exc).__name__}: {str(exc)[:200]}); is it a valid file?",
            "details": {},
        }
    return {"ok": True, "text": text, "title": title}


def main(argv: list[str]) -> int:
    limits = ExtractLimits(**json.loads(argv[1]))
    _confine(limits)
    data = sys.stdin.buffer.read()
    answer = _work(limits, argv[2], data)
    sys.stdout.buffer.write(json.dumps(answer, ensure_ascii=False).encode())
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
