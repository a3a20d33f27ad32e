"""A Redis server of the test's own (stopped and started again on the same port), and real
`tbd-agents worker` / `tbd-agents scheduler` processes pointed at it.

Never the machine's shared Redis on :6379: a fault test stops its server, and others use that one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.engine import URL

from tbd_agents.config import Settings
from tests.runtime.conftest import ROOT, TBD_AGENTS, WorkerProcess, runtime_settings, settings_env
from tests.support.pg import create_migrated_database, drop_database


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """`redis-server` on 127.0.0.1:<free port>, with the append-only file on (as in the Compose
    file), so that what was queued survives a stop and start."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        assert not self.running, "already running"
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--save", "",
             "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"redis-server did not start: {self.log()}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM, as `systemctl stop` / `docker stop` does; wait until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_db(pg18_server: str) -> Iterator[URL]:
    """A migrated database shared by the tests of one module (tests make their own rows)."""
    url = create_migrated_database(pg18_server, "faults")
    yield url
    drop_database(url)


def fault_settings(url: URL | None, redis_url: str | None, **overrides: Any) -> Settings:
    """Runtime test settings on `url` with short dispatch retries, Redis at `redis_url`."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "run_queue": f"test-{uuid.uuid4().hex[:10]}",
        "run_dispatch_retry_seconds": 0.5,
        "run_dispatch_deadline_seconds": 120.0,
    }
    values.update(overrides)
    return runtime_settings(url, **values)


def process_env(config: Settings) -> dict[str, str]:
    """`settings_env` plus the settings of the fault suite."""
    env = settings_env(config)
    for name in (
        "run_dispatch_retry_seconds",
        "run_dispatch_deadline_seconds",
        "broker_reconnect_max_retries",
    ):
        value = getattr(config, name, None)  # None: a checkout without the setting
        if value is not None:
            env[name.upper()] = str(value)
    return env


@dataclass
class Processes:
    """Real `tbd-agents` processes of one test, stopped (SIGTERM, then SIGKILL) at its end."""

    config: Settings
    tmp: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def spawn(self, name: str, *args: str) -> WorkerProcess:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                [*TBD_AGENTS, *args],
                env=process_env(self.config),
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        started = WorkerProcess(name, proc, log)
        self.started.append(started)
        return started

    def worker(self, name: str, *, pool: str = "threads", concurrency: int = 2) -> WorkerProcess:
        """`tbd-agents worker` (the CLI's default pool), ready to consume."""
        node = f"{name}-{uuid.uuid4().hex[:6]}@test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
        worker = self.spawn(
            name, "worker", "--pool", pool, "--concurrency", str(concurrency), "--name", node
        )
        worker.wait_ready()
        return worker

    def stop_all(self) -> None:
        for process in self.started:
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.proc.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float, what: str, *, every: float = 0.2
) -> Any:
    """`check()`'s first truthy value, polling; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(every)
