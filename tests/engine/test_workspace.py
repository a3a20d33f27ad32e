"""Repository checkout for runs: real repositories served by git-http-backend behind Basic auth."""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tbd_agents.engine.workspace import (
    RepoSyncError,
    WorkspaceConfig,
    checkout_path,
    prune_workspaces,
    scratch_workspace,
    sync_repository,
)
from tbd_agents.security.outbound import HostPolicy, OutboundPolicy
from tests.engine.git_server import GitServer, Repo, all_files_text, git, make_repo

TOKEN = "ghp_TestToken0123456789abcdefSECRET"
LOCAL = OutboundPolicy(HostPolicy.parse("127.0.0.1"))  # the operator allowed the test server


def secret_forms() -> list[str]:
    return [TOKEN, base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()]


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = make_repo(tmp_path / "srv", "project")
    r.commit({"README.md": "hello\n", "src/app.py": "print('v1')\n"}, "first")
    return r


@pytest.fixture
def server(repo: Repo) -> Iterator[GitServer]:
    srv = GitServer(repo.bare.parent, TOKEN).start()
    yield srv
    srv.stop()


def config(tmp_path: Path, **kw: object) -> WorkspaceConfig:
    return WorkspaceConfig(root=tmp_path / "data" / "workspaces", allow_insecure_urls=True, **kw)  # type: ignore[arg-type]


async def test_private_clone_with_token_then_fetch_a_new_commit(
    tmp_path: Path, repo: Repo, server: GitServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = config(tmp_path)
    url = f"{server.url}/project.git"
    ws = await sync_repository(cfg, "wf1", url, None, TOKEN, LOCAL)
    assert ws.path == checkout_path(cfg.root, "wf1", url)
    assert (ws.path / "README.md").read_text() == "hello\n"
    # no branch given: the remote's default (trunk), not a hard-coded main
    assert ws.branch == "trunk"
    assert ws.commit == git("rev-parse", "HEAD", cwd=repo.work)
    assert any("authorization" in {k.lower() for k in h} for _, h in server.requests)

    # local changes, a stale lock of a killed git, and a new commit upstream
    (ws.path / "README.md").write_text("local edit\n")
    (ws.path / "junk.txt").write_text("left by the agent\n")
    (ws.path / ".git" / "index.lock").write_text("")
    second = repo.commit({"README.md": "hello v2\n"}, "second")
    again = await sync_repository(cfg, "wf1", url, None, TOKEN, LOCAL)
    assert again.path == ws.path and again.commit == second
    assert (ws.path / "README.md").read_text() == "hello v2\n"
    assert not (ws.path / "junk.txt").exists()

    # the token is nowhere: no file under the data directory (the checkout's .git included),
    # no log line, not the remote URL
    everything = all_files_text(tmp_path / "data")
    logs = caplog.text
    for secret in secret_forms():
        assert secret not in everything
        assert secret not in logs
    assert git("remote", "get-url", "origin", cwd=ws.path) == url


async def test_named_branch(tmp_path: Path, repo: Repo, server: GitServer) -> None:
    git("checkout", "-q", "-b", "feature", cwd=repo.work)
    head = repo.commit({"feature.txt": "f\n"}, "feature work")
    ws = await sync_repository(config(tmp_path), "wf", f"{server.url}/project.git", "feature",
                               TOKEN, LOCAL)  # fmt: skip
    assert ws.branch == "feature" and ws.commit == head
    assert (ws.path / "feature.txt").exists()


async def test_without_the_token_the_sync_fails_clearly(tmp_path: Path, server: GitServer) -> None:
    cfg = config(tmp_path)
    with pytest.raises(RepoSyncError) as err:
        await sync_repository(cfg, "wf", f"{server.url}/project.git", None, None, LOCAL)
    assert "git clone failed" in err.value.message
    assert not checkout_path(cfg.root, "wf", f"{server.url}/project.git").exists()
    with pytest.raises(RepoSyncError) as wrong:
        await sync_repository(
            cfg, "wf", f"{server.url}/project.git", None, "wrong-token-xyz", LOCAL
        )
    assert "wrong-token-xyz" not in wrong.value.message


async def test_url_rules(tmp_path: Path, server: GitServer) -> None:
    url = f"{server.url}/project.git"
    strict = WorkspaceConfig(root=tmp_path / "ws")
    with pytest.raises(RepoSyncError, match="https://"):
        await sync_repository(strict, "wf", url, None, None, LOCAL)
    with pytest.raises(RepoSyncError, match="REPO_ALLOW_INSECURE_URLS"):
        await sync_repository(strict, "wf", "file:///etc", None, None, LOCAL)
    # loopback follows OUTBOUND_ALLOWED_HOSTS (not listed: refused before git runs)
    with pytest.raises(RepoSyncError, match="OUTBOUND_ALLOWED_HOSTS"):
        await sync_repository(config(tmp_path), "wf", url, None, TOKEN, OutboundPolicy())
    with pytest.raises(RepoSyncError, match="must not carry credentials"):
        await sync_repository(config(tmp_path), "wf", url.replace("://", "://u:p@"), None,
                              None, LOCAL)  # fmt: skip


async def test_checkout_over_the_size_limit_is_deleted(
    tmp_path: Path, repo: Repo, server: GitServer
) -> None:
    repo.commit({"big.bin": os.urandom(3 * 1024 * 1024)}, "big")
    cfg = config(tmp_path, max_checkout_mb=1)
    url = f"{server.url}/project.git"
    with pytest.raises(RepoSyncError, match="REPO_MAX_CHECKOUT_MB=1"):
        await sync_repository(cfg, "wf", url, None, TOKEN, LOCAL)
    assert not checkout_path(cfg.root, "wf", url).exists()


def test_prune_removes_only_workspaces_unused_for_the_retention(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    old = scratch_workspace(root, "chat", "s1").path
    fresh = scratch_workspace(root, "workflow", "w2").path
    checkout = root / "0123456789abcdef"
    checkout.mkdir()
    past = time.time() - 10 * 3600
    os.utime(old, (past, past))
    os.utime(checkout, (past, past))
    assert prune_workspaces(root, 0) == []  # 0: keep
    removed = prune_workspaces(root, 5)
    assert sorted(removed) == sorted([old, checkout])
    assert fresh.exists() and not old.exists() and not checkout.exists()


async def test_file_url_when_allowed(tmp_path: Path, repo: Repo) -> None:
    ws = await sync_repository(config(tmp_path), "wf", f"file://{repo.bare}", None, None, LOCAL)
    assert (ws.path / "src" / "app.py").read_text() == "print('v1')\n"


async def test_a_stalled_server_hits_the_clone_timeout(tmp_path: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/project.git"
        cfg = config(tmp_path, clone_timeout_seconds=2)
        with pytest.raises(RepoSyncError, match="REPO_CLONE_TIMEOUT_SECONDS"):
            await sync_repository(cfg, "wf", url, None, TOKEN, LOCAL)
    assert not checkout_path(cfg.root, "wf", url).exists()
