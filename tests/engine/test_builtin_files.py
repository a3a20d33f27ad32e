"""The workspace built-ins on their own: file tools confined to the workspace, bash in the
sandbox, web_fetch through the outbound policy, web_search against local fake backends."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tbd_agents.engine.sandbox import Sandbox
from tbd_agents.engine.tools.base import Tool, ToolContext
from tbd_agents.engine.tools.builtins import builtin_tools
from tbd_agents.engine.tools.files import Area, file_tools
from tbd_agents.engine.tools.shell import ShellLimits, run_shell
from tbd_agents.engine.tools.web import html_to_text
from tbd_agents.engine.tools.workspace_tools import WorkspaceTools
from tbd_agents.engine.workspace import Workspace, WorkspaceConfig
from tbd_agents.security.outbound import HostPolicy, OutboundPolicy

CTX = ToolContext()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "README.md").write_text("line one\nline two\nline three\n")
    (root / "src" / "app.py").write_text("def main():\n    return 41\n")
    (tmp_path / "outside.txt").write_text("host secret\n")
    os.symlink(tmp_path / "outside.txt", root / "escape.txt")
    os.symlink(tmp_path, root / "escape_dir")
    os.symlink("README.md", root / "inner_link.md")
    return root


def tools(root: Path) -> dict[str, Tool]:
    return {t.spec.name: t for t in file_tools(root, {"read", "write", "edit", "glob", "grep"}, 10)}


async def call(tool: Tool, **args: Any) -> tuple[str, bool]:
    res = await tool.call(args, CTX)
    return res.content, res.is_error


async def test_file_tools_work_inside_the_workspace(ws: Path) -> None:
    t = tools(ws)
    text, err = await call(t["read"], path="README.md", offset=2, limit=1)
    assert not err and "line two" in text and "line one" not in text and "offset=3" in text
    assert "line one" in (await call(t["read"], path="inner_link.md"))[0]  # a link inside: fine
    assert not (await call(t["write"], path="new/dir/f.txt", content="x"))[1]
    assert (ws / "new" / "dir" / "f.txt").read_text() == "x"
    text, err = await call(t["edit"], path="src/app.py", old_string="41", new_string="42")
    assert not err and (ws / "src" / "app.py").read_text().endswith("return 42\n")
    text, err = await call(t["edit"], path="README.md", old_string="line", new_string="L")
    assert err and "3 times" in text
    assert not (await call(t["edit"], path="README.md", old_string="line", new_string="L",
                           replace_all=True))[1]  # fmt: skip
    text, _ = await call(t["glob"], pattern="**/*.py")
    assert text.splitlines() == ["src/app.py"]
    text, _ = await call(t["grep"], pattern=r"return \d+", glob="*.py")
    assert text == "src/app.py:2:     return 42"
    (ws / "slow.txt").write_text("a" * 60 + "!\n")
    text, err = await call(t["grep"], pattern="(a|aa)+$", path="slow.txt")
    assert err and "too slow" in text  # the regex module's timeout, not a hung worker thread


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("read", {"path": "../outside.txt"}),
        ("read", {"path": "/etc/passwd"}),
        ("read", {"path": "escape.txt"}),
        ("read", {"path": "escape_dir/outside.txt"}),
        ("write", {"path": "escape.txt", "content": "pwned"}),
        ("write", {"path": "escape_dir/new.txt", "content": "pwned"}),
        ("write", {"path": "inner_link.md", "content": "via link"}),
        ("write", {"path": ".git/hooks/post-checkout", "content": "#!/bin/sh\nid\n"}),
        ("edit", {"path": ".git/config", "old_string": "[core]", "new_string": "[x]"}),
        ("grep", {"pattern": "secret", "path": "escape_dir"}),
        ("glob", {"pattern": "../*"}),
    ],
)
async def test_path_escapes_are_refused(ws: Path, tool: str, args: dict[str, Any]) -> None:
    text, err = await call(tools(ws)[tool], **args)
    assert err and text.startswith("Error:")
    assert (ws.parent / "outside.txt").read_text() == "host secret\n"
    assert not (ws.parent / "new.txt").exists() and not (ws / ".git" / "hooks").exists()
    assert "host secret" not in text


def test_files_are_opened_without_following_a_swapped_in_symlink(ws: Path) -> None:
    # what a bash call running at the same time could do between the check and the open
    area = Area(ws.resolve())
    with pytest.raises(OSError):
        area.open(ws.resolve() / "escape_dir" / "outside.txt", os.O_RDONLY)
    with pytest.raises(OSError):
        area.open(ws.resolve() / "escape.txt", os.O_WRONLY | os.O_TRUNC)
    assert (ws.parent / "outside.txt").read_text() == "host secret\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
async def test_created_files_belong_to_the_sandbox_user(ws: Path) -> None:
    write = file_tools(ws, {"write"}, 10, owner=(65534, 65534))[0]
    assert not (await call(write, path="d/e/f.txt", content="x"))[1]
    assert (ws / "d" / "e" / "f.txt").stat().st_uid == 65534
    assert (ws / "d").stat().st_uid == 65534


async def test_glob_and_grep_skip_what_links_outside(ws: Path) -> None:
    t = tools(ws)
    assert "outside" not in (await call(t["glob"], pattern="**/*"))[0]
    assert (await call(t["grep"], pattern="host secret"))[0] == "No matches."


# --- bash -----------------------------------------------------------------------------------
@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    yield sock.getsockname()[1]
    sock.close()


async def test_bash_is_confined_to_the_workspace(tmp_path: Path, ws: Path, listener: int) -> None:
    sandbox = Sandbox()
    if sandbox.confiner.drop:
        os.chown(ws, *sandbox.confiner.drop)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "key").write_text("KEYFILE")
    limits = ShellLimits(timeout_seconds=20)

    async def sh(cmd: str) -> str:
        return await run_shell(sandbox, ws, cmd, limits)

    out = await sh("pwd; cat README.md | wc -l; echo made > made.txt; ls")
    assert out.startswith("exit code 0") and "/workspace" in out and "made.txt" in out
    assert (ws / "made.txt").read_text() == "made\n"
    out = await sh(f"echo x > {tmp_path}/outside_w.txt; echo x > ../up.txt; touch .git/hook")
    assert not (tmp_path / "outside_w.txt").exists() and not (ws / ".git" / "hook").exists()
    assert "exit code 0" not in out
    out = await sh(f"cat {data_dir}/key; ls {data_dir}; cat /proc/{os.getpid()}/environ")
    assert "KEYFILE" not in out and "No such file" in out
    out = await sh(f"echo hi > /dev/tcp/127.0.0.1/{listener} && echo CONNECTED")
    assert "CONNECTED" not in out
    out = await sh("for i in 1 2 3; do (echo child $i) & done; wait")
    assert out.count("child") == 3  # bash may fork (a small process limit, not 0)
    out = await run_shell(sandbox, ws, "sleep 30", ShellLimits(timeout_seconds=1))
    assert out.startswith("Error:") and "did not finish within 1 s" in out


# --- registration, web ----------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append(self.path)
        status, headers, body = self.routes.get(self.path.split("?")[0], (404, {}, b"nope"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def web() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"routes": {}, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def offered(
    names: list[str],
    policy: OutboundPolicy,
    cfg: WorkspaceConfig,
    ws: Path | None = None,
    shell: bool = True,
) -> tuple[dict[str, Tool], list[tuple[str, str]]]:
    bundle = WorkspaceTools(Workspace(ws) if ws else None, Sandbox(), cfg, policy, shell)
    found, problems = builtin_tools(names, memory=None, knowledge=None, workspace=bundle)
    return {t.spec.name: t for t in found}, problems


async def test_web_fetch_follows_the_outbound_policy(web: tuple[str, type[_Handler]]) -> None:
    base, handler = web
    page = b"<html><head><title>T</title><style>x{}</style></head><body><script>evil()</script><p>Hello <b>world</b></p></body></html>"
    handler.routes["/page"] = (200, {"Content-Type": "text/html"}, page)
    port = base.rsplit(":", 1)[1]
    handler.routes["/hop"] = (302, {"Location": f"http://127.0.0.1:{port}/page"}, b"")
    cfg = WorkspaceConfig()
    default, _ = offered(["web_fetch"], OutboundPolicy(), cfg)
    text, err = await call(default["web_fetch"], url=f"{base}/page")
    assert err and "internal address" in text and "OUTBOUND_ALLOWED_HOSTS" in text
    assert handler.seen == []
    text, err = await call(default["web_fetch"], url="http://10.1.2.3/")
    assert err and "internal address" in text
    allowed, _ = offered(["web_fetch"], OutboundPolicy(HostPolicy.parse("127.0.0.1")), cfg)
    text, err = await call(allowed["web_fetch"], url=f"{base}/page")
    assert not err and "# T" in text and "Hello world" in text and "evil" not in text
    # a redirect to a host the policy refuses is checked again, and refused
    by_name, _ = offered(["web_fetch"], OutboundPolicy(HostPolicy.parse("localhost")), cfg)
    text, err = await call(by_name["web_fetch"], url=f"http://localhost:{port}/hop")
    assert err and "internal address" in text and handler.seen.count("/page") == 1


def test_html_to_text() -> None:
    assert html_to_text("<div>a<br>b</div><script>x</script>&amp;") == "a\nb\n&"


async def test_web_search_backends_and_the_not_configured_warning(
    web: tuple[str, type[_Handler]], ws: Path
) -> None:
    base, handler = web
    searx = {
        "results": [{"title": "Doc", "url": "https://d.example/1", "content": "snippet <b>1</b>"}]
    }
    brave = {"web": {"results": [{"title": "B", "url": "https://b.example", "description": "d"}]}}
    handler.routes["/search"] = (
        200,
        {"Content-Type": "application/json"},
        json.dumps(searx).encode(),
    )
    handler.routes["/brave"] = (
        200,
        {"Content-Type": "application/json"},
        json.dumps(brave).encode(),
    )
    found, problems = offered(["web_search"], OutboundPolicy(), WorkspaceConfig())
    assert found == {} and problems[0][0] == "web_search" and "WEB_SEARCH_URL" in problems[0][1]
    cfg = WorkspaceConfig(web_search_url=f"{base}/search")
    found, _ = offered(["web_search"], OutboundPolicy(), cfg)
    res = await found["web_search"].call({"query": "tbd agents"}, CTX)
    assert not res.is_error and res.data == [
        {"title": "Doc", "url": "https://d.example/1", "snippet": "snippet 1"}
    ]
    assert "q=tbd+agents" in handler.seen[-1] and "format=json" in handler.seen[-1]
    cfg = WorkspaceConfig(web_search_backend="brave", web_search_url=f"{base}/brave",
                          web_search_api_key="brave-key")  # fmt: skip
    found, _ = offered(["web_search"], OutboundPolicy(), cfg)
    res = await found["web_search"].call({"query": "x"}, CTX)
    assert res.data == [{"title": "B", "url": "https://b.example", "snippet": "d"}]
    # workspace tools without a workspace are not offered; unknown names list the new ones
    found, problems = offered(["read", "bash", "nonsense"], OutboundPolicy(), WorkspaceConfig())
    assert found == {} and [p[0] for p in problems] == ["read", "bash", "nonsense"]
    assert "web_fetch" in problems[2][1] and "bash" in problems[2][1]
    found, _ = offered(["read", "bash", "grep"], OutboundPolicy(), WorkspaceConfig(), ws)
    assert set(found) == {"read", "bash", "grep"}
    # bash passes the custom tools' gate (a user's agent without ALLOW_USER_CUSTOM_TOOLS)
    found, problems = offered(["read", "bash"], OutboundPolicy(), WorkspaceConfig(), ws, False)
    assert set(found) == {"read"} and "ALLOW_USER_CUSTOM_TOOLS" in problems[0][1]


async def test_bash_without_namespaces_does_what_custom_tools_do_there(ws: Path) -> None:
    # SANDBOX_ISOLATION=none: the documented weaker mode (clean environment, rlimits, uid switch)
    sandbox = Sandbox(isolation="none")
    if sandbox.confiner.drop:
        os.chown(ws, *sandbox.confiner.drop)
    os.environ["TBD_TEST_PARENT_SECRET"] = "parent-only"
    try:
        out = await run_shell(sandbox, ws, "pwd; id -u; env; echo w > w.txt", ShellLimits(5))
    finally:
        del os.environ["TBD_TEST_PARENT_SECRET"]
    assert out.startswith("exit code 0") and str(ws) in out and "parent-only" not in out
    assert (ws / "w.txt").exists()
    if sandbox.confiner.drop:
        assert f"\n{sandbox.confiner.drop[0]}\n" in out
