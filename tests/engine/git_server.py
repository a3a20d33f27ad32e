"""Real git repositories for the workspace tests, served over HTTP by git's own
`git-http-backend` (CGI) behind Basic auth that accepts only one token.

`GitServer` runs a threading HTTP server on 127.0.0.1 (ephemeral port) that checks the
Authorization header of every request and hands accepted ones to git-http-backend; it records
each request's path and headers. `make_repo` creates a bare repository with a working clone to
commit into (`commit` writes files and pushes)."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GIT_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class Repo:
    bare: Path
    work: Path

    def commit(self, files: dict[str, str | bytes], message: str = "change") -> str:
        for name, content in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


def make_repo(root: Path, name: str, default_branch: str = "trunk") -> Repo:
    """A bare repository `root/name.git` whose default branch is `default_branch` (not `main`,
    so a hard-coded default would show), and a clone of it to commit into."""
    bare = root / f"{name}.git"
    git("init", "-q", "--bare", "-b", default_branch, str(bare))
    work = root / f"{name}-work"
    git("init", "-q", "-b", default_branch, str(work))
    git("remote", "add", "origin", str(bare), cwd=work)
    return Repo(bare, work)


@dataclass
class GitServer:
    project_root: Path
    token: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> GitServer:
        outer = self
        backend = Path(git("--exec-path")) / "git-http-backend"
        expected = "Basic " + base64.b64encode(f"x-access-token:{self.token}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self, method: str) -> None:
                outer.requests.append((self.path, dict(self.headers)))
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                env = {
                    **GIT_ENV,
                    "GIT_PROJECT_ROOT": str(outer.project_root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": method,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": "x-access-token",
                    "REMOTE_ADDR": "127.0.0.1",
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                }
                out = subprocess.run(
                    [str(backend)], input=body, env=env, capture_output=True, check=False
                ).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                status, headers = 200, []
                for line in head.decode("latin-1").split("\r\n"):
                    key, _, value = line.partition(":")
                    if key.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif key:
                        headers.append((key, value.strip()))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def all_files_text(root: Path) -> str:
    """Every file under `root` (hidden ones and .git included), as text, for secret greps."""
    chunks: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                with open(path, "rb") as f:
                    chunks.append(f.read().decode("latin-1"))
    return "\n".join(chunks)
