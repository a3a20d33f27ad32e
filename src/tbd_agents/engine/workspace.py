"""The workspace of a run: a checkout of the workflow's repository, or a scratch directory.

A workflow with `repo_url` gets its repository synced before each run (`sync_repository`): a
shallow clone the first time, then fetch + hard reset + clean, so every run starts from the
remote's commit. The checkout lives in `WORKSPACE_DIR/<sha256(workflow_id:url)[:16]>` (default
DATA_DIR/workspaces). Runs without a repository get a scratch directory
(`WORKSPACE_DIR/scratch/<sha256(kind:id)[:16]>`, one per workflow or chat session) that the
file tools and bash share.

The private repository's token reaches git only through the git process's environment, as an
`http.extraHeader` (GIT_CONFIG_COUNT / GIT_CONFIG_KEY_n / GIT_CONFIG_VALUE_n): never argv, never
the remote URL, never a file. git runs with a clean environment (no host variables), no system
or user config (HOME is an empty temporary directory), no prompts, hooks disabled, only the
allowed protocols, no redirects and the host pinned to an address the outbound policy checked
(`http.curloptResolve`): the same rules as every other connection the hub makes for a record.
Whatever git prints is scrubbed of the token before it reaches an error message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tbd_agents.errors import InvalidData
from tbd_agents.observability.metrics import REPO_SYNC_DURATION, REPO_SYNCS
from tbd_agents.observability.spans import span
from tbd_agents.security.outbound import OutboundPolicy, OutboundRefused, check_host

log = logging.getLogger(__name__)

GIT_OUTPUT_CAP = 20_000
MB = 1024 * 1024


class RepoSyncError(InvalidData):
    """The repository could not be checked out (the message says why and what to change)."""

    code = "repo_sync_failed"


@dataclass(frozen=True, slots=True)
class WorkspaceConfig:
    """The WORKSPACE_* / REPO_* settings (see config.py for their descriptions)."""

    root: Path = Path(tempfile.gettempdir()) / "tbd-agents-workspaces"
    clone_timeout_seconds: float = 300.0
    max_checkout_mb: int = 1024
    retention_hours: float = 0.0  # 0: keep workspaces
    allow_insecure_urls: bool = False  # http:// and file:// repositories (tests, internal git)
    bash_timeout_seconds: float = 60.0
    bash_max_processes: int = 64
    web_fetch_max_bytes: int = 2 * MB
    web_search_url: str | None = None
    web_search_backend: str = "searxng"
    web_search_api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> WorkspaceConfig:
        key = getattr(settings, "web_search_api_key", None)
        root = getattr(settings, "workspace_dir", None) or Path(settings.data_dir) / "workspaces"
        return cls(
            root=Path(root),
            clone_timeout_seconds=float(settings.repo_clone_timeout_seconds),
            max_checkout_mb=int(settings.repo_max_checkout_mb),
            retention_hours=float(settings.workspace_retention_hours),
            allow_insecure_urls=bool(settings.repo_allow_insecure_urls),
            bash_timeout_seconds=float(settings.bash_timeout_seconds),
            bash_max_processes=int(settings.bash_max_processes),
            web_fetch_max_bytes=int(settings.web_fetch_max_bytes),
            web_search_url=settings.web_search_url or None,
            web_search_backend=str(settings.web_search_backend),
            web_search_api_key=key.get_secret_value() if key is not None else None,
        )


@dataclass(slots=True)
class Workspace:
    """The directory the file tools and bash of one run act in."""

    path: Path
    #: Set when the workspace is a repository checkout.
    repo_url: str | None = None
    branch: str | None = None
    commit: str | None = None

    def prompt_section(self, max_entries: int = 40) -> str:
        """The `## Repository` section of the system prompt (empty without a checkout)."""
        if self.repo_url is None:
            return ""
        try:
            names = sorted(
                p.name + ("/" if p.is_dir() else "")
                for p in self.path.iterdir()
                if p.name != ".git"
            )
        except OSError:
            names = []
        shown = ", ".join(names[:max_entries]) + (", …" if len(names) > max_entries else "")
        return (
            "## Repository\n"
            f"The repository {self.repo_url} (branch {self.branch}, commit {(self.commit or '')[:12]}) "
            "is checked out in your workspace. The read, write, edit, glob and grep tools take "
            "paths relative to the repository root; bash runs with the repository as its working "
            f"directory (/workspace). Top level: {shown or '(empty)'}."
        )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkout_path(root: Path, workflow_id: str, url: str) -> Path:
    """Where the checkout of `url` for `workflow_id` lives (the existing naming scheme)."""
    return root / _digest(f"{workflow_id}:{url}")


def scratch_workspace(root: Path, kind: str, key: str) -> Workspace:
    """The scratch directory of a workflow (`kind` "workflow") or chat session ("chat")."""
    path = root / "scratch" / _digest(f"{kind}:{key}")
    path.mkdir(parents=True, exist_ok=True, mode=0o755)
    os.utime(path)  # retention counts from the last use
    return Workspace(path)


def prune_workspaces(root: Path, retention_hours: float, *, now: float | None = None) -> list[Path]:
    """Delete checkouts and scratch directories not used for `retention_hours` (0: keep all).
    Returns what was removed. Meant for the scheduler or a worker to call periodically."""
    if retention_hours <= 0 or not root.is_dir():
        return []
    cutoff = (now if now is not None else time.time()) - retention_hours * 3600
    removed: list[Path] = []
    candidates = [p for p in root.iterdir() if p.name != "scratch"]
    scratch = root / "scratch"
    if scratch.is_dir():
        candidates += list(scratch.iterdir())
    for path in candidates:
        try:
            if path.is_dir() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path)
                removed.append(path)
        except OSError as exc:
            log.warning("cannot prune workspace %s: %s", path, exc)
    return removed


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def chown_tree(path: Path, uid: int, gid: int, skip: str = ".git") -> None:
    """Give the sandbox user the working tree (not `.git`, which bash sees read-only)."""
    os.lchown(path, uid, gid)
    for dirpath, dirs, files in os.walk(path):
        if dirpath == str(path) and skip in dirs:
            dirs.remove(skip)
        for name in dirs + files:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(dirpath, name), uid, gid)


# --- git ------------------------------------------------------------------------------------
def _auth_header(token: str) -> str:
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return f"Authorization: Basic {basic}"


def scrub(text: str, token: str | None) -> str:
    """`text` without the token in any form git could print it."""
    if not token:
        return text
    for secret in (token, _auth_header(token).split(" ", 2)[2]):
        text = text.replace(secret, "***")
    return text


async def _check_url(
    url: str, policy: OutboundPolicy, allow_insecure: bool
) -> tuple[list[str], str]:
    """Config entries pinning the checked host, and the protocols git may use."""
    parts = urlsplit(url)
    if parts.scheme == "file" and allow_insecure:
        return [], "file"
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not allow_insecure):
        raise RepoSyncError(
            f"repo_url must be an https:// URL, got {url!r} (http:// and file:// only when the "
            "operator sets REPO_ALLOW_INSECURE_URLS=true)"
        )
    if parts.username or parts.password:
        raise RepoSyncError(
            "repo_url must not carry credentials: store the token with POST /api/tokens and name "
            "it in repo_token_name"
        )
    if not parts.hostname:
        raise RepoSyncError(f"repo_url {url!r} has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await check_host(parts.hostname, port, policy, "repository")
    except OutboundRefused as exc:
        raise RepoSyncError(exc.message, details=exc.details) from None
    shown = [f"[{a}]" if isinstance(a, ipaddress.IPv6Address) else str(a) for a in addresses]
    return [f"{parts.hostname}:{port}:{','.join(shown)}"], parts.scheme


def git_env(home: str, protocol: str, token: str | None, pins: list[str]) -> dict[str, str]:
    """The whole environment of a git process (nothing inherited from the server's)."""
    config = [
        ("core.hooksPath", "/dev/null"),
        ("core.fsmonitor", "false"),
        ("safe.directory", "*"),
        ("http.followRedirects", "false"),
        ("protocol.allow", "never"),
        (f"protocol.{protocol}.allow", "always"),
        ("advice.detachedHead", "false"),
        *(("http.curloptResolve", pin) for pin in pins),
    ]
    if token:
        config.append(("http.extraHeader", _auth_header(token)))
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "XDG_CONFIG_HOME": home,
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_ALLOW_PROTOCOL": protocol,
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


@dataclass(slots=True)
class _Git:
    env: dict[str, str]
    token: str | None
    deadline: float

    async def __call__(self, *args: str, cwd: Path | None = None) -> str:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RepoSyncError("git took longer than REPO_CLONE_TIMEOUT_SECONDS")
        proc = await asyncio.create_subprocess_exec(
            "git", *args, cwd=str(cwd) if cwd else None, env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=left)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise RepoSyncError(
                f"git {args[0]} did not finish within REPO_CLONE_TIMEOUT_SECONDS"
            ) from None
        if proc.returncode != 0:
            detail = scrub(err.decode("utf-8", "replace")[-GIT_OUTPUT_CAP:], self.token).strip()
            last = detail.splitlines()[-3:] if detail else [f"exit code {proc.returncode}"]
            raise RepoSyncError(f"git {args[0]} failed: {' / '.join(last)}")
        return out.decode("utf-8", "replace").strip()


_LOCKS: dict[Path, asyncio.Lock] = {}


async def sync_repository(
    config: WorkspaceConfig,
    workflow_id: str,
    url: str,
    branch: str | None,
    token: str | None,
    policy: OutboundPolicy,
    *,
    owner: tuple[int, int] | None = None,
) -> Workspace:
    """Clone or update the checkout of `url` for `workflow_id`; RepoSyncError says why not.
    `owner`: the sandbox user (uid, gid) that gets the working tree (root servers). Counted
    (`repo_sync_total{status}`, `repo_sync_duration_seconds`) and traced (`repository_sync`)."""
    try:
        host = urlsplit(url.strip()).hostname  # never the URL: it may carry credentials
    except ValueError:
        host = None  # malformed: `_check_url` refuses it with the reason
    started = time.monotonic()
    with span("repository_sync", {"tbd.repo.host": host, "tbd.repo.branch": branch}) as current:
        try:
            workspace = await _sync(config, workflow_id, url, branch, token, policy, owner)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                REPO_SYNCS.labels("error").inc()
                REPO_SYNC_DURATION.observe(time.monotonic() - started)
            raise
        REPO_SYNCS.labels("success").inc()
        REPO_SYNC_DURATION.observe(time.monotonic() - started)
        current.set_attribute("tbd.repo.commit", workspace.commit or "")
        return workspace


async def reuse_checkout(config: WorkspaceConfig, workflow_id: str, url: str) -> Workspace | None:
    """The checkout of `url` for `workflow_id` as it is, without fetching or resetting it (a run
    resumed after an approval goes on with the changes it made before its pause); None when
    there is no usable checkout (pruned, deleted, or a clone that never finished)."""
    url = url.strip()
    path = checkout_path(config.root, workflow_id, url)
    async with _LOCKS.setdefault(path, asyncio.Lock()):
        if not await asyncio.to_thread((path / ".git").is_dir):
            return None
        home = tempfile.mkdtemp(prefix="tbd-git-home-")
        try:
            git = _Git(git_env(home, "file", None, []), None, time.monotonic() + 30.0)
            commit = await git("rev-parse", "HEAD", cwd=path)
            branch = await git("rev-parse", "--abbrev-ref", "HEAD", cwd=path)
        except RepoSyncError as exc:
            log.warning("the checkout in %s cannot be reused: %s", path, exc.message)
            return None
        finally:
            shutil.rmtree(home, ignore_errors=True)
        os.utime(path)
        return Workspace(path, repo_url=url, branch=branch, commit=commit)


async def _sync(
    config: WorkspaceConfig,
    workflow_id: str,
    url: str,
    branch: str | None,
    token: str | None,
    policy: OutboundPolicy,
    owner: tuple[int, int] | None,
) -> Workspace:
    url = url.strip()
    pins, protocol = await _check_url(url, policy, config.allow_insecure_urls)
    path = checkout_path(config.root, workflow_id, url)
    lock = _LOCKS.setdefault(path, asyncio.Lock())
    async with lock:
        home = tempfile.mkdtemp(prefix="tbd-git-home-")
        try:
            git = _Git(
                git_env(home, protocol, token, pins), token,
                time.monotonic() + config.clone_timeout_seconds,
            )  # fmt: skip
            await _clone_or_update(git, path, url, branch)
            size = await asyncio.to_thread(tree_size, path)
            if size > config.max_checkout_mb * MB:
                await asyncio.to_thread(shutil.rmtree, path, True)
                raise RepoSyncError(
                    f"the checkout is {size / MB:.0f} MB, above REPO_MAX_CHECKOUT_MB="
                    f"{config.max_checkout_mb}; it was deleted (raise the setting or use a "
                    "smaller repository)"
                )
            commit = await git("rev-parse", "HEAD", cwd=path)
            current = await git("rev-parse", "--abbrev-ref", "HEAD", cwd=path)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        if owner is not None:
            await asyncio.to_thread(chown_tree, path, *owner)
        os.utime(path)
        return Workspace(path, repo_url=url, branch=branch or current, commit=commit)


async def _clone_or_update(git: _Git, path: Path, url: str, branch: str | None) -> None:
    if (path / ".git").is_dir():
        for lock in (path / ".git" / "index.lock", path / ".git" / "shallow.lock"):
            lock.unlink(missing_ok=True)  # left by a git killed mid-way (a timeout, a crash)
        await git("remote", "set-url", "origin", url, cwd=path)
        await git("fetch", "--depth", "1", "--no-tags", "origin", branch or "HEAD", cwd=path)
        if branch:
            await git("checkout", "--force", "-B", branch, "FETCH_HEAD", cwd=path)
        else:
            await git("reset", "--hard", "FETCH_HEAD", cwd=path)
        await git("clean", "-ffdx", cwd=path)
        return
    if await asyncio.to_thread(path.exists):  # a failed earlier clone: start over
        await asyncio.to_thread(shutil.rmtree, path, True)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["clone", "--depth", "1", "--no-tags", "--single-branch"]
    if branch:
        args += ["--branch", branch]
    try:
        await git(*args, "--", url, str(path))
    except RepoSyncError:
        await asyncio.to_thread(shutil.rmtree, path, True)
        raise
