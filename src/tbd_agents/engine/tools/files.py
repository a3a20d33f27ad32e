"""The file built-ins `read`, `write`, `edit`, `glob` and `grep`, confined to the run's workspace.

They run in the server process, so every path is checked before use: relative to the
workspace root, no `..` component, no absolute path outside the root, and after resolving
(`realpath`, symlinks followed) still inside the root; writes refuse a final symlink and
anything under `.git` (git runs as the server when the checkout is synced: a planted hook or
config entry there must never run). Files are then opened component by component from the root
with O_NOFOLLOW (`Area.open`), so a symlink swapped in after the check (by a bash call running
at the same time) makes the call fail instead of reaching outside. Files and directories the
tools create belong to the sandbox user (root servers), so bash can change them later. Results
are capped so one call cannot flood the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.tools.base import FunctionTool, Tool, ToolContext, ToolResult

FILE_TOOLS = ("read", "write", "edit", "glob", "grep")
MAX_READ_LINES = 2000
MAX_LINE_CHARS = 2000
MAX_WRITE_BYTES = 5 * 1024 * 1024
MAX_GLOB = 500
MAX_GREP = 200
GREP_FILE_BYTES = 2 * 1024 * 1024
REGEX_TIMEOUT = 2.0


class PathRefused(Exception):
    pass


def resolve(root: Path, raw: str, *, write: bool = False) -> Path:
    """`raw` (relative to `root`, or absolute inside it) as a path inside the workspace, or
    PathRefused saying why not (see the module docstring)."""
    root = Path(os.path.realpath(root))
    if not raw or "\x00" in raw:
        raise PathRefused("path is empty")
    given = Path(raw)
    if ".." in given.parts:
        raise PathRefused(f"{raw!r}: '..' is not allowed; use a path inside the workspace")
    if given.is_absolute():
        if given != root and root not in given.parents:
            raise PathRefused(f"{raw!r} is outside the workspace; use a relative path")
        given = given.relative_to(root)
    target = root / given
    real = Path(os.path.realpath(target))
    if real != root and root not in real.parents:
        raise PathRefused(f"{raw!r} resolves outside the workspace (a symlink)")
    if write:
        rel = real.relative_to(root) if real != root else Path()
        if rel.parts[:1] == (".git",) or given.parts[:1] == (".git",):
            raise PathRefused(f"{raw!r}: the .git directory is read-only")
        if target.is_symlink():
            raise PathRefused(f"{raw!r} is a symlink; write to the file it points to instead")
    return real


@dataclass(frozen=True, slots=True)
class Area:
    """The workspace root (resolved) and who owns what the tools create there."""

    root: Path
    owner: tuple[int, int] | None = None

    def open(self, real: Path, flags: int, *, create_dirs: bool = False) -> int:
        """Open `real` (a resolved path inside the root) without following any symlink on
        the way; with `create_dirs`, missing parent directories are made."""
        parts = real.relative_to(self.root).parts
        if not parts:
            raise PathRefused("the workspace root is a directory")
        fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                if create_dirs:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                        if self.owner is not None:
                            os.chown(part, *self.owner, dir_fd=fd, follow_symlinks=False)
                step = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                nxt = os.open(part, step, dir_fd=fd)
                os.close(fd)
                fd = nxt
            out = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        finally:
            os.close(fd)
        if self.owner is not None and flags & os.O_CREAT:
            os.fchown(out, *self.owner)
        return out

    def read_text(self, real: Path) -> str:
        with os.fdopen(self.open(real, os.O_RDONLY), encoding="utf-8") as f:
            return f.read()


def _schema(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


Work = Callable[[Area, dict[str, Any]], str]


def _tool(
    area: Area, name: str, description: str, schema: dict[str, Any], work: Work, timeout: float
) -> Tool:
    async def run(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        try:
            return ToolResult(await asyncio.to_thread(work, area, args))
        except PathRefused as exc:
            return ToolResult(f"Error: {exc}", True)
        except (OSError, UnicodeError, ValueError, regex.error) as exc:
            return ToolResult(f"Error: {type(exc).__name__}: {exc}", True)

    return FunctionTool(ToolSpec(name, description, schema), run, timeout=timeout)


def _read(area: Area, args: dict[str, Any]) -> str:
    path = resolve(area.root, args["path"])
    if path.is_dir():
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
        return "\n".join(entries[:MAX_GLOB]) or "(empty directory)"
    offset = int(args.get("offset", 1))
    limit = min(int(args.get("limit", MAX_READ_LINES)), MAX_READ_LINES)
    out: list[str] = []
    with os.fdopen(area.open(path, os.O_RDONLY), encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if n < offset:
                continue
            if len(out) >= limit:
                out.append(f"… (more lines; call read with offset={n})")
                break
            text = line.rstrip("\n")
            if len(text) > MAX_LINE_CHARS:
                text = text[:MAX_LINE_CHARS] + "…"
            out.append(f"{n:6}\t{text}")
    return "\n".join(out) if out else "(no lines in that range)"


def _write(area: Area, args: dict[str, Any]) -> str:
    path = resolve(area.root, args["path"], write=True)
    data = args["content"].encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise ValueError(f"content is larger than {MAX_WRITE_BYTES} bytes")
    fd = area.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, create_dirs=True)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return f"Wrote {len(data)} bytes to {args['path']}."


def _edit(area: Area, args: dict[str, Any]) -> str:
    path = resolve(area.root, args["path"], write=True)
    old, new = args["old_string"], args["new_string"]
    text = area.read_text(path)
    count = text.count(old)
    if count == 0:
        raise ValueError(
            f"old_string not found in {args['path']}; read the file and copy it exactly"
        )
    if count > 1 and not args.get("replace_all"):
        raise ValueError(
            f"old_string occurs {count} times in {args['path']}; add context to make it unique "
            "or set replace_all"
        )
    text = text.replace(old, new) if args.get("replace_all") else text.replace(old, new, 1)
    with os.fdopen(area.open(path, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as f:
        f.write(text)
    return f"Replaced {count if args.get('replace_all') else 1} occurrence(s) in {args['path']}."


def _inside(root: Path, path: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real == root or root in real.parents


def _glob(area: Area, args: dict[str, Any]) -> str:
    pattern = args["pattern"]
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise PathRefused("the pattern must be relative to the workspace, without '..'")
    real_root = area.root
    found: list[str] = []
    for path in sorted(real_root.glob(pattern)):
        if ".git" in path.relative_to(real_root).parts or not _inside(real_root, path):
            continue
        found.append(str(path.relative_to(real_root)) + ("/" if path.is_dir() else ""))
        if len(found) > MAX_GLOB:
            break
    if not found:
        return "No files match."
    more = "\n… (more matches; narrow the pattern)" if len(found) > MAX_GLOB else ""
    return "\n".join(found[:MAX_GLOB]) + more


def _grep(area: Area, args: dict[str, Any]) -> str:
    real_root = area.root
    start = resolve(real_root, args.get("path") or ".")
    compiled = regex.compile(args["pattern"])
    limit = min(int(args.get("max_results", 50)), MAX_GREP)
    file_glob = args.get("glob")
    files = [start] if start.is_file() else sorted(p for p in start.rglob(file_glob or "*"))
    hits: list[str] = []
    for path in files:
        rel = path.relative_to(real_root)
        if ".git" in rel.parts or not path.is_file() or not _inside(real_root, path):
            continue
        if file_glob and start.is_file() and not path.match(file_glob):
            continue
        if path.stat().st_size > GREP_FILE_BYTES:
            continue
        try:
            text = area.read_text(Path(os.path.realpath(path)))
        except UnicodeDecodeError:
            continue  # binary
        for n, line in enumerate(text.splitlines(), 1):
            try:
                matched = compiled.search(line, timeout=REGEX_TIMEOUT)
            except TimeoutError:
                raise ValueError("the pattern is too slow (catastrophic backtracking)") from None
            if matched:
                hits.append(f"{rel}:{n}: {line[:MAX_LINE_CHARS]}")
                if len(hits) >= limit:
                    return "\n".join(hits) + f"\n… (stopped at max_results={limit})"
    return "\n".join(hits) or "No matches."


def file_tools(
    root: Path, names: set[str], timeout: float, owner: tuple[int, int] | None = None
) -> list[Tool]:
    """The file built-ins among `names`, acting in `root`; what they create belongs to `owner`
    (uid, gid) when given."""
    area = Area(Path(os.path.realpath(root)), owner)
    path_prop = {"type": "string", "minLength": 1, "description": "Path relative to the workspace"}
    specs: dict[str, tuple[str, dict[str, Any], Work]] = {
        "read": (
            "Read a text file of the workspace (numbered lines), or list a directory.",
            _schema(
                {
                    "path": path_prop,
                    "offset": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "First line (1-based)",
                    },
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_READ_LINES},
                },
                ["path"],
            ),
            _read,
        ),
        "write": (
            "Create or overwrite a file of the workspace with `content`.",
            _schema({"path": path_prop, "content": {"type": "string"}}, ["path", "content"]),
            _write,
        ),
        "edit": (
            "Replace `old_string` by `new_string` in a file of the workspace; old_string must "
            "be unique unless replace_all is true.",
            _schema(
                {
                    "path": path_prop,
                    "old_string": {"type": "string", "minLength": 1},
                    "new_string": {"type": "string"},
                    "replace_all": {"type": "boolean", "default": False},
                },
                ["path", "old_string", "new_string"],
            ),
            _edit,
        ),
        "glob": (
            "List workspace files matching a glob pattern such as `**/*.py`.",
            _schema({"pattern": {"type": "string", "minLength": 1}}, ["pattern"]),
            _glob,
        ),
        "grep": (
            "Search workspace files for a regular expression; answers path:line: text.",
            _schema(
                {
                    "pattern": {"type": "string", "minLength": 1},
                    "path": {"type": "string", "description": "File or directory (default: all)"},
                    "glob": {"type": "string", "description": "Only files matching, e.g. *.py"},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": MAX_GREP},
                },
                ["pattern"],
            ),
            _grep,
        ),
    }
    return [
        _tool(area, name, *specs[name], timeout=timeout) for name in FILE_TOOLS if name in names
    ]
