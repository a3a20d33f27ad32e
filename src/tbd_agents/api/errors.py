"""One JSON error shape for the whole API: `{"detail": message, "error": {"code", "message",
"details"}}` — `detail` (a string) is what clients of the existing TBD Agents API read.

Domain errors (`tbd_agents.errors`) map to their class's `http_status`; request validation maps
to 422 with the path of each bad field (never echoing the submitted value, which may be a
secret); unknown routes and methods keep their 404/405; anything else is a 500 whose message
says where to look, logged once with its traceback (a database error: its SQLSTATE, table,
constraint and statement shape, never its values), answered inside the app so the server does
not log the exception again in full.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tbd_agents.api.preconditions import etag
from tbd_agents.errors import TbdError, VersionConflict

log = logging.getLogger("tbd_agents.api")


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "detail": message,
        "error": {"code": code, "message": message, "details": details or {}},
    }


def _respond(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TbdError)
    details = dict(exc.details)
    field = details.get("field")
    if exc.http_status == 422 and isinstance(field, str):
        details.setdefault("errors", [{"loc": ["body", field], "msg": exc.message}])
    if exc.http_status >= 500:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, exc.code, exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    retry_after = getattr(exc, "retry_after", None)  # TooManyAttempts, database outages
    if isinstance(retry_after, int):
        headers = {"Retry-After": str(retry_after)}
    if isinstance(exc, VersionConflict):
        headers = {"ETag": etag(exc.current)}
    return _respond(exc.http_status, exc.code, exc.message, details, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(p) for p in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
    return _respond(422, "validation_error", f"invalid request: {where}", {"errors": errors})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    return _respond(exc.status_code, code, message, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    from tbd_agents.storage.outage import outage_of
    from tbd_agents.storage.postgres.errors import describe

    ctx = getattr(request.app.state, "ctx", None)
    outage = outage_of(exc, getattr(ctx, "store", None))
    if outage is not None:  # a database outage met outside the repositories: 503, not 500
        log.warning(
            "%s %s: database error raised outside a repository, answered as %s: %s",
            request.method,
            request.url.path,
            outage.code,
            describe(exc) or type(exc).__name__,
        )
        return await _domain_error(request, outage)
    incident = uuid.uuid4().hex[:12]

    database = describe(exc)
    if database is None:
        log.error(
            "unhandled error %s on %s %s", incident, request.method, request.url.path, exc_info=exc
        )
    else:  # the shape of the failure only: the driver's text can quote the row's values
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error(
            "unhandled database error %s on %s %s: %s\nTraceback (values omitted):\n%s",
            incident,
            request.method,
            request.url.path,
            database,
            frames.rstrip(),
        )
    return _respond(
        500,
        "internal_error",
        f"internal error (incident {incident}); the server log has the details",
        {"incident": incident},
    )


class AnswerUnexpected:
    """Answer an unhandled error with the 500 of `_unexpected` inside the app.

    A handler registered for `Exception` runs in Starlette's outermost middleware, which
    re-raises the error after answering: the server then logs the whole exception (a database
    driver's message quotes the failing row's values, secrets included) and drops the
    connection. An error after the answer has started is left to the server.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            response = await _unexpected(Request(scope), exc)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TbdError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)  # errors of outer middleware
    app.add_middleware(AnswerUnexpected)
