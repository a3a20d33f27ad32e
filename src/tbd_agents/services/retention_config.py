"""Settings of data retention (`services/retention.py`): what the upkeep loop and
`tbd-agents db prune` delete, and how often.

Defaults: records that are logs of what happened (runs with their events, webhook deliveries,
per-call usage rows) are bounded, because nobody reads them after a few months and they are what
makes a busy database grow without end; what users wrote themselves (chat sessions) is kept until
an operator sets a limit. `0` turns a rule off.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class RetentionSettings(BaseSettings):
    """Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""

    retention_enabled: bool = Field(
        default=True,
        description="Run the retention rules below in the upkeep loop of the API / scheduler "
        "processes (false: only `tbd-agents db prune` applies them).",
    )
    retention_interval_seconds: float = Field(
        default=3600.0,
        ge=10,
        description="How often the upkeep loop applies the retention rules.",
    )
    retention_batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Records deleted per transaction by the retention rules (chat sessions: a "
        "tenth of it, since each takes its messages along): short transactions, no long locks.",
    )
    retention_run_days: float = Field(
        default=90.0,
        ge=0,
        description="Finished runs (task executions, with their events and webhook deliveries) "
        "that ended more than this many days ago are deleted; 0: kept by age. Pending, running "
        "and awaiting-approval runs are never deleted.",
    )
    retention_runs_per_owner: int = Field(
        default=0,
        ge=0,
        description="Keep only this many newest finished runs per owner (the workflow's "
        "`github_user`); older ones are deleted. Runs an agent delegated to are not counted: "
        "they go with the run that started their chain. 0: no limit.",
    )
    retention_chat_days: float = Field(
        default=0.0,
        ge=0,
        description="Chat sessions without activity for this many days are deleted with their "
        "messages and attached files; 0 (default): chats are kept.",
    )
    retention_chats_per_owner: int = Field(
        default=0,
        ge=0,
        description="Keep only this many most recently active chat sessions per user; 0 "
        "(default): no limit.",
    )
    retention_chat_summary_after_messages: int = Field(
        default=0,
        ge=0,
        description="A chat session with more messages than this has its older messages "
        "replaced by one summary written by the agent's model; 0 (default): off.",
    )
    retention_chat_summary_keep_recent: int = Field(
        default=20,
        ge=1,
        description="Messages of a summarised chat session kept verbatim after the summary.",
    )
    retention_webhook_delivery_days: float = Field(
        default=30.0,
        ge=0,
        description="Webhook deliveries (with their attempts) created more than this many days "
        "ago are deleted once delivered or failed; 0: kept.",
    )
    retention_usage_call_days: float = Field(
        default=90.0,
        ge=0,
        description="Per-call usage rows older than this many days (whole UTC days) are "
        "deleted; the daily and monthly aggregates the usage totals are read from are kept. "
        "0: kept.",
    )
