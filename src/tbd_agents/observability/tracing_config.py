"""Settings of tracing (OpenTelemetry) and of the log format.

The OTEL_* names are OpenTelemetry's standard variables, read here like every other setting (the
environment or `.env`) and passed to the SDK explicitly by `observability/tracing_setup.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings


class TracingSettings(BaseSettings):
    """Fields are inherited by `tbd_agents.config.Settings` (one environment, one reference)."""

    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: one readable line per record (as before). json: one JSON object per "
        "line with timestamp (UTC), level, logger, message, exception, trace_id/span_id and the "
        "record's context (user, run_id, task_id, agent_id, workflow_id).",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP collector base URL (e.g. http://otel-collector:4317 for gRPC, "
        "http://otel-collector:4318 for HTTP). Unset (and no traces endpoint): tracing is off.",
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        description="OTLP endpoint for traces only, used as it is (with http/protobuf the full "
        "URL, e.g. http://collector:4318/v1/traces); overrides OTEL_EXPORTER_OTLP_ENDPOINT.",
    )
    otel_exporter_otlp_protocol: str | None = Field(
        default=None,
        description="grpc or http/protobuf. Unset: grpc when the endpoint's port is 4317 (the "
        "existing TBD Agents' default), else http/protobuf.",
    )
    otel_exporter_otlp_headers: SecretStr | None = Field(
        default=None,
        description="Headers sent to the collector, `name=value` pairs separated by commas "
        "(values URL-encoded), e.g. `authorization=Bearer%20abc`.",
    )
    otel_service_name: str | None = Field(
        default=None,
        description="service.name of this process's spans. Unset: tbd-agents-api (serve), "
        "tbd-agents-worker (worker), tbd-agents-beat (scheduler), tbd-agents-cli (others).",
    )
    otel_resource_attributes: str | None = Field(
        default=None,
        description="Extra resource attributes, `key=value` pairs separated by commas "
        "(e.g. deployment.environment=prod).",
    )
    otel_traces_sampler: str = Field(
        default="parentbased_always_on",
        description="always_on, always_off, traceidratio, parentbased_always_on, "
        "parentbased_always_off or parentbased_traceidratio.",
    )
    otel_traces_sampler_arg: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Ratio of traces kept by the traceidratio samplers (0 to 1; default 1).",
    )

    @field_validator(
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_traces_endpoint",
        "otel_exporter_otlp_protocol",
        "otel_service_name",
        "otel_resource_attributes",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("log_format", "otel_traces_sampler", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    trace_reads_per_second: float = Field(
        default=10.0,
        ge=0,
        description="Most API GET/HEAD requests traced per second (a token bucket; 0: none). Every "
        "other request (writes, prompts, chat turns), every run in a worker and every request "
        "carrying a sampled `traceparent` is traced in full. A traced read costs more CPU than "
        "the read itself (docs/observability.md), so a busy API traces a bounded number.",
    )

    # --- what our own spans record ---------------------------------------------------------------
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
