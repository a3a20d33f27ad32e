"""`tbd-agents serve`: the API server (uvicorn, one process).

With no configuration it runs on the embedded PostgreSQL: the server is started (or joined) in
DATA_DIR, migrated to head, served, and let go on exit. With POSTGRES_URI it checks that the
database is reachable and at head first. Authentication is on: without an API key every request
is refused, and start-up says how to create the first one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated

import typer

from tbd_agents.cli.common import friendly_errors, settings
from tbd_agents.config import Settings
from tbd_agents.embeddings.factory import prefetch_model
from tbd_agents.logs import configure_logging
from tbd_agents.storage.protocol import DocumentStore

FIRST_KEY_HINT = (
    "No API key exists yet, and every request needs one. Create the first admin key (it works "
    "while the server runs):\n\n    tbd-agents keys create --admin\n\nthen send it as "
    "`Authorization: Bearer <key>`."
)


def open_cli_store(config: Settings) -> AbstractAsyncContextManager[DocumentStore]:
    """The configured document store, ready to use (see `storage.factory.prepared_store`)."""
    from tbd_agents.storage.factory import prepared_store

    return prepared_store(config)


async def has_api_keys(store: DocumentStore) -> bool:
    from tbd_agents.domain.auth import ApiKey
    from tbd_agents.storage.protocol import is_null

    async with store.unit_of_work() as repos:
        return await repos.for_model(ApiKey).count(is_null("revoked_at")) > 0


async def _serve(config: Settings) -> None:
    import uvicorn

    from tbd_agents.api import create_app
    from tbd_agents.api.app import check_auth_settings

    check_auth_settings(config)
    async with open_cli_store(config) as store:
        if config.allow_unauthenticated:
            typer.secho(
                f"WARNING: AUTHENTICATION IS DISABLED (ALLOW_UNAUTHENTICATED=true). Anyone who can "
                f"reach {config.host}:{config.port} acts as the local admin.",
                err=True,
                fg=typer.colors.RED,
                bold=True,
            )
        elif not await has_api_keys(store):
            typer.secho(FIRST_KEY_HINT, err=True, fg=typer.colors.YELLOW)
        app = create_app(config, store)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                log_level=config.log_level.lower(),
                access_log=False,
                lifespan="on",
            )
        )
        typer.echo(
            f"TBD Agents API on http://{config.host}:{config.port} (OpenAPI: /docs)", err=True
        )
        await server.serve()


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default PORT or 8000).")] = None,
) -> None:
    """Run the API server (embedded PostgreSQL unless POSTGRES_URI is set)."""
    friendly_errors(_run)(host, port)


def _run(host: str | None, port: int | None) -> None:
    config = settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if overrides:
        config = config.model_copy(update=overrides)
    configure_logging(config, timestamps=False)
    prefetch_model(config)  # a missing embedding model is fetched once, here, before serving
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(config))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (it comes with uvicorn[standard]; measured faster for
    the API), else asyncio's default. uvicorn picks it only when it creates the loop itself,
    which `serve` does not (the embedded server and store are opened first)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
