"""A hostile model provider for leak tests: it answers every request with an error whose body AND
response headers echo the credentials it received.

It speaks no protocol in particular (any POST or GET path, OpenAI or Anthropic SDK alike): each
request is recorded (path, headers, the decoded Basic credentials httpx sends for a URL password)
and answered with the next status of `statuses` (then `default_status`), with a JSON error body
in the shape both SDKs parse (`{"type": "error", "error": {"type", "code", "message"}}`) and the
same values in `X-Echo-*` response headers, which the HTTP client loggers print at DEBUG.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Request headers whose values are echoed (besides the decoded Basic credentials).
ECHOED = ("authorization", "x-api-key", "x-org")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    basic: str  # "user:password" from `Authorization: Basic …`, else ""

    def values(self) -> str:
        """Everything the provider could echo, on one line."""
        return " ".join([*(self.headers.get(h, "") for h in ECHOED), self.basic])


@dataclass
class EchoProvider:
    statuses: deque[int] = field(default_factory=deque)
    default_status: int = 401
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def received(self) -> str:
        return "\n".join(s.values() for s in self.seen)

    def answer(self, seen: Seen) -> tuple[int, bytes, dict[str, str]]:
        self.seen.append(seen)
        status = self.statuses.popleft() if self.statuses else self.default_status
        auth = seen.headers.get("authorization", "")
        key = seen.headers.get("x-api-key", "")
        org = seen.headers.get("x-org", "")
        message = f"Incorrect API key provided: {auth} {key}; org {org}; basic {seen.basic}"
        error = {"type": "invalid_request_error", "code": f"bad_key_{key or auth}"}
        body = json.dumps({"type": "error", "error": {**error, "message": message}}).encode()
        headers = {"X-Echo-Auth": auth, "X-Echo-Key": key, "X-Echo-Org": org}
        headers["X-Echo-Basic"] = seen.basic
        return status, body, {k: v for k, v in headers.items() if v}


def _basic(header: str) -> str:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


@contextmanager
def echo_provider() -> Iterator[EchoProvider]:
    state = EchoProvider()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen = Seen(self.command, self.path, headers, _basic(headers.get("authorization", "")))
            status, body, extra = state.answer(seen)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET = _reply

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
