"""Confinement of a child process in Linux namespaces: what it sees, and how it is started.

`Confiner.launch(argv, ...)` turns any command into a confined one (the custom tool runner, a
stdio MCP server): an async context manager yielding the launcher's argv, which runs the command
in new user, mount, network, PID, IPC and UTS namespaces with a filesystem view that is an
allow-list, Landlock on top, and no network unless the call lists allowed hosts (then only
through the egress proxy of engine/egress.py). The launcher itself is confine_launcher.py.

The view (everything read-only except /tmp and the /dev nodes):
- /usr, /bin, /sbin, /lib* (the system's programs and libraries);
- from /etc only what programs need to start and talk TLS (ld.so cache, SSL certificates,
  time zone, nsswitch, mime types…), plus a generated passwd/group/hosts: never the host's
  /etc wholesale, because operators keep secrets there (/etc/tbd-agents/env, systemd drop-ins);
- the Python installation (sys.base_prefix) and the server's virtualenv (sys.prefix) so tools
  keep the packages they had; nothing else of the checkout, the data directory or any home;
- /dev/null, zero, full, random, urandom; a fresh /proc of the tool's own PID namespace;
- /tmp: the call's fresh work directory (HOME, TMPDIR and working directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from tbd_agents.engine.egress import EgressProxy

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("confine_launcher.py")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ALLOWED = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl", "ca-certificates", "ca-certificates.conf",
    "pki", "crypto-policies", "localtime", "timezone", "nsswitch.conf", "mime.types", "protocols",
    "services", "alternatives", "os-release", "gai.conf",
)  # fmt: skip
DEVICES = ("null", "zero", "full", "random", "urandom")
RELAY_PORT = 3128
VIEW_PATH = "/usr/local/bin:/usr/bin:/bin"
VIEW_TMP = "/tmp"  # noqa: S108 - inside the view: the call's own fresh work directory
#: Exit code of the launcher when the confinement itself failed (the message is on stderr).
CONFINE_FAILED = 125


class Isolation(StrEnum):
    AUTO = "auto"  # namespaces; refuse to run tools when the kernel cannot provide them
    NAMESPACES = "namespaces"  # the same, stated as a requirement
    NONE = "none"  # rlimits and the uid switch only (the operator's explicit opt-out)


@dataclass(frozen=True, slots=True)
class Launch:
    """A prepared confined command: run `argv` (with `env`) and keep the context open meanwhile."""

    argv: list[str]
    env: dict[str, str]
    workdir: Path


def _passwd(uid: int, gid: int) -> dict[str, str]:
    return {
        "/etc/passwd": f"root:x:0:0::/:/bin/false\ntool:x:{uid}:{gid}::/tmp:/bin/false\n"
        "nobody:x:65534:65534::/nonexistent:/bin/false\n",
        "/etc/group": f"root:x:0:\ntool:x:{gid}:\nnogroup:x:65534:\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
    }


def _entry(src: str, dst: str | None = None, **flags: bool) -> dict[str, Any]:
    if os.path.islink(src) and dst is None:  # e.g. /bin -> usr/bin on merged-/usr systems
        return {"dst": src, "link": os.readlink(src)}
    return {"src": src, "dst": dst or src, **flags}


def _under(path: str, parents: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


def view(extra_ro: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The read-only part of the view (system dirs, /etc allow-list, Python, `extra_ro`)."""
    binds = [_entry(d) for d in SYSTEM_DIRS if os.path.lexists(d)]
    binds += [_entry(f"/etc/{n}") for n in ETC_ALLOWED if os.path.lexists(f"/etc/{n}")]
    shown = list(SYSTEM_DIRS)
    for path in (sys.base_prefix, sys.prefix, *extra_ro):
        real = os.path.realpath(path)
        if os.path.exists(real) and not _under(real, shown):
            binds.append(_entry(real, real))
            shown.append(real)
    binds += [
        _entry(f"/dev/{d}", rw=True, dev=True) for d in DEVICES if os.path.exists(f"/dev/{d}")
    ]
    return binds


class Confiner:
    """Builds confined launches for one isolation mode and sandbox user (see module docstring)."""

    def __init__(
        self,
        mode: Isolation,
        drop: tuple[int, int] | None,
        *,
        internal_hosts: str = "",
        python: str = sys.executable,
    ) -> None:
        self.mode = mode
        self.drop = drop
        self.internal_hosts = internal_hosts
        self.python = python
        self._problem: str | bool | None = False  # False: not probed yet

    @property
    def enabled(self) -> bool:
        return self.mode is not Isolation.NONE

    def problem(self) -> str | None:
        """Why namespaces cannot be used here (None: they can). Probed once, by a real launch."""
        if self._problem is False:
            self._problem = self._probe()
            if self._problem:
                log.warning("custom tool sandbox unavailable: %s", self._problem)
        return self._problem if isinstance(self._problem, str) else None

    def _probe(self) -> str | None:
        if sys.platform != "linux":
            return f"process namespaces need Linux (this is {sys.platform})"
        true = shutil.which("true", path="/usr/bin:/bin")
        if true is None:
            return "/usr/bin/true not found (needed to probe namespace support)"
        base = Path(tempfile.mkdtemp(prefix="tbd-probe-"))
        try:
            spec = self._spec(base, [true], {}, None, None, ())
            proc = subprocess.run(  # noqa: S603 - our own launcher
                [self.python, "-I", str(LAUNCHER), str(spec)],
                capture_output=True, timeout=20, check=False, env={},
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the sandbox launcher did not run: {exc}"
        finally:
            shutil.rmtree(base, ignore_errors=True)
        if proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            return detail[-1] if detail else f"the sandbox launcher exited with {proc.returncode}"
        return None

    def _spec(
        self,
        base: Path,
        argv: list[str],
        env: dict[str, str],
        limits: dict[str, int] | None,
        egress_dir: Path | None,
        extra_ro: Sequence[str],
        extra_binds: Sequence[dict[str, Any]] = (),
        cwd: str = VIEW_TMP,
        writable: Sequence[str] = (),
    ) -> Path:
        work = base / "work"
        work.mkdir(mode=0o700, exist_ok=True)
        if self.drop:
            os.chown(work, *self.drop)
        uid, gid = self.drop or (os.getuid(), os.getgid())
        binds = view(extra_ro) + list(extra_binds)
        binds.append(_entry(str(work), VIEW_TMP, rw=True))
        spec: dict[str, Any] = {
            "argv": argv, "env": env, "cwd": cwd, "limits": limits,
            "drop": list(self.drop) if self.drop else None, "files": _passwd(uid, gid),
            "writable": list(writable),  # besides /tmp: paths Landlock lets the program write
        }  # fmt: skip
        if egress_dir is not None:
            binds.append(_entry(str(egress_dir), "/run/tbd/egress", rw=True))
            spec["relay"] = {"port": RELAY_PORT, "socket": "/run/tbd/egress/proxy.sock"}
        # Parents before children: a Python installation under /tmp (a checkout or a venv in a
        # temporary directory) is mounted on top of the view's /tmp, not hidden by it.
        spec["binds"] = sorted(binds, key=lambda e: str(e["dst"]).rstrip("/").count("/"))
        path = base / "spec.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        return path

    def prepare(
        self,
        base: Path,
        argv: list[str],
        env: dict[str, str],
        *,
        limits: dict[str, int] | None = None,
        extra_ro: Sequence[str] = (),
        extra_binds: Sequence[dict[str, Any]] = (),
        egress_dir: Path | None = None,
        cwd: str = VIEW_TMP,
        writable: Sequence[str] = (),
    ) -> Launch:
        """Write the spec for `argv` under `base` (a fresh 0700 directory) and return the
        launcher command. Proxy-less: the caller starts the egress proxy if it wants one."""
        env = dict(env)
        if egress_dir is not None:
            proxy = f"http://127.0.0.1:{RELAY_PORT}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
                env[name] = env[name.lower()] = proxy
        spec = self._spec(
            base, argv, env, limits, egress_dir, extra_ro, extra_binds, cwd=cwd, writable=writable
        )
        return Launch([self.python, "-I", str(LAUNCHER), str(spec)], {}, base / "work")

    def stdio_command(
        self, command: str, args: Sequence[str], env: dict[str, str]
    ) -> tuple[str, list[str]]:
        """(command, args) running a long-lived stdio program (an MCP server) confined, with
        no network. The command is looked up in the view's PATH; an absolute command outside
        the system dirs shows its installation prefix read-only. Raises RuntimeError if the
        sandbox is unavailable; the small work directory stays behind until the OS cleans /tmp."""
        problem = self.problem() if self.enabled else "SANDBOX_ISOLATION=none"
        if problem:
            raise RuntimeError(f"cannot run {command!r} confined: {problem}")
        found = command if os.path.isabs(command) else shutil.which(command, path=VIEW_PATH)
        if found is None:
            raise RuntimeError(
                f"{command!r} not found in {VIEW_PATH} (confined servers see only those)"
            )
        real = os.path.realpath(found)
        extra = [] if _under(real, SYSTEM_DIRS) else [os.path.dirname(os.path.dirname(real))]
        env = {"PATH": VIEW_PATH, "HOME": VIEW_TMP, "TMPDIR": VIEW_TMP, "LANG": "C.UTF-8", **env}
        launch = self.prepare(
            Path(tempfile.mkdtemp(prefix="tbd-mcp-")), [found, *args], env, extra_ro=extra
        )
        return launch.argv[0], launch.argv[1:]

    @contextlib.asynccontextmanager
    async def launch(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        limits: dict[str, int] | None = None,
        allowed_hosts: Sequence[str] = (),
        extra_ro: Sequence[str] = (),
        extra_binds: Sequence[dict[str, Any]] = (),
        cwd: str = VIEW_TMP,
        writable: Sequence[str] = (),
    ) -> AsyncIterator[Launch]:
        """A confined `argv` for the duration of the context (with its egress proxy, if the
        command may reach `allowed_hosts`); the work directory is removed afterwards."""
        base = Path(tempfile.mkdtemp(prefix="tbd-tool-"))
        proxy: EgressProxy | None = None
        try:
            egress_dir = None
            if allowed_hosts:
                egress_dir = base / "egress"
                egress_dir.mkdir(mode=0o755)
                proxy = await EgressProxy.start(
                    egress_dir / "proxy.sock", allowed_hosts, self.internal_hosts, owner=self.drop
                )
            yield self.prepare(
                base, argv, env, limits=limits, extra_ro=extra_ro, extra_binds=extra_binds,
                egress_dir=egress_dir, cwd=cwd, writable=writable,
            )  # fmt: skip
        finally:
            if proxy is not None:
                await proxy.close()
            await asyncio.to_thread(shutil.rmtree, base, True)
