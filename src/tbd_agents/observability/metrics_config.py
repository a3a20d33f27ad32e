"""Settings of the Prometheus metrics (`observability/metrics.py`, `/metrics`, the worker's and
scheduler's metrics ports)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings


class MetricsSettings(BaseSettings):
    """Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""

    metrics_enabled: bool = Field(
        default=True,
        description="Serve Prometheus metrics: `GET /metrics` on the API, and the worker's and "
        "scheduler's metrics ports. false: no endpoint, no port; the API stops counting HTTP "
        "requests (unless tracing is on); other series are still counted in memory.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, every scrape (API `/metrics`, worker and scheduler ports) must "
        "send `Authorization: Bearer <METRICS_TOKEN>` (401 otherwise), from any address. Unset: "
        "no token, and only clients in METRICS_ALLOWED_NETWORKS may scrape (403 otherwise). API "
        "keys are not accepted here.",
    )
    metrics_allowed_networks: str = Field(
        default="127.0.0.0/8,::1/128",
        description="Comma-separated networks (CIDR) allowed to scrape without a token when "
        "METRICS_TOKEN is unset (default: loopback only). Ignored when METRICS_TOKEN is set.",
    )
    metrics_bind_host: str = Field(
        default="0.0.0.0",  # noqa: S104  (the access rule above guards it; containers need it)
        description="Address the worker's and scheduler's metrics ports listen on (the API's "
        "`/metrics` is on the API's own HOST and PORT).",
    )
    worker_metrics_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        description="Port on which `tbd-agents worker` serves its metrics (`/metrics`), the sum "
        "over its pool's processes. 0: no port.",
    )
    scheduler_metrics_port: int = Field(
        default=9102,
        ge=0,
        le=65535,
        description="Port on which `tbd-agents scheduler` serves its metrics (`/metrics`). 0: no "
        "port.",
    )
    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        description="Directory for prometheus_client's multiprocess mode: each process of this "
        "service writes its values there and a scrape adds them up. Needed by the worker's "
        "prefork pool (the worker uses a temporary directory when unset); give every service "
        "(API, worker, scheduler) its own directory: a process clears it when it starts.",
    )
    celery_queue_poll_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Seconds between two reads of the broker's queue length by the API "
        "(`celery_queue_length`; with REDIS_URL). 0: not read.",
    )

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("metrics_allowed_networks")
    @classmethod
    def _check_networks(cls, value: str) -> str:
        from ipaddress import ip_network

        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            try:
                ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not a network; write CIDR networks separated by commas, "
                    "e.g. 127.0.0.0/8,10.0.0.0/8"
                ) from None
        return value
