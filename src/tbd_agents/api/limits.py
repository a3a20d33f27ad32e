"""Request body limits, enforced while the body arrives (an ASGI middleware).

Every request body is counted as its chunks come in, whatever Content-Length says (or when there
is none: chunked transfer), and refused with 413 as soon as it passes the limit of its route:
MAX_UPLOAD_MB on the upload routes, MAX_REQUEST_BODY_MB everywhere else. A declared
Content-Length over the limit is refused before anything is read. JSON bodies (and bodies without
a content type, which FastAPI parses as JSON) are read whole here (they would be anyway) and their
nesting is checked against MAX_JSON_DEPTH before any parser sees them: deeper gets 422. Errors use
the API's error shape (api/errors.py) and name the setting to change.

The 413 is sent at once; then the rest of the body is read and thrown away (never kept) for at
most `LINGER_SECONDS` before the response is closed, like a web server's lingering close: closing
a socket that still has unread data makes the kernel send a reset, and a client that reads only
after it has sent everything would never see the 413.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tbd_agents.api.errors import error_body
from tbd_agents.config import Settings
from tbd_agents.knowledge.extract import json_depth_error, json_too_deep
from tbd_agents.services.bundle import ROUTED

MB = 1024 * 1024

#: (method, path) of the routes that take files or whole bundles; they get MAX_UPLOAD_MB.
UPLOAD_ROUTES = frozenset(
    {
        ("POST", "/api/knowledge-items/upload"),
        ("POST", "/api/import"),
        *(("POST", f"/api/{kind.path}/import") for kind in ROUTED),
    }
)

#: Bodies larger than this are depth-checked in a worker thread (the check is C code in passes).
_CHECK_INLINE = 256 * 1024
#: How long the rest of a refused body is drained (and discarded) before the connection closes.
LINGER_SECONDS = 10.0


class BodyTooLarge(Exception):
    """Raised into the app by `receive` once the body passes the limit."""


class RequestLimits:
    """The middleware: wraps `receive` to count (and, for JSON, buffer) the body."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.body_limit = int(settings.max_request_body_mb * MB)
        self.upload_limit = int(settings.max_upload_mb * MB)
        self.max_depth = settings.max_json_depth

    def limit_for(self, method: str, path: str) -> tuple[int, str]:
        if (method, path.rstrip("/")) in UPLOAD_ROUTES:
            return self.upload_limit, "MAX_UPLOAD_MB"
        return self.body_limit, "MAX_REQUEST_BODY_MB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["method"], scope["path"])
        headers = _headers(scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            # A client waiting for `100 Continue` has not sent the body: nothing to drain.
            waiting = headers.get("expect", "").lower() == "100-continue"
            await _refuse(limit, setting, scope, receive, send, more=not waiting)
            return
        if _is_json(headers.get("content-type")):
            await self._buffered(scope, receive, send, limit, setting)
        else:
            await self._streamed(scope, receive, send, limit, setting)

    async def _buffered(
        self, scope: Scope, receive: Receive, send: Send, limit: int, setting: str
    ) -> None:
        """Read the whole (JSON) body, check size and depth, then replay it to the app."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                del chunks
                await _refuse(limit, setting, scope, receive, send, more=message.get("more_body"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        del chunks
        if body and await _too_deep(body, self.max_depth):
            error = json_depth_error(self.max_depth, "the request body")
            response = JSONResponse(
                error_body(error.code, error.message, error.details), status_code=422
            )
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices

        await self.app(scope, replay, send)

    async def _streamed(
        self, scope: Scope, receive: Receive, send: Send, limit: int, setting: str
    ) -> None:
        """Pass the body through chunk by chunk, counting; past the limit the app's `receive`
        raises and whatever the app then answers is replaced by the 413."""
        size = 0
        tripped = False
        started = False
        more: bool | None = True

        async def counted() -> Message:
            nonlocal size, tripped, more
            if tripped:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                more = message.get("more_body", False)
                if size > limit:
                    tripped = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if tripped:
                return  # the app's answer to a refused body (400/500) is dropped
            started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not tripped:
                raise
        if tripped and not started:
            await _refuse(limit, setting, scope, receive, send, more=more)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse the body as JSON: no content type, or application/*json."""
    if not content_type:
        return True
    base = content_type.split(";", 1)[0].strip().lower()
    return base == "application/json" or (
        base.startswith("application/") and base.endswith("+json")
    )


async def _too_deep(body: bytes, limit: int) -> bool:
    if len(body) <= _CHECK_INLINE:
        return json_too_deep(body, limit)
    return await anyio.to_thread.run_sync(json_too_deep, body, limit)


async def _refuse(
    limit: int, setting: str, scope: Scope, receive: Receive, send: Send, more: bool | None = True
) -> None:
    """Answer 413, then drain what is left of the body (see LINGER_SECONDS)."""
    message = (
        f"the request body is larger than {limit / MB:g} MB ({setting}); "
        f"send less, or raise {setting}"
    )
    details: dict[str, Any] = {"limit_bytes": limit, "setting": setting}
    response = JSONResponse(
        error_body("payload_too_large", message, details),
        status_code=413,
        headers={"Connection": "close"},
    )
    start = {"type": "http.response.start", "status": 413, "headers": response.raw_headers}
    await send(start)
    # The whole 413 goes out now; the response is closed only after the drain, because the
    # server stops delivering the request body once the response is complete.
    await send({"type": "http.response.body", "body": response.body, "more_body": bool(more)})
    if not more:
        return
    with anyio.move_on_after(LINGER_SECONDS):
        while True:
            drained = await receive()
            if drained["type"] != "http.request" or not drained.get("more_body", False):
                break
    await send({"type": "http.response.body", "body": b"", "more_body": False})
