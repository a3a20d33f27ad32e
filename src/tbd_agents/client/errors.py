"""Exceptions raised by the Python client (the same classes, names and attributes as the
official TBD Agents SDK's, so `except ApiError as e: e.status_code` keeps working)."""

from __future__ import annotations

from typing import Any

import httpx


class TbdAgentsError(Exception):
    """Base class of every error the client raises."""


class TransportError(TbdAgentsError):
    """The server could not be reached or the connection broke (no HTTP answer)."""

    def __init__(self, message: str, *, cause: Exception | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class ApiError(TbdAgentsError):
    """The server answered with a status of 400 or more.

    `detail` is the server's message (`body["detail"]`), `code` our stable error code
    (`body["error"]["code"]`, None for servers that do not send one)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        response: httpx.Response | None = None,
        body: Any | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response = response
        self.body = body

    @property
    def detail(self) -> str:
        return str(self)

    @property
    def code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return str(code) if code is not None else None
        return None


def error_from_response(response: httpx.Response) -> ApiError:
    """The `ApiError` for an error response (its body read already)."""
    body: Any
    message = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = response.text
        if body:
            message = body
    else:
        if isinstance(body, dict) and "detail" in body:
            detail = body["detail"]
            message = detail if isinstance(detail, str) else str(detail)
        else:
            message = str(body)
    return ApiError(message, status_code=response.status_code, response=response, body=body)
