"""Serving the metrics: `GET /metrics` on the API, and a metrics port in the worker and scheduler.

Access follows the API's security model, with its own credential (a scraper should not hold an
API key, which would let it read and change records):

- `METRICS_TOKEN` set: every scrape sends `Authorization: Bearer <token>` (401 otherwise), from
  any address;
- unset: only clients in `METRICS_ALLOWED_NETWORKS` (loopback by default) may scrape; others get
  403 with a message that names METRICS_TOKEN.

Several processes, one answer. Celery's prefork pool runs each run slot in its own process; so
that a scrape of the worker's port sees the sum over them, the worker switches prometheus_client
to its multiprocess mode (`enable_multiprocess`) before any value is created: every process writes
its values to memory-mapped files in one directory and a scrape adds them up (gauges as their
`multiprocess_mode` says). The same happens in any process started with
PROMETHEUS_MULTIPROC_DIR. A process that starts the mode clears the directory first (values of a
previous start are stale); a child that ends removes its live gauges (`mark_process_dead`), and a
scrape removes those of children that died without saying so (SIGKILL).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, values
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from tbd_agents.errors import ConfigurationError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from tbd_agents.config import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"

_scrape_hooks: list[Callable[[], None]] = []
_multi_registry: CollectorRegistry | None = None
_multi_lock = threading.Lock()

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- access ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Denied:
    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Access:
    """Who may scrape: the holder of `token` when set, else clients in `networks`."""

    token: str | None
    networks: tuple[Network, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        networks = tuple(
            ipaddress.ip_network(item.strip(), strict=False)
            for item in settings.metrics_allowed_networks.split(",")
            if item.strip()
        )
        return cls(token or None, networks)

    def check(self, authorization: str | None, client: str | None) -> Denied | None:
        """None when the scrape may go on, else the answer to give."""
        if self.token is not None:
            scheme, _, given = (authorization or "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                return None
            return Denied(
                401,
                "metrics need `Authorization: Bearer <METRICS_TOKEN>`",
                (("WWW-Authenticate", 'Bearer realm="metrics"'),),
            )
        if client is not None and self._allowed(client):
            return None
        return Denied(
            403,
            f"metrics are served to clients in METRICS_ALLOWED_NETWORKS only (this one: "
            f"{client or 'unknown'}); set METRICS_TOKEN and scrape with `Authorization: Bearer "
            "<METRICS_TOKEN>` to allow other addresses",
        )

    def _allowed(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client.strip("[]"))
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


# --- multiprocess mode -------------------------------------------------------------------------
def is_multiprocess() -> bool:
    """Whether this process writes its values to PROMETHEUS_MULTIPROC_DIR."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def enable_multiprocess(directory: Path | None) -> Path:
    """Switch this process (and the processes it forks) to prometheus_client's multiprocess
    mode in `directory` (a new temporary directory when None, removed at exit), cleared first.
    ConfigurationError when it cannot be created or written."""
    global _multi_registry
    owned = directory is None
    path = Path(tempfile.mkdtemp(prefix="tbd-metrics-")) if directory is None else directory
    try:
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError(
            f"PROMETHEUS_MULTIPROC_DIR={path} cannot be used ({exc.strerror or exc}): give a "
            "directory this process may create and write"
        ) from None
    # prometheus_client reads the variable itself each time it creates a value (and the
    # processes forked from here inherit it): the one place we write the environment.
    os.environ[MULTIPROC_ENV] = str(path)
    # Values made before (at import, or in multiprocess mode already because the variable was
    # in the environment) are re-made: their files were just removed, or they were in memory.
    values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _recreate_values()
    gauges = sys.modules.get("tbd_agents.observability.gauges")
    if gauges is not None:  # pools watched before the switch now follow their events
        gauges.follow_multiprocess()
    with _multi_lock:
        _multi_registry = None
    if owned:
        import atexit

        atexit.register(_remove_dir, path, os.getpid())
    log.debug("prometheus multiprocess mode in %s", path)
    return path


def _remove_dir(path: Path, owner: int) -> None:
    """At exit of the process that made the temporary directory (not of its forked children)."""
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def _recreate_values() -> None:
    """Metrics created before the switch (at the import of `observability.metrics`) get values
    of the new kind: unlabelled ones are re-initialised, labelled ones drop their children."""
    module = sys.modules.get("tbd_agents.observability.metrics")
    if module is None:
        return
    http = sys.modules.get("tbd_agents.observability.httpmetrics")
    if http is not None:
        http.forget_children()
    from prometheus_client.metrics import MetricWrapperBase

    for metric in vars(module).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        if metric._labelnames:
            metric.clear()
        else:
            metric._metric_init()  # type: ignore[no-untyped-call]


def mark_process_dead(pid: int) -> None:
    """Remove the live gauges of process `pid` (it ended); its counters stay in the sum."""
    if is_multiprocess():
        try:
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        except OSError as exc:
            log.warning("could not remove the live gauges of process %s: %s", pid, exc)


def _reap_dead_processes(path: str) -> None:
    """Live gauges of processes that are gone (killed without a shutdown signal)."""
    pids: set[int] = set()
    for file in Path(path).glob("gauge_live*_*.db"):
        tail = file.stem.rpartition("_")[2]
        if tail.isdigit():
            pids.add(int(tail))
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid)
        except PermissionError:  # alive, another user's
            continue


def _registry() -> CollectorRegistry:
    global _multi_registry
    if not is_multiprocess():
        return REGISTRY
    path = os.environ[MULTIPROC_ENV]
    _reap_dead_processes(path)
    with _multi_lock:
        if _multi_registry is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
            _multi_registry = registry
        return _multi_registry


# --- scraping ----------------------------------------------------------------------------------
def on_scrape(hook: Callable[[], None]) -> None:
    """Call `hook` before each scrape (values read at scrape time, e.g. pool sizes)."""
    if hook not in _scrape_hooks:
        _scrape_hooks.append(hook)


def scrape(accept: str | None) -> tuple[bytes, str]:
    """The exposition of every series of this process (or of its service, in multiprocess
    mode), in OpenMetrics when `accept` asks for it, else the Prometheus text format."""
    for hook in list(_scrape_hooks):
        try:
            hook()
        except Exception:
            log.exception("a metrics refresh failed; serving the last values")
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_registry()), content_type


def install_metrics_route(app: FastAPI, settings: Settings) -> None:
    """`GET /metrics` on the API (METRICS_ENABLED), outside the OpenAPI document: it is for
    scrapers, with its own access rule (see the module docstring), not for API clients."""
    if not settings.metrics_enabled:
        return
    access = Access.from_settings(settings)

    async def metrics_endpoint(request: Request) -> Response:
        client = request.client.host if request.client is not None else None
        denied = access.check(request.headers.get("authorization"), client)
        if denied is not None:
            return Response(
                denied.message + "\n",
                status_code=denied.status,
                headers=dict(denied.headers),
                media_type="text/plain",
            )
        body, content_type = await asyncio.to_thread(scrape, request.headers.get("accept"))
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    app.add_route(METRICS_PATH, metrics_endpoint, methods=["GET"], include_in_schema=False)


# --- the metrics port of the worker and the scheduler ------------------------------------------
class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one every few seconds)."""


@dataclass
class MetricsServer:
    """A running metrics port; `close()` stops it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def metrics_wsgi_app(access: Access) -> Callable[..., Iterable[bytes]]:
    """The WSGI application of a metrics port: `/metrics` (and `/`) with the access rule."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") not in (METRICS_PATH, "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: metrics are at /metrics\n"]
        denied = access.check(environ.get("HTTP_AUTHORIZATION"), environ.get("REMOTE_ADDR"))
        if denied is not None:
            reason = "401 Unauthorized" if denied.status == 401 else "403 Forbidden"
            start_response(reason, [("Content-Type", "text/plain"), *denied.headers])
            return [denied.message.encode() + b"\n"]
        try:
            body, content_type = scrape(environ.get("HTTP_ACCEPT"))
        except Exception:
            log.exception("the metrics could not be collected")
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"the metrics could not be collected: see the process's log\n"]
        start_response("200 OK", [("Content-Type", content_type), ("Cache-Control", "no-store")])
        return [body]

    return app


def start_metrics_server(settings: Settings, port: int, variable: str) -> MetricsServer | None:
    """Serve the metrics on `port` of METRICS_BIND_HOST in a background thread (None when
    METRICS_ENABLED=false or `port` is 0). ConfigurationError naming `variable` when the port
    cannot be bound."""
    if not settings.metrics_enabled or port == 0:
        return None
    host = settings.metrics_bind_host
    server_class = _Server6 if ":" in host else _Server
    try:
        server = make_server(
            host,
            port,
            metrics_wsgi_app(Access.from_settings(settings)),
            server_class=server_class,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        raise ConfigurationError(
            f"{variable}={port}: the metrics port cannot be opened on {host} "
            f"({exc.strerror or exc}); choose a free port, or 0 for none"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="tbd-metrics", daemon=True)
    thread.start()
    log.info("metrics on http://%s:%s%s", host, server.server_address[1], METRICS_PATH)
    return MetricsServer(server, thread)
