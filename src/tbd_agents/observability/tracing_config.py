"""Settings of tracing (OpenTelemetry) and of the log format."""

from __future__ import annotations

from pydantic_settings import BaseSettings


class TracingSettings(BaseSettings):
    """Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""
