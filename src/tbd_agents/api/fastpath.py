"""The hot CRUD requests answered without FastAPI's routing and dependency solving.

Finding the route among ~150 (linear matching), solving its dependencies and handling its
exceptions cost more CPU than the work of a `GET /api/agents/{id}` itself (measured: ~0.5 ms of
~0.9 ms per request). `CrudFastPath`, the innermost middleware, answers the five CRUD requests of
every `crud_router` resource directly, when they are plain:

* `GET <prefix>` without a query string (the whole list), `POST <prefix>`;
* `GET`, `PUT`, `PATCH`, `DELETE <prefix>/<id>` without a query string;
* bodies of type `application/json` that parse as a JSON object and pass the route's schema;
* no earlier route that could match the same path (checked against the app's routes, in order).

It calls the same operations as the routes (`api.crud.CrudOperations`) with the caller from the
same authenticator, and answers domain errors with the same handler, so the answers are the same.
Anything else (a query string, another content type, a body that does not parse or validate,
a NUL in the id, HEAD, a trailing slash, ...) goes to FastAPI as before, the body replayed, so
its error answers (422 with field paths, 405, redirects) do not change either. Authentication
fails here as it would in the route: before body validation, after JSON parsing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tbd_agents.api.crud import CrudOperations
from tbd_agents.api.deps import ApiContext
from tbd_agents.api.errors import _domain_error as domain_error_response
from tbd_agents.errors import TbdError
from tbd_agents.observability import logctx
from tbd_agents.observability.httpmetrics import ROUTE_KEY
from tbd_agents.services.access import Principal

#: A request this layer leaves to FastAPI.
_PASS = None

RouteTable = dict[tuple[str, str], "_Target"]


@dataclass(frozen=True, slots=True)
class _Target:
    """One CRUD request shape: what answers it, and the earlier routes that could take it."""

    operations: CrudOperations
    by_id: bool
    earlier: tuple[re.Pattern[str], ...]


def _segments(path: str) -> list[str]:
    return path.split("/")


def _may_match(template: str, shape: Sequence[str]) -> bool:
    """Whether a route with path `template` could match some path of `shape` (segments; the
    last is the id for a by-id shape). Conservative: True when unsure."""
    parts = _segments(template)
    tail = next((i for i, p in enumerate(parts) if p.startswith("{") and ":path}" in p), None)
    if tail is not None:  # a path parameter (a mount): any number of segments from there
        parts, shape = parts[:tail], shape[:tail]
        n = min(len(parts), len(shape))
        parts, shape = parts[:n], shape[:n]
    elif len(parts) != len(shape):
        return False
    return all(p == s or "{" in p or s == "{id}" for p, s in zip(parts, shape, strict=True))


def _routes(app_routes: Iterable[Any]) -> list[tuple[str, re.Pattern[str], set[str] | None, Any]]:
    """(path template, regex, methods or None for any, endpoint) of every route in matching
    order; ValueError for a route whose shape is not known here."""
    found: list[tuple[str, re.Pattern[str], set[str] | None, Any]] = []
    for route in app_routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:  # a router included by FastAPI: its routes, in order
            for context in contexts():
                original = getattr(context, "original_route", None)
                effective = getattr(context, "starlette_route", None) or original
                found.extend(_routes([_Effective(context, effective)]))
            continue
        template = getattr(route, "path_format", None)
        regex = getattr(route, "path_regex", None)
        if not isinstance(template, str) or regex is None:
            raise ValueError(f"a route of unknown shape: {route!r}")
        methods = getattr(route, "methods", None)
        if not hasattr(route, "methods"):  # a mount: any method, any path below it
            template = getattr(route, "path", "") + "/{rest:path}"
        found.append((template, regex, set(methods) if methods else None, _endpoint(route)))
    return found


class _Effective:
    """An included route as seen by the including router (its own path, regex, methods)."""

    def __init__(self, context: Any, route: Any) -> None:
        self.path_format = getattr(context, "path_format", "") or getattr(
            route, "path_format", None
        )
        self.path_regex = getattr(context, "path_regex", None) or getattr(route, "path_regex", None)
        if hasattr(route, "methods"):
            self.methods = getattr(context, "methods", None) or route.methods
        self.endpoint = _endpoint(route)


def _endpoint(route: Any) -> Any:
    return getattr(route, "endpoint", None)


def build_table(app_routes: Iterable[Any], resources: Sequence[CrudOperations]) -> RouteTable:
    """For every (method, path template) of the resources' CRUD routes: its target. A request
    whose route is not found (or comes after a catch-all) is not in the table."""
    routes = _routes(app_routes)
    table: RouteTable = {}
    for ops in resources:
        shapes: list[tuple[str, bool, bool]] = [
            ("GET", False, True),
            ("POST", False, ops.create is not None),
            ("GET", True, True),
            ("PUT", True, ops.update is not None),
            ("PATCH", True, ops.update is not None),
            ("DELETE", True, ops.delete is not None),
        ]
        for method, by_id, present in shapes:
            if not present:
                continue
            template = ops.prefix + ("/{record_id}" if by_id else "")
            shape = _segments(ops.prefix) + (["{id}"] if by_id else [])
            earlier: list[re.Pattern[str]] = []
            for path, regex, methods, endpoint in routes:
                mine = path == template and methods is not None and method in methods
                if mine and endpoint in ops.endpoints:
                    table[(method, template)] = _Target(ops, by_id, tuple(earlier))
                    break
                if (methods is None or method in methods) and _may_match(path, shape):
                    if path == template:  # taken by an earlier route: FastAPI routes them
                        break
                    earlier.append(regex)
    return table


class CrudFastPath:
    """The middleware (innermost: the body limits, security headers and the 500 handler of the
    other middlewares apply as before)."""

    def __init__(self, app: ASGIApp, resources: Sequence[CrudOperations]) -> None:
        self.app = app
        self.resources = resources
        self.table: RouteTable | None = None

    def _table(self, scope: Scope) -> RouteTable:
        if self.table is None:
            try:
                self.table = build_table(scope["app"].routes, self.resources)
            except ValueError:  # routes this layer cannot reason about: all to FastAPI
                self.table = {}
        return self.table

    def _target(self, scope: Scope) -> tuple[_Target, str] | None:
        if scope["type"] != "http" or scope["query_string"] or scope.get("root_path"):
            return _PASS
        method: str = scope["method"]
        path: str = scope["path"]
        table = self._table(scope)
        target = table.get((method, path))
        record_id = ""
        if target is None:
            prefix, _, record_id = path.rpartition("/")
            if not record_id or "\x00" in record_id:
                return _PASS
            target = table.get((method, prefix + "/{record_id}"))
            if target is None:
                return _PASS
        if any(rx.match(path) for rx in target.earlier):
            return _PASS
        # the route template, for the HTTP metrics (observability/httpmetrics.py)
        scope[ROUTE_KEY] = target.operations.prefix + ("/{record_id}" if target.by_id else "")
        return target, record_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._target(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        target, record_id = found
        ops = target.operations
        method = scope["method"]
        schema = None
        if method in ("POST", "PUT", "PATCH"):
            schema = ops.create_schema if method == "POST" else ops.update_schema
            await self._with_body(scope, receive, send, target, record_id, schema)
            return
        ctx: ApiContext = scope["app"].state.ctx
        try:
            caller = await _caller(ctx, scope)
            if not target.by_id:
                response = await ops.list_all(ctx, caller)
            elif method == "GET":
                response = await ops.get(ctx, caller, record_id)
            else:
                assert ops.delete is not None
                response = await ops.delete(ctx, caller, record_id, _if_match(scope))
        except TbdError as exc:
            response = await domain_error_response(Request(scope), exc)
        await response(scope, receive, send)

    async def _with_body(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: _Target,
        record_id: str,
        schema: type[BaseModel] | None,
    ) -> None:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replay = _replay(body, receive)
        if schema is None or not _json_content(scope):
            await self.app(scope, replay, send)
            return
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):  # FastAPI says what is wrong (its 422 or 400)
            await self.app(scope, replay, send)
            return
        ctx: ApiContext = scope["app"].state.ctx
        ops = target.operations
        response: Response
        try:
            caller = await _caller(ctx, scope)
            try:
                validated = schema.model_validate(data)
            except ValidationError:  # FastAPI's 422 names every field
                await self.app(scope, replay, send)
                return
            if target.by_id:
                assert ops.update is not None
                response = await ops.update(ctx, caller, record_id, validated, _if_match(scope))
            else:
                assert ops.create is not None
                response = await ops.create(ctx, caller, validated)
        except TbdError as exc:
            response = await domain_error_response(Request(scope), exc)
        await response(scope, receive, send)


async def _caller(ctx: ApiContext, scope: Scope) -> Principal:
    """What `deps.get_principal` returns for this request."""
    authorization = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
            break
    client = scope.get("client")
    principal = await ctx.auth.authenticate(authorization, client[0] if client else "")
    logctx.bind_here(user=principal.identity)
    return principal


def _if_match(scope: Scope) -> str | None:
    """The request's `If-Match` header (several are joined with commas, as Starlette does)."""
    values = [v.decode("latin-1") for n, v in scope["headers"] if n == b"if-match"]
    return ", ".join(values) if values else None


def _json_content(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


def _replay(body: bytes, receive: Receive) -> Callable[[], Any]:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
