"""Seeing what the hub does and what it costs.

- `metrics`: every Prometheus series (the existing TBD Agents' names, types and labels, and ours),
  with bounded label values; `exposition` serves them at `/metrics` (API) and on the worker's and
  scheduler's metrics port, aggregated across processes.
- `tracing`: OpenTelemetry set-up (OTLP exporter, off when no endpoint is set) and our own spans
  (run, model call with the GenAI conventions, tool call, retrieval, guardrails, webhooks).
- `jsonlog`: JSON-lines log records with trace/span, run and user ids.
- `tracing_setup`: the process's tracer provider and OTLP exporter, auto-instrumentation;
  `httpmetrics`: the API's HTTP request metrics; `gauges`: pool and queue gauges; `processes`:
  what `serve`, `worker` and `scheduler` switch on (metrics mode and port, tracing).
- `usage`: per-call usage records, daily pre-aggregation, the usage API's queries, budgets.

Each `*_config` module holds the settings of one part; `tbd_agents.config.Settings` inherits them,
so they are read, documented and validated like every other setting.
"""
