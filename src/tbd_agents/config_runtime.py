"""Settings of the runtime: queue and workers, run leases and dispatch, the scheduler,
webhooks and outbound hosts, the API server's address and logging."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class RuntimeSettings(BaseSettings):
    """How runs are queued, leased, scheduled and reported, and where the server listens.

    Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""

    # --- runtime ---------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None, description="Redis for Celery workers and the event bus; unset: in-process."
    )
    run_queue: str = Field(
        default="tbd-agents-runs",
        min_length=1,
        description="Celery queue the runs are sent to and the workers consume.",
    )
    run_executor: str = Field(
        default="tbd_agents.engine.inprocess:build_executor",
        description="`module:factory` that builds what executes one run (default: the agent "
        "engine). Tests and custom deployments may point it at their own executor.",
    )
    run_lease_seconds: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="A running task whose worker has not heartbeaten for this long is marked "
        "failed (heartbeats are sent every third of it).",
    )
    run_dispatch_retry_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A run accepted but not yet handed to the workers (Redis was down, or the "
        "process that accepted it stopped) is handed over again this long after it was "
        "accepted, and then at this interval, until it is or until RUN_DISPATCH_DEADLINE_SECONDS.",
    )
    run_dispatch_deadline_seconds: float = Field(
        default=900.0,
        gt=0,
        description="A run that could not be handed to the workers within this many seconds "
        "of being accepted is marked failed, with the reason, its error event and its error "
        "webhook (it never stays pending).",
    )
    broker_reconnect_max_retries: int = Field(
        default=0,
        ge=0,
        description="How many times a Celery worker tries to reconnect to a lost Redis "
        "(every 2, 4, … up to 30 s) before it exits with code 1; 0: for ever.",
    )
    run_event_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Events of finished runs older than this are purged; replay with "
        "Last-Event-ID works while they are kept.",
    )
    scheduler_poll_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="How often the scheduler looks for due schedules."
    )
    scheduler_misfire_grace_seconds: float = Field(
        default=300.0,
        ge=0,
        description="An occurrence found later than this after its time counts as missed (after "
        "downtime) and follows the schedule's missed-run policy.",
    )
    webhook_allowed_hosts: str = Field(
        default="",
        description="Comma-separated host names, IPs or CIDR ranges that webhooks may reach even "
        "though they resolve to private, loopback or link-local addresses (refused otherwise).",
    )
    outbound_allowed_hosts: str = Field(
        default="",
        description="Comma-separated host names, IPs or CIDR ranges that provider base_urls, MCP "
        "server URLs and external knowledge sources of non-admin owners, and custom tools with "
        "allowed_hosts (through the sandbox's egress proxy), may reach although they resolve to "
        "internal addresses (records of admins may always, tools never; cloud metadata "
        "addresses only when listed here). Webhooks use WEBHOOK_ALLOWED_HOSTS instead.",
    )
    webhook_max_attempts: int = Field(
        default=5, ge=1, le=50, description="Delivery attempts per webhook before giving up."
    )
    webhook_backoff_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Delay before the second webhook attempt; doubled for each later one.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Timeout of one webhook HTTP request."
    )
    host: str = Field(default="127.0.0.1", description="Address the API server binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the API server.")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_http_level: str = Field(
        default="WARNING",
        description="Level of the HTTP client loggers (httpx, httpcore, openai, anthropic): their "
        "INFO line per request is noise; what they log is redacted like every other line.",
    )
