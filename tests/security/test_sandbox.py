"""C2 / M4: a custom tool cannot see the server's files, processes, sockets or network.

Real processes throughout: the attack tool (tests/security/_attacks.py) runs in the real
sandbox, once with the server as root (this machine) and once with the server side running as
`nobody` (the unprivileged-server case of the audit), against a fake DATA_DIR the server user can
read, the machine's Redis (6379) and PostgreSQL (5432), and a unix socket outside the view.
`SANDBOX_ISOLATION=none` (the old behaviour) runs the same attack to show it succeeds there.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tbd_agents.engine.sandbox import Ceilings, Sandbox, SandboxLimits
from tests.security._attacks import ATTACK_TOOL
from tests.support import pg

SRC = Path(__file__).resolve().parents[2] / "src"
NOBODY = 65534
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="namespaces are Linux-only")


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def server_files() -> Iterator[dict[str, str]]:
    """A fake DATA_DIR (key file, pgdata) and a listening unix socket, readable by `nobody` too,
    so only the confinement (not file permissions) can keep a tool out.

    It lies directly under the system temp dir: pytest keeps its own temp dirs in 0700 parents
    (one level deeper under xdist, and reset to 0700 whenever another pytest run starts), which
    `nobody` could not traverse."""
    root = pg.private_dir("tbd-srv-")
    os.chmod(root, 0o755)
    data = root / "tbd-agents"
    (data / "pgdata").mkdir(parents=True)
    key = data / "token-encryption.keys"
    key.write_text("1:SERVER-KEY-MATERIAL\n")
    sock_path = str(root / "pg.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(sock_path)
    listener.listen(8)
    for p in (data, data / "pgdata", key, Path(sock_path)):
        os.chown(p, NOBODY, NOBODY)
    os.chmod(sock_path, 0o777)
    yield {"data_dir": str(data), "key_file": str(key), "unix_socket": sock_path}
    listener.close()


def _assert_confined(result: dict[str, str]) -> None:
    for probe in ("key_file", "data_dir", "parent_environ", "redis", "postgres", "unix_socket"):
        assert result[probe].startswith("denied"), (probe, result[probe])
    assert "SERVER-KEY-MATERIAL" not in json.dumps(result)


async def test_root_server_tool_sees_nothing_of_the_server(
    server_files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert os.geteuid() == 0, "this test covers the root server; the next one the unprivileged"
    assert _port_open(6379) and _port_open(5432), "Redis and PostgreSQL must listen locally"
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", "1:parent-secret")
    args = {**server_files, "parent_pid": os.getpid()}
    res = await Sandbox("nobody").run(ATTACK_TOOL, "run", args)
    assert res.ok, res
    _assert_confined(res.result)
    assert res.result["uid"] == NOBODY
    # The same attack without the namespaces (the old sandbox) reaches all of it.
    old = await Sandbox("nobody", isolation="none").run(ATTACK_TOOL, "run", args)
    assert old.ok, old
    for probe in ("key_file", "data_dir", "redis", "postgres", "unix_socket"):
        assert old.result[probe].startswith("GOT"), (probe, old.result[probe])


UNPRIVILEGED_SERVER = """
import asyncio, json, os, socket, sys
sys.path[:0] = [{src!r}] + {site!r}
from tbd_agents.engine.sandbox import Sandbox
args = json.loads(sys.argv[1])
args["parent_pid"] = os.getpid()
direct = {{"key": open(args["key_file"]).read(), "redis": bool(socket.create_connection(("127.0.0.1", 6379)))}}
for isolation in ("auto", "none"):
    res = asyncio.run(Sandbox(None, isolation=isolation).run(sys.stdin.read() if isolation == "auto" else SRC_TOOL, "run", args))
    print(json.dumps({{"isolation": isolation, "uid": os.getuid(), "direct": direct, "ok": res.ok, "error": res.error, "result": res.result}}))
"""


def test_unprivileged_server_tool_sees_nothing_of_the_server(
    server_files: dict[str, str],
) -> None:
    """The server side (Sandbox.run, the launcher) runs as `nobody`, which can read the fake
    DATA_DIR and reach Redis itself: the audit's C2 set-up. Its tool must see none of it."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    script = (
        "SRC_TOOL = "
        + repr(ATTACK_TOOL)
        + "\n"
        + UNPRIVILEGED_SERVER.format(src=str(SRC), site=site)
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "TOKEN_ENCRYPTION_KEY": "1:unprivileged-server-secret",
        "HOME": "/",
    }
    proc = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", script, json.dumps(server_files)],
        input=ATTACK_TOOL, capture_output=True, text=True, timeout=120, env=env,
        user=NOBODY, group=NOBODY, extra_groups=[], cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    confined, old = (json.loads(line) for line in proc.stdout.splitlines()[-2:])
    assert confined["uid"] == NOBODY and confined["direct"]["redis"]
    assert "SERVER-KEY-MATERIAL" in confined["direct"]["key"]  # the server user can read it
    assert confined["ok"], confined
    _assert_confined(confined["result"])
    assert "unprivileged-server-secret" not in json.dumps(confined)
    # Without namespaces the same-user tool reads the key file and the server's environment.
    assert old["result"]["key_file"].startswith("GOT") and old["result"]["redis"].startswith("GOT")
    assert "unprivileged-server-secret" in old["result"]["parent_environ"]


async def test_owner_limits_above_the_ceiling_are_clamped_at_run_time() -> None:
    sandbox = Sandbox("nobody", ceilings=Ceilings(timeout_seconds=1, memory_mb=128))
    sleeper = "import time\ndef run():\n    time.sleep(30)\n"
    t0 = time.monotonic()
    res = await sandbox.run(sleeper, "run", {}, limits=SandboxLimits(timeout_seconds=3600))
    assert not res.ok and "timed out after 1 s" in (res.error or "")
    assert time.monotonic() - t0 < 5
    hog = "def run():\n    return len(bytearray(512 * 1024 * 1024))\n"
    res = await sandbox.run(hog, "run", {}, limits=SandboxLimits(memory_mb=65536))
    assert not res.ok and "memory" in (res.error or "").lower()
    # under the ceiling the same allocation works: the clamp, not the tool, made it fail
    roomy = Sandbox("nobody", ceilings=Ceilings(timeout_seconds=10, memory_mb=2048))
    ok = await roomy.run(hog, "run", {}, limits=SandboxLimits(memory_mb=1024))
    assert ok.ok and ok.result == 512 * 1024 * 1024


FETCH_TOOL = """
import urllib.request
def run(url):
    try:
        return "GOT " + urllib.request.urlopen(url, timeout=5).read().decode()
    except Exception as exc:
        return "denied " + type(exc).__name__ + " " + str(exc)[:300]
"""


@pytest.fixture
def local_http() -> Iterator[int]:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


async def test_allowed_hosts_reach_an_internal_server_only_with_the_operator_allow_list(
    local_http: int,
) -> None:
    url = f"http://127.0.0.1:{local_http}/"
    listed = [f"127.0.0.1:{local_http}"]
    # no allowed_hosts: no network at all
    res = await Sandbox("nobody").run(FETCH_TOOL, "run", {"url": url})
    assert res.ok and res.result.startswith("denied"), res.result
    # listed by the owner, but an internal address the operator did not allow
    res = await Sandbox("nobody").run(FETCH_TOOL, "run", {"url": url}, allowed_hosts=listed)
    assert res.ok and res.result.startswith("denied") and "403" in res.result, res.result
    # the operator allows loopback: the listed host is reachable, nothing else is
    permitted = Sandbox("nobody", egress_internal_hosts="127.0.0.0/8,localhost")
    res = await permitted.run(FETCH_TOOL, "run", {"url": url}, allowed_hosts=listed)
    assert res.ok and res.result == "GOT hello from the host", res.result
    for other in (f"http://localhost:{local_http}/", f"http://127.0.0.2:{local_http}/",
                  "http://127.0.0.1:6379/"):  # fmt: skip
        res = await permitted.run(FETCH_TOOL, "run", {"url": other}, allowed_hosts=listed)
        assert res.ok and res.result.startswith("denied") and "403" in res.result, (other, res)


async def test_concurrent_calls_are_isolated_from_each_other() -> None:
    # Each call writes its own /tmp/mark, waits while the others write theirs, and reads it back.
    # (The listing may also hold the mount point of a Python installation that lives under the
    # host's /tmp, as in CI clones: only files named mark* are compared.)
    writer = (
        "import os, time\ndef run(tag):\n    open('/tmp/mark', 'w').write(tag)\n"
        "    time.sleep(0.3)\n"
        "    return [open('/tmp/mark').read(), [n for n in os.listdir('/tmp') if 'mark' in n]]\n"
    )
    results = await asyncio.gather(
        *(Sandbox("nobody").run(writer, "run", {"tag": str(i)}) for i in range(3))
    )
    assert all(r.ok and r.result == [str(i), ["mark"]] for i, r in enumerate(results)), results


async def test_a_python_installation_under_tmp_stays_visible(tmp_path: Path) -> None:
    """The view's /tmp is the call's own work directory; a read-only directory that lives under
    the host's /tmp (a checkout or virtualenv in a temporary directory, as CI clones have) is
    mounted on top of it, not hidden by it."""
    import shutil
    import tempfile

    from tbd_agents.engine.confine import Confiner, Isolation

    shared = Path(tempfile.mkdtemp(prefix="tbd-ro-", dir="/tmp"))
    try:
        (shared / "marker.txt").write_text("visible")
        shared.chmod(0o755)
        (shared / "marker.txt").chmod(0o644)
        confiner = Confiner(Isolation.AUTO, None)
        async with confiner.launch(
            ["/bin/cat", str(shared / "marker.txt")], {"PATH": "/usr/bin:/bin"},
            extra_ro=[str(shared)],
        ) as launch:  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                *launch.argv, env=launch.env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert out.decode() == "visible"
    finally:
        shutil.rmtree(shared, ignore_errors=True)
