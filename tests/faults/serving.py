"""A real `tbd-agents serve` on its own embedded PostgreSQL, for the fault tests.

`Serving` runs the CLI in a subprocess with a private DATA_DIR (open access on loopback, the
hashing embedder, fast supervision checks), waits for it to be ready, and can send it signals or
break its database. the `serve` fixture cleans up whatever a test leaves behind, also when it
fails: the serve process is killed, the embedded server of its data directory is stopped and
leftover postgres processes working in it are ended.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tbd_agents.storage.postgres import embedded_process as process
from tests.support import pg

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from tbd_agents.cli import app; app()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_dir(prefix: str = "tbd-fault-serve-") -> Path:
    """A private directory the embedded server's user can traverse (see `pg.private_dir`)."""
    path = pg.private_dir(prefix)
    path.chmod(0o755)
    return path


class Serving:
    """One `tbd-agents serve` process on the embedded PostgreSQL in `data_dir / "pgdata"`."""

    def __init__(self, data_dir: Path, *, log_dir: Path | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "pgdata"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (log_dir or data_dir) / f"serve-{self.port}.log"
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        self.env = {
            **keep,
            "DATA_DIR": str(data_dir),
            "EMBEDDED_PG_SHARED_BUFFERS": "128MB",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "ALLOW_UNAUTHENTICATED": "true",
            "EMBEDDING_PROVIDER": "hashing",
            "MEMORY_EXPIRY_SWEEP_SECONDS": "0",
            "EMBEDDED_PG_WATCH_INTERVAL": "0.2",
            "EMBEDDED_PG_RESTART_MAX_BACKOFF": "2",
            "LOG_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = True, timeout: float = 180.0) -> Serving:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*CLI, "serve"], env=self.env, cwd=self.data_dir, stdout=out, stderr=out
            )
        if ready:
            self.wait_ready(timeout)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=5).status_code == 200:
                    return
            assert self.proc is not None
            assert self.proc.poll() is None, f"serve exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"serve not ready:\n{self.output()}"
            time.sleep(0.2)

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 90.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve did not exit:\n{self.output()}") from None

    def postmaster(self) -> process.Postmaster:
        return process.postmaster(self.pgdata)

    def kill_postmaster(self) -> int:
        state = self.postmaster()
        assert state.pid is not None and state.alive, "no embedded PostgreSQL is running"
        os.kill(state.pid, signal.SIGKILL)
        return state.pid

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return process.pg_ctl(self.pgdata, *args, timeout=60)

    def postgres_processes(self) -> list[psutil.Process]:
        """Every live postgres process of this data directory (postmaster and backends)."""
        found = process.leftover_processes(self.pgdata)
        state = self.postmaster()
        if state.pid is not None and state.alive and state.pid not in [p.pid for p in found]:
            found.append(psutil.Process(state.pid))
        return found

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=30, **kwargs)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self.pgdata.exists():
            with contextlib.suppress(Exception):
                self.pg_ctl("-w", "-m", "immediate", "stop")
            for proc in process.leftover_processes(self.pgdata):
                with contextlib.suppress(psutil.Error):
                    proc.kill()


@pytest.fixture(name="serve")
def serve_fixture() -> Iterator[Callable[..., Serving]]:
    """`serve(data_dir=None, *, start=True, **env)`: a `Serving` (started and ready unless
    `start=False`); all of them cleaned up after the test. Import `serve_fixture` to use it."""
    made: list[Serving] = []
    dirs: list[Path] = []

    def make(
        data_dir: Path | None = None,
        *,
        start: bool = True,
        log_dir: Path | None = None,
        **env: str,
    ) -> Serving:
        if data_dir is None:
            data_dir = base_dir()
            dirs.append(data_dir)
        server = Serving(data_dir, log_dir=log_dir, **env)
        made.append(server)
        return server.start() if start else server

    yield make
    for server in reversed(made):
        server.cleanup()
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
