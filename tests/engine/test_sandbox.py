"""Custom tools in the sandbox: real child processes, real limits."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tbd_agents.engine.sandbox import Sandbox, SandboxLimits, entry_point, validate_custom_tool
from tbd_agents.errors import InvalidData


@pytest.fixture
def secrets_in_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", "1:parent-secret-key")
    monkeypatch.setenv("POSTGRES_URI", "postgresql://u:pw@db/x")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent")


async def test_runs_a_tool_and_returns_its_value() -> None:
    src = "def run(a, b):\n    print('noise')\n    return {'sum': a + b}\n"
    res = await Sandbox().run(src, "run", {"a": 2, "b": 3})
    assert res.ok and res.result == {"sum": 5}
    assert res.stdout == "noise\n"


async def test_async_entry_point() -> None:
    src = "import asyncio\nasync def run(x):\n    await asyncio.sleep(0)\n    return x * 2\n"
    res = await Sandbox().run(src, "run", {"x": 21})
    assert res.ok and res.result == 42


async def test_environment_holds_only_declared_variables(secrets_in_parent: None) -> None:
    assert os.environ["TOKEN_ENCRYPTION_KEY"]  # the parent really has it
    src = "import os\ndef run():\n    return dict(os.environ)\n"
    res = await Sandbox().run(src, "run", {}, env={"WEATHER_KEY": "declared"})
    assert res.ok
    env = res.result
    assert env["WEATHER_KEY"] == "declared"
    for leaked in ("TOKEN_ENCRYPTION_KEY", "POSTGRES_URI", "OPENAI_API_KEY"):
        assert leaked not in env
    assert "parent-secret-key" not in str(env) and "pw@db" not in str(env)
    assert set(env) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONIOENCODING",
        "WEATHER_KEY",
        "LC_CTYPE",
    }


async def test_parent_process_environment_file_is_unreadable(secrets_in_parent: None) -> None:
    # /proc/<parent>/environ would leak the parent's variables to a same-user process.
    src = f"def run():\n    try:\n        return open('/proc/{os.getpid()}/environ','rb').read().decode(errors='replace')\n    except Exception as e:\n        return 'denied: ' + type(e).__name__\n"
    res = await Sandbox().run(src, "run", {})
    assert res.ok
    assert "parent-secret-key" not in str(res.result)


async def test_infinite_loop_is_killed_at_the_time_limit() -> None:
    src = "def run():\n    while True:\n        pass\n"
    t0 = time.monotonic()
    res = await Sandbox().run(src, "run", {}, limits=SandboxLimits(timeout_seconds=1))
    elapsed = time.monotonic() - t0
    assert not res.ok
    assert "timed out" in res.error or "signal" in res.error
    assert elapsed < 3


async def test_sleeping_tool_is_killed_by_wall_clock() -> None:
    src = "import time\ndef run():\n    time.sleep(30)\n"
    t0 = time.monotonic()
    res = await Sandbox().run(src, "run", {}, limits=SandboxLimits(timeout_seconds=0.5))
    assert not res.ok and "timed out after 0.5 s" in res.error
    assert time.monotonic() - t0 < 2


async def test_allocating_2gb_fails_at_the_memory_limit() -> None:
    src = "def run():\n    block = bytearray(2 * 1024 ** 3)\n    return len(block)\n"
    res = await Sandbox().run(src, "run", {}, limits=SandboxLimits(memory_mb=256))
    assert not res.ok
    assert "memory" in res.error.lower()


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("import os\ndef run():\n    os._exit(3)\n", "exited with code 3"),
        ("import faulthandler\ndef run():\n    faulthandler._sigsegv()\n", "SIGSEGV"),
        ("def run():\n    raise ValueError('bad input')\n", "ValueError: bad input"),
        (
            "import sys, os\ndef run():\n    os.write(1, b'garbage')\n    os._exit(0)\n",
            "without a valid result",
        ),
    ],
)
async def test_crashes_are_reported_and_the_engine_carries_on(src: str, expected: str) -> None:
    sandbox = Sandbox()
    res = await sandbox.run(src, "run", {})
    assert not res.ok and expected in res.error
    again = await sandbox.run("def run():\n    return 'alive'\n", "run", {})
    assert again.ok and again.result == "alive"


async def test_cannot_start_processes_or_write_big_files() -> None:
    src = (
        "import subprocess, os\n"
        "def run():\n"
        "    out = {}\n"
        "    try:\n"
        "        with open('big.bin', 'wb') as f:\n"
        "            f.write(b'x' * (40 * 1024 * 1024))\n"
        "        out['file'] = 'written'\n"
        "    except OSError as e:\n"
        "        out['file'] = type(e).__name__\n"
        "    return out\n"
    )
    res = await Sandbox().run(src, "run", {}, limits=SandboxLimits(file_size_mb=8))
    # RLIMIT_FSIZE turns the oversize write into SIGXFSZ (killed) or an OSError
    assert (not res.ok and "SIGXFSZ" in res.error) or res.result["file"] != "written"


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the privilege switch happens only when the engine runs as root"
)
async def test_runs_as_unprivileged_user_when_root(tmp_path) -> None:
    secret = tmp_path / "key"
    secret.write_text("root-only")
    secret.chmod(0o600)
    src = f"import os\ndef run():\n    try:\n        data = open({str(secret)!r}).read()\n    except OSError as e:\n        data = 'denied'\n    return [os.getuid(), data]\n"
    res = await Sandbox(user="nobody").run(src, "run", {})
    assert res.ok and res.result[0] != 0 and res.result[1] == "denied"


async def test_halt_cancels_and_kills_the_process() -> None:
    src = "import time\ndef run():\n    time.sleep(30)\n"
    task = asyncio.create_task(
        Sandbox().run(src, "run", {}, limits=SandboxLimits(timeout_seconds=60))
    )
    await asyncio.sleep(0.5)
    task.cancel()
    t0 = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 2


def test_validation_parses_without_executing() -> None:
    assert entry_point("import os\nos.system('touch /tmp/x')\ndef run():\n    pass\n", "t") == "run"
    assert entry_point("def weather(city):\n    return city\n", "weather") == "weather"
    with pytest.raises(InvalidData, match="syntax error at line 1"):
        entry_point("def run(:\n", "t")
    with pytest.raises(InvalidData, match="must define a top-level function"):
        entry_point("x = 1\n", "t")
    with pytest.raises(InvalidData, match="not a valid JSON Schema"):
        validate_custom_tool("t", "def run():\n    pass\n", {"type": 12})


async def test_a_stdio_mcp_server_runs_confined(tmp_path) -> None:
    """The MCP adapter (`McpServerConfig.confined` + `confiner`): the demo server runs through the launcher,
    answers over stdio, and cannot read a file its (root) parent can."""
    from pathlib import Path

    from tbd_agents.engine.tools.base import ToolContext
    from tbd_agents.engine.tools.mcp import open_servers
    from tests.engine.mcp_fixtures import SERVERS, stdio_config

    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    secret.chmod(0o644)
    source = (
        Path(SERVERS / "demo_mcp.py")
        .read_text()
        .replace(
            "    return a + b\n",
            f"    try:\n        open({str(secret)!r}).read()\n        return -1\n"
            "    except OSError:\n        return a + b\n",
        )
    )
    cfg = stdio_config(allowed=["add", "environment"], call_timeout=10, connect_timeout=30)
    cfg.args = ["-I", "-c", source, "stdio"]
    cfg.env = {"DECLARED": "1"}
    cfg.confined = True
    cfg.confiner = Sandbox("nobody").confiner
    conns, per_server, problems = await open_servers([cfg])
    try:
        assert problems == []
        tools = {t.spec.name: t for t in per_server[0][1]}
        res = await tools["add"].call({"a": 20, "b": 22}, ToolContext())
        assert not res.is_error and res.content == "42"  # -1 would mean it read the file
        env = set((await tools["environment"].call({}, ToolContext())).content.split(","))
        assert "DECLARED" in env and "TOKEN_ENCRYPTION_KEY" not in env
    finally:
        for conn in conns:
            await conn.aclose()
