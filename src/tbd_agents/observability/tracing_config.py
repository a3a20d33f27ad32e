"""Settings of tracing (OpenTelemetry) and of the log format."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class TracingSettings(BaseSettings):
    """Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""

    trace_capture_content: bool = Field(
        default=False,
        description=(
            "Record message content in spans: the prompt and answer of each model call (as "
            "`gen_ai.*.message` / `gen_ai.choice` span events) and the arguments and result of "
            "each tool call (`gen_ai.tool.call.arguments` / `.result`). Off by default: prompts "
            "and tool results may hold personal data or secrets, and spans leave the process "
            "for the trace backend. Names, ids, token counts and outcomes are recorded either way."
        ),
    )
