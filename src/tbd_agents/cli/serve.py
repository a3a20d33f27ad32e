"""`tbd-agents serve`: the API server (uvicorn, one process).

With no configuration it runs on the embedded PostgreSQL: the server is started (or joined) in
DATA_DIR, migrated to head, served, supervised (restarted when it dies), and let go on exit.
With POSTGRES_URI it checks that the database is reachable and at head first. Authentication is
on: without an API key every request is refused, and start-up says how to create the first one.

SIGTERM, SIGINT and SIGHUP stop the server gracefully at any point — during start-up too: uvicorn
finishes the requests in flight, the store is closed and the embedded PostgreSQL is let go of
(stopped when no other process uses it), then the process exits with status 0. A second signal
during the shutdown stops waiting for open connections. uvicorn's own signal handling is off: it
re-raises the signal after serving, which killed the process before the store was closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Annotated

import typer

from tbd_agents.cli.common import friendly_errors, settings
from tbd_agents.config import Settings
from tbd_agents.embeddings.factory import prefetch_model
from tbd_agents.logs import configure_logging
from tbd_agents.observability.processes import api_process, close_process
from tbd_agents.storage.protocol import DocumentStore

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("tbd_agents.serve")

#: The signals that stop the server gracefully (SIGHUP does not exist on Windows).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)

FIRST_KEY_HINT = (
    "No API key exists yet, and every request needs one. Create the first admin key (it works "
    "while the server runs):\n\n    tbd-agents keys create --admin\n\nthen send it as "
    "`Authorization: Bearer <key>`."
)


def open_cli_store(
    config: Settings, *, supervise: bool = False
) -> AbstractAsyncContextManager[DocumentStore]:
    """The configured document store, ready to use (see `storage.factory.prepared_store`)."""
    from tbd_agents.storage.factory import prepared_store

    return prepared_store(config, supervise=supervise)


class GracefulStop:
    """Turns SIGTERM, SIGINT and SIGHUP into a graceful stop, on the running event loop.

    Before the API serves, a signal cancels start-up (the main task): every `async with` and
    `finally` on the way out runs, so a started embedded PostgreSQL is let go of. While it
    serves, the signal asks uvicorn to shut down (a second one: without waiting for open
    connections)."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._main: asyncio.Task[None] | None = None
        self._server: uvicorn.Server | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        for sig in STOP_SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except NotImplementedError:  # Windows' event loops: a plain handler, same effect
                signal.signal(sig, lambda n, _f: loop.call_soon_threadsafe(self._on_signal, n))

    def serving(self, server: uvicorn.Server) -> None:
        self._server = server

    def _on_signal(self, number: int) -> None:
        sig = signal.Signals(number)
        first = self.received is None
        self.received = self.received or sig
        if self._server is not None:
            log.info("%s received: shutting down", sig.name)
            if not first or self._server.should_exit:
                self._server.force_exit = True
            self._server.should_exit = True
        elif first and self._main is not None:
            log.info("%s received during start-up: stopping", sig.name)
            self._main.cancel()


async def has_api_keys(store: DocumentStore) -> bool:
    from tbd_agents.domain.auth import ApiKey
    from tbd_agents.storage.protocol import is_null

    async with store.unit_of_work() as repos:
        return await repos.for_model(ApiKey).count(is_null("revoked_at")) > 0


def _server_class() -> type[uvicorn.Server]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn without its own signal handling (`GracefulStop` does it)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server


async def _serve(config: Settings, stop: GracefulStop) -> None:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from tbd_agents.api import create_app
    from tbd_agents.api.app import check_auth_settings

    check_auth_settings(config)
    stop.install()
    async with open_cli_store(config, supervise=True) as store:
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
        server = _server_class()(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                log_level=config.log_level.lower(),
                access_log=False,
                lifespan="on",
                # JSON logs: uvicorn's loggers go through our root handler, not its own text one
                log_config=None if config.log_format == "json" else LOGGING_CONFIG,
            )
        )
        typer.echo(
            f"TBD Agents API on http://{config.host}:{config.port} (OpenAPI: /docs)", err=True
        )
        stop.serving(server)
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
    api_process(config)  # metrics mode; tracing settings checked before anything starts
    prefetch_model(config)  # a missing embedding model is fetched once, here, before serving
    stop = GracefulStop()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(config, stop))
    except asyncio.CancelledError:
        if stop.received is None:
            raise
    finally:
        close_process(None)  # the last spans flushed
    if stop.received is not None:
        typer.echo(f"Stopped ({stop.received.name}).", err=True)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (it comes with uvicorn[standard]; measured faster for
    the API), else asyncio's default. uvicorn picks it only when it creates the loop itself,
    which `serve` does not (the embedded server and store are opened first)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
