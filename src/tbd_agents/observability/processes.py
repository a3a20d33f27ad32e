"""Observability of each kind of process: what `serve`, `worker` and `scheduler` switch on.

- **API** (`serve`): one process (uvicorn without `--workers`), so prometheus_client's
  single-process mode; with PROMETHEUS_MULTIPROC_DIR set, multiprocess mode over that directory
  (for running the app under several server processes). Several API replicas are scraped one by
  one, each at its own `/metrics`. Tracing is set up by `create_app`.
- **Worker**: multiprocess mode with the prefork pool (PROMETHEUS_MULTIPROC_DIR, or a temporary
  directory) so the metrics port shows the sum over the pool's processes; with the threads and
  solo pools, one process, single-process mode (unless PROMETHEUS_MULTIPROC_DIR is set). Tracing
  is set up in each pool process (a BatchSpanProcessor's thread does not survive a fork). Celery
  does not configure logging (our format, text or JSON, stays).
- **Scheduler**: one process; its own metrics port, tracing as `tbd-agents-beat`.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from tbd_agents.observability.exposition import (
    MetricsServer,
    enable_multiprocess,
    mark_process_dead,
    start_metrics_server,
)
from tbd_agents.observability.tracing_setup import (
    API_SERVICE,
    SCHEDULER_SERVICE,
    WORKER_SERVICE,
    configure_tracing,
    otlp_config,
    shutdown_tracing,
)

if TYPE_CHECKING:
    from tbd_agents.config import Settings

log = logging.getLogger(__name__)


def api_process(settings: Settings) -> None:
    """Before `create_app` in `serve`: the multiprocess directory when one is configured; the
    tracing settings checked (a bad endpoint stops start-up before anything is opened)."""
    if settings.prometheus_multiproc_dir is not None:
        enable_multiprocess(settings.prometheus_multiproc_dir)
    otlp_config(settings, API_SERVICE)


def worker_process(settings: Settings, *, prefork: bool) -> MetricsServer | None:
    """Before `worker_main`: metrics mode and port, tracing hooks, Celery's logging left alone.
    ConfigurationError (naming the variable) on a bad tracing setting or a busy port."""
    from celery import signals

    otlp_config(settings, WORKER_SERVICE)  # checked now, in the parent, before any fork
    if prefork or settings.prometheus_multiproc_dir is not None:
        enable_multiprocess(settings.prometheus_multiproc_dir)
    server = start_metrics_server(settings, settings.worker_metrics_port, "WORKER_METRICS_PORT")

    @signals.setup_logging.connect(weak=False)  # type: ignore[untyped-decorator]
    def _keep_our_logging(**_: Any) -> None:
        """A receiver here tells Celery not to configure logging itself."""

    if prefork:

        @signals.worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
        def _child_tracing(**_: Any) -> None:
            configure_tracing(settings, WORKER_SERVICE)

        @signals.worker_process_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
        def _child_end(**_: Any) -> None:
            shutdown_tracing()
            mark_process_dead(os.getpid())  # its live gauges leave the sum; counters stay

    else:
        configure_tracing(settings, WORKER_SERVICE)

    @signals.worker_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _worker_end(**_: Any) -> None:
        shutdown_tracing()
        if server is not None:
            server.close()

    return server


def scheduler_process(settings: Settings) -> MetricsServer | None:
    """At the start of `scheduler`: metrics port and tracing (`close_process` at its end)."""
    if settings.prometheus_multiproc_dir is not None:
        enable_multiprocess(settings.prometheus_multiproc_dir)
    configure_tracing(settings, SCHEDULER_SERVICE)
    return start_metrics_server(settings, settings.scheduler_metrics_port, "SCHEDULER_METRICS_PORT")


def close_process(server: MetricsServer | None) -> None:
    """Spans flushed, metrics port closed (process exit)."""
    shutdown_tracing()
    if server is not None:
        server.close()
