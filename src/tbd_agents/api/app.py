"""The application factory and its lifespan.

`create_app(settings, store=None)` builds the FastAPI app. Clients (document store, HTTP client,
key ring, authenticator) are built once when the app starts and closed when it stops. When a
`store` is passed in (tests, the CLI after it started the embedded server) the caller keeps
ownership of it; otherwise the app opens one from the settings and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
from fastapi import Depends, FastAPI, Request
from starlette.routing import Route

import tbd_agents
from tbd_agents.api.crud import CrudRouter
from tbd_agents.api.deps import ApiContext
from tbd_agents.api.docs import SecurityHeaders, install_cached_openapi, install_docs
from tbd_agents.api.errors import install_error_handlers
from tbd_agents.api.fastpath import CrudFastPath
from tbd_agents.api.limits import RequestLimits
from tbd_agents.api.mcp_server import McpEndpoint
from tbd_agents.config import Settings
from tbd_agents.engine.sandbox import Ceilings, set_save_ceilings
from tbd_agents.errors import ConfigurationError, InvalidData, StorageError
from tbd_agents.logs import protect
from tbd_agents.observability.exposition import install_metrics_route
from tbd_agents.observability.gauges import QueueLengthPoller
from tbd_agents.observability.httpmetrics import HttpMetrics
from tbd_agents.observability.tracing_setup import (
    API_SERVICE,
    configure_tracing,
    fastapi_options,
    instrument_app,
)
from tbd_agents.plugins.loader import sync_plugins, sync_plugins_until_done
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.security.github import GitHubIdentity
from tbd_agents.services.keys import Authenticator, FailureThrottle
from tbd_agents.services.privilege import HostCapabilities
from tbd_agents.services.validation import set_default_max_turns
from tbd_agents.storage.protocol import DocumentStore

if TYPE_CHECKING:
    from tbd_agents.services.memory import MemoryService

log = logging.getLogger("tbd_agents.api")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth_settings(settings: Settings) -> None:
    """Refuse open (unauthenticated) access unless the server listens on loopback only."""
    if settings.allow_unauthenticated and not is_loopback(settings.host):
        raise ConfigurationError(
            f"ALLOW_UNAUTHENTICATED=true with HOST={settings.host}: unauthenticated access is only "
            "allowed on a loopback address (HOST=127.0.0.1). Unset ALLOW_UNAUTHENTICATED and use "
            "API keys (`tbd-agents keys create`), or bind to 127.0.0.1"
        )


def server_token(settings: Settings) -> str | None:
    """GITHUB_TOKEN when it is accepted as a Bearer credential (GITHUB_TOKEN_AUTH)."""
    if settings.github_token is None or not settings.github_token_auth:
        return None
    return settings.github_token.get_secret_value().strip() or None


def _build_context(settings: Settings, store: DocumentStore, http: httpx.AsyncClient) -> ApiContext:
    github = None
    if settings.github_auth:
        github = GitHubIdentity(http, settings.github_api_url)
    admins = frozenset(u.strip() for u in settings.github_admin_users.split(",") if u.strip())
    auth = Authenticator(
        store,
        allow_unauthenticated=settings.allow_unauthenticated,
        github=github,
        github_admins=admins,
        host=HostCapabilities.from_settings(settings),
        throttle=FailureThrottle(settings.auth_failure_limit, settings.auth_failure_window_seconds),
        server_token=server_token(settings),
    )
    return ApiContext(settings, store, KeyRingProvider(settings), http, auth)


def create_app(settings: Settings, store: DocumentStore | None = None) -> FastAPI:
    """The API application for `settings`, on `store` if given (else opened at start-up)."""
    check_auth_settings(settings)
    protect(settings)
    set_save_ceilings(
        Ceilings(settings.sandbox_max_timeout_seconds, settings.sandbox_max_memory_mb)
    )
    set_default_max_turns(settings.default_max_turns)
    tracing = configure_tracing(settings, API_SERVICE)  # None without an OTLP endpoint

    mcp_endpoint = McpEndpoint()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = store is None
        active = store if store is not None else await _open_store(settings)
        http = httpx.AsyncClient(timeout=httpx.Timeout(30.0), follow_redirects=False)
        ctx: ApiContext | None = None
        sweeper: asyncio.Task[None] | None = None
        plugin_sync: asyncio.Task[None] | None = None
        queue_length = QueueLengthPoller.from_settings(settings)
        try:
            if queue_length is not None:
                queue_length.start()
            ctx = _build_context(settings, active, http)
            # Plugin custom-tool records (plugins/loader.py); with the database down the API
            # still starts (readiness says 503) and the records are synced once it is back.
            try:
                await sync_plugins(active, settings)
            except StorageError as exc:
                log.warning("plugin records will be synced when the database is back: %s", exc)
                plugin_sync = asyncio.create_task(
                    sync_plugins_until_done(active, settings), name="plugin-sync"
                )
            await _attach_optional_services(ctx)
            sweeper = _start_memory_sweep(ctx)
            app.state.ctx = ctx
            if settings.allow_unauthenticated:
                log.warning(
                    "AUTHENTICATION IS DISABLED (ALLOW_UNAUTHENTICATED=true): every request to "
                    "%s:%s acts as the local admin",
                    settings.host,
                    settings.port,
                )
            # Everything loaded so far (modules, models, clients) lives as long as the process:
            # keep it out of the cyclic collector's full collections, which otherwise scan it
            # (~70 ms on this heap) in the middle of whichever request allocates enough to
            # trigger one (a year of usage by day: every few requests; benchmarks/RESULTS.md).
            gc.freeze()
            async with mcp_endpoint.running(ctx):  # the agents' MCP server at /mcp
                yield
        finally:
            gc.unfreeze()
            for task in (sweeper, plugin_sync):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            knowledge = ctx.services.get("knowledge") if ctx is not None else None
            if knowledge is not None:
                await knowledge.close()  # its vector store client
            await http.aclose()
            if owned:
                await active.close()
            if queue_length is not None:
                await queue_length.aclose()
            if tracing is not None:
                await asyncio.to_thread(tracing.flush)  # the spans of the last requests

    app = FastAPI(
        title="TBD Agents",
        version=tbd_agents.__version__,
        description="Self-hosted AI agent hub. Authenticate with `Authorization: Bearer <API key>`.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_parameters)],
        docs_url=None,  # Swagger UI and ReDoc served by api/docs.py from the package, no CDN
        redoc_url=None,
        **fastapi_options(),  # FastAPI's own tracing off: instrument_app decides (below)
    )
    from tbd_agents.api.routers import all_routers

    routers = all_routers()
    # innermost: the hot CRUD requests without routing and dependency solving (api/fastpath.py)
    app.add_middleware(
        CrudFastPath, resources=[r.operations for r in routers if isinstance(r, CrudRouter)]
    )
    install_error_handlers(app)
    app.add_middleware(RequestLimits, settings=settings)  # body size and JSON depth
    app.add_middleware(SecurityHeaders)  # CSP on HTML, no-store on /api
    install_docs(app)
    install_cached_openapi(app)
    install_metrics_route(app, settings)  # GET /metrics (its own access rule), before the routers
    for router in routers:
        app.include_router(router)
    # The agents' MCP server (api/mcp_server.py): an ASGI app of its own, every method.
    app.router.routes.append(Route("/mcp", mcp_endpoint, include_in_schema=False))
    from tbd_agents.web import mount as mount_dashboard

    mount_dashboard(app)  # the web dashboard at / and /dashboard
    if settings.metrics_enabled or tracing is not None:  # it also names the server spans
        app.add_middleware(HttpMetrics)  # outermost: error answers are counted too
    instrument_app(app, settings.trace_reads_per_second)  # server spans, when tracing is on
    return app


async def refuse_nul_parameters(request: Request) -> None:
    """422 naming the parameter when a query or path parameter holds U+0000, which PostgreSQL
    text cannot store or compare (the body check is `services.validation.Input`). Async on
    purpose: it runs for every request, and a sync dependency costs a thread-pool hop each time."""
    for kind, params in (
        ("query", request.query_params.multi_items()),
        ("path", request.path_params.items()),
    ):
        for name, value in params:
            if "\x00" in name or (isinstance(value, str) and "\x00" in value):
                raise InvalidData(
                    f"{kind} parameter {name.replace(chr(0), '')!r} may not contain the NUL "
                    "character (U+0000)",
                    details={"field": name.replace("\x00", ""), "in": kind},
                )


async def _open_store(settings: Settings) -> DocumentStore:
    from tbd_agents.storage.factory import open_store

    return await open_store(settings)


async def _attach_optional_services(ctx: ApiContext) -> None:
    """Knowledge and memory services, when their packages are installed in this tree."""
    from tbd_agents.api.routers import attach_services

    await attach_services(ctx)


def _start_memory_sweep(ctx: ApiContext) -> asyncio.Task[None] | None:
    """Delete expired memories (row and vector) every MEMORY_EXPIRY_SWEEP_SECONDS, when the
    memory service is up. Several API processes may sweep at once: a memory deleted by one is
    simply not found by the others."""
    knowledge = ctx.services.get("knowledge")
    every = ctx.settings.memory_expiry_sweep_seconds
    if knowledge is None or every <= 0:
        return None
    return asyncio.create_task(_sweep_memories(knowledge.memory, every), name="memory-expiry")


async def _sweep_memories(memory: MemoryService, every: float) -> None:
    while True:
        try:
            deleted = await memory.expire()
            if deleted:
                log.info("deleted %d expired memories and their vectors", deleted)
        except Exception:
            log.exception("the memory expiry sweep failed; trying again in %.0f s", every)
        await asyncio.sleep(every)
