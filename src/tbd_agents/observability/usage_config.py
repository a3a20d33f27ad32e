"""Settings of usage recording, usage analytics and budgets."""

from __future__ import annotations

from pydantic_settings import BaseSettings


class UsageSettings(BaseSettings):
    """Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""
