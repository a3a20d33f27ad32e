"""Settings of the Prometheus metrics (`observability/metrics.py`, `/metrics`)."""

from __future__ import annotations

from pydantic_settings import BaseSettings


class MetricsSettings(BaseSettings):
    """Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""
