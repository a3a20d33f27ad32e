"""`tbd-agents serve` brings its embedded PostgreSQL back by itself, and says when the disk is full.

Real faults on a real serve: the postmaster killed with SIGKILL, the server stopped cleanly behind
serve's back (`pg_ctl stop -m fast`), and the data directory on a small tmpfs filled to the last
byte. Every answer in between is a 2xx or a 503 (never a 500), `/health` (liveness) stays 200,
`/health/ready` says what is wrong, and requests succeed again without outside help — on the old
code the API answered 503 forever (nothing restarted the server), and never said "disk full".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.faults.serving import Serving, base_dir, serve_fixture  # noqa: F401

Serve = Callable[..., Serving]
#: Liveness bound of the tests (the target, measured by benchmarks/fault_db.py, is 10 s).
BACK_WITHIN = 45.0


def _write(server: Serving, name: str, **extra: Any) -> httpx.Response:
    return server.request("POST", "/api/agents", json={"name": name, **extra})


def _until_back(server: Serving, fault: str) -> dict[str, Any]:
    """Write until a write succeeds; every answer on the way must be a 503 (with the reason),
    liveness must stay 200. Returns what was seen."""
    seen: dict[str, Any] = {"codes": set(), "details": [], "ready": []}
    deadline = time.monotonic() + BACK_WITHIN
    while True:
        assert server.request("GET", "/health").status_code == 200
        ready = server.request("GET", "/health/ready")
        if ready.status_code == 503:
            seen["ready"].append(ready.json())
        answer = _write(server, f"after-{fault}")
        seen["codes"].add(answer.status_code)
        if answer.status_code == 201:
            return seen
        assert answer.status_code == 503, answer.text
        seen["details"].append(answer.json()["detail"])
        assert time.monotonic() < deadline, (
            f"not back {BACK_WITHIN:.0f} s after {fault}: {seen['details'][-1]}\n{server.output()}"
        )
        time.sleep(0.1)


def _ready(server: Serving) -> dict[str, Any]:
    body: dict[str, Any] = server.request("GET", "/health/ready").json()
    return body


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _embedded_check(ready: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in ready["checks"] if c["name"] == "embedded_postgres")


@pytest.mark.parametrize("fault", ["kill -9", "pg_ctl stop -m fast"])
def test_the_embedded_server_comes_back_by_itself(serve: Serve, fault: str) -> None:
    server = serve()
    before = [_write(server, f"before-{i}").json()["id"] for i in range(3)]
    old = server.postmaster().pid
    if fault == "kill -9":
        server.kill_postmaster()
    else:
        # -W: only send the signal. Waiting (-w) polls for the pid file to go, and the supervisor
        # may write a new one (its restart) between two polls: pg_ctl then says "server does not
        # shut down" although the old server did (seen once on a loaded machine).
        stopped = server.pg_ctl("-W", "-m", "fast", "stop")
        assert stopped.returncode == 0, stopped.stderr
        deadline = time.monotonic() + 120
        while not _gone(old):
            assert time.monotonic() < deadline, "the postmaster did not stop"
            time.sleep(0.1)
    seen = _until_back(server, fault)
    assert seen["codes"] <= {201, 503}
    assert server.postmaster().alive and server.postmaster().pid != old
    deadline = time.monotonic() + 10  # the supervisor logs it once pg_ctl has returned
    while "is back" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)
    assert "is gone" in server.output()
    if fault == "kill -9":  # seconds of crash recovery: readiness says why (a clean stop and
        # restart can be over before the next probe)
        checks = [_embedded_check(r) for r in seen["ready"]]
        down = [c for c in checks if not c["ok"]]
        assert down, f"the restart was never visible in /health/ready: {seen['ready']}"
        assert "not running" in down[0]["detail"]
    # Nothing acknowledged before the fault was lost (PostgreSQL's crash recovery).
    for record_id in before:
        assert server.request("GET", f"/api/agents/{record_id}").status_code == 200
    assert server.request("GET", "/health/ready").status_code == 200


# --- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 160 MB tmpfs of this test (root only): the data directory of a serve goes there."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    base = base_dir("tbd-fault-disk-")
    mount = base / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160m,mode=0755", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        for proc in psutil.process_iter():  # whatever still works in it (after `serve` cleanup)
            with contextlib.suppress(psutil.Error):
                if proc.cwd().startswith(str(mount)):
                    proc.kill()
        time.sleep(0.5)
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def _fill(path: Path) -> int:
    """Write zeros to `path` until the file system is full; return the bytes written."""
    written = 0
    chunk = b"\0" * (1024 * 1024)
    with path.open("wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(chunk)
            except OSError:
                break
        with contextlib.suppress(OSError):
            while True:  # the last partial block
                written += fh.write(b"\0" * 4096)
    return written


def test_a_full_disk_answers_503_disk_full_then_recovers(small_disk: Path, serve: Serve) -> None:
    server = serve(small_disk, log_dir=small_disk.parent)
    kept = _write(server, "before-full").json()["id"]
    filler = small_disk / "filler"
    assert _fill(filler) > 0
    # Writes big enough to need new pages: PostgreSQL cannot extend its files (53100), or its
    # WAL (a PANIC; the supervisor then restarts it once there is room).
    text = os.urandom(96 * 1024).hex()
    details = []
    for i in range(60):
        answer = _write(server, f"full-{i}", description=text)
        assert answer.status_code in (201, 503), answer.text
        if answer.status_code == 503:
            details.append(answer.json()["detail"])
            break
    assert details, "the full disk never refused a write"
    assert "disk full" in details[0] and "free space" in details[0].lower(), details[0]
    assert server.request("GET", "/health").status_code == 200
    deadline = time.monotonic() + 10  # the supervisor looks every 0.2 s here
    while (ready := server.request("GET", "/health/ready")).status_code == 200:
        assert time.monotonic() < deadline, "readiness never said the disk is full"
        time.sleep(0.1)
    assert ready.status_code == 503
    assert "disk full" in _embedded_check(ready.json())["detail"]

    # The server dies while the disk is full: it cannot start again (no room for its WAL or
    # its lock file), and every answer says why.
    server.kill_postmaster()
    deadline = time.monotonic() + BACK_WITHIN
    while "restarting it failed" not in (check := _embedded_check(_ready(server)))["detail"]:
        assert time.monotonic() < deadline, check
        time.sleep(0.2)
    assert "disk full" in check["detail"]
    answer = _write(server, "while-down")
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "disk_full"
    assert "disk full" in answer.json()["detail"]

    filler.unlink()
    seen = _until_back(server, "freeing space")
    assert seen["codes"] <= {201, 503}
    assert all("disk full" in d or "not running" in d for d in seen["details"]), seen["details"]
    assert "room again" in server.output()
    assert server.request("GET", f"/api/agents/{kept}").status_code == 200
    deadline = time.monotonic() + BACK_WITHIN
    while server.request("GET", "/health/ready").status_code != 200:
        assert time.monotonic() < deadline, server.request("GET", "/health/ready").text
        time.sleep(0.2)
