"""Every Prometheus series of TBD Agents: the names every other module increments.

Two families:

- **The existing TBD Agents' series**, with the same names, types and labels (its
  `app/observability.py`), so dashboards and alert rules built on them keep working. The first
  counter carries the `copilot_hub_` prefix and the others do not, exactly as they were.
- **Ours**, prefixed `tbd_`: per-provider requests, errors and latency, guardrail outcomes, webhook
  deliveries, scheduler lag, database pool, vector search latency, migration progress, budgets.

Label values are bounded: no label holds an id, and the labels whose values come from users'
configuration (model, tool, MCP server names) go through `bounded()`, which keeps at most
`MAX_LABEL_VALUES` distinct values per label and folds the rest into `OTHER`.

Every metric lives in prometheus_client's default registry. In a process that serves several
workers (Celery's prefork pool), `exposition` switches prometheus_client to its multiprocess mode
before this module creates any value; gauges say how they are combined (`multiprocess_mode`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class _BeforeCollect(Collector):
    """Registered on the default registry before every metric below, so collected first:
    runs the hooks that bring values up to date (`httpmetrics.flush`) for whoever reads the
    registry (`exposition.scrape`, `get_sample_value`)."""

    def __init__(self) -> None:
        self.hooks: list[Callable[[], None]] = []

    def collect(self) -> Iterable[Metric]:
        for hook in list(self.hooks):
            hook()
        return ()


_before_collect = _BeforeCollect()
REGISTRY.register(_before_collect)


def before_collect(hook: Callable[[], None]) -> None:
    """Call `hook` whenever the default registry is collected, before any metric is read."""
    if hook not in _before_collect.hooks:
        _before_collect.hooks.append(hook)


#: Most distinct values one bounded label keeps; later new values are reported as `OTHER`.
MAX_LABEL_VALUES = 200
OTHER = "_other"

_seen: dict[str, set[str]] = {}
_seen_lock = threading.Lock()


def bounded(label: str, value: str | None) -> str:
    """`value` as a label value of `label`, or `OTHER` once `label` has MAX_LABEL_VALUES values
    (so a user creating thousands of tools or models cannot grow the series without bound)."""
    text = (value or "unknown")[:120]
    with _seen_lock:
        seen = _seen.setdefault(label, set())
        if text in seen:
            return text
        if len(seen) >= MAX_LABEL_VALUES:
            return OTHER
        seen.add(text)
        return text


_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_COST_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10)
_COUNT_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100)

# --- the existing TBD Agents' series (names, types and labels unchanged) ---------------------
TOKENS = Counter(
    "copilot_hub_tokens_total",
    "Model tokens, by direction (input or output) and model.",
    ["direction", "model"],
)
COST = Counter("cost_dollars_total", "Model cost in US dollars, by model.", ["model"])
PREMIUM_REQUESTS = Counter(
    "premium_requests_total", "GitHub Copilot premium requests, by model.", ["model"]
)
TASKS = Counter(
    "agent_tasks_total",
    "Finished runs, by final status, model and reasoning effort.",
    ["status", "model", "reasoning_effort"],
)
TOOL_CALLS = Counter("tool_calls_total", "Tool calls, by tool name.", ["tool_name"])
MCP_CONNECTIONS = Counter(
    "mcp_connections_total", "Connections opened to MCP servers, by server name.", ["server_name"]
)
REPO_SYNCS = Counter("repo_sync_total", "Repository syncs, by status.", ["status"])
COMPACTIONS = Counter(
    "context_compactions_total",
    "Context compactions that changed the context, by model.",
    ["model"],
)
RETRIEVAL_HITS = Counter(
    "semantic_retrieval_hits_total",
    "Retrievals that found something, by type (knowledge or memory).",
    ["type"],
)
EMBEDDING_REQUESTS = Counter(
    "embeddings_requests_total", "Embedding requests, by status (success or error).", ["status"]
)
CHAT_MESSAGES = Counter("chat_messages_total", "Chat messages stored, by role.", ["role"])

TASK_DURATION = Histogram(
    "agent_task_duration_seconds",
    "Run duration, by model and final status.",
    ["model", "status"],
    buckets=_DURATION_BUCKETS,
)
TOOL_CALLS_PER_TASK = Histogram(
    "tool_calls_per_task", "Tool calls per run, by model.", ["model"], buckets=_COUNT_BUCKETS
)
COST_PER_TASK = Histogram(
    "cost_per_task_dollars", "Cost of one run in US dollars, by model.", ["model"],
    buckets=_COST_BUCKETS,
)  # fmt: skip
REPO_SYNC_DURATION = Histogram(
    "repo_sync_duration_seconds", "Duration of one repository sync.", buckets=_DURATION_BUCKETS
)
COMPACTION_DROPPED = Histogram(
    "context_compaction_messages_dropped",
    "Messages removed from the context by one compaction, by model.",
    ["model"],
    buckets=_COUNT_BUCKETS,
)
RETRIEVAL_RESULTS = Histogram(
    "semantic_retrieval_results",
    "Results of one retrieval, by type (knowledge or memory).",
    ["type"],
    buckets=_COUNT_BUCKETS,
)
CHAT_RESPONSE_DURATION = Histogram(
    "chat_response_duration_seconds",
    "Time to answer one chat message, by model.",
    ["model"],
    buckets=_DURATION_BUCKETS,
)

TASKS_ACTIVE = Gauge("agent_tasks_active", "Runs executing now.", multiprocess_mode="livesum")
SSE_CONNECTIONS = Gauge(
    "sse_connections_active", "Open event streams (SSE).", multiprocess_mode="livesum"
)
QUEUE_LENGTH = Gauge(
    "celery_queue_length",
    "Runs waiting in the broker's queue (polled by the API).",
    # one series per scrape target, not one per process: only the API sets it (workers hold 0)
    multiprocess_mode="livemax",
)

# HTTP request metrics with prometheus-fastapi-instrumentator's default names and labels
# (`handler` is the route template, `status` is grouped as 2xx/3xx/4xx/5xx).
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests, by handler, method and status class.",
    ["handler", "method", "status"],
)  # fmt: skip
HTTP_REQUEST_SIZE = Histogram(
    "http_request_size_bytes", "Size of request bodies.", ["handler"],
    buckets=(0, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000),
)  # fmt: skip
HTTP_RESPONSE_SIZE = Histogram(
    "http_response_size_bytes", "Size of response bodies.", ["handler"],
    buckets=(0, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000),
)  # fmt: skip
HTTP_DURATION = Histogram(
    "http_request_duration_seconds", "HTTP request latency, by handler and method.",
    ["handler", "method"], buckets=(0.1, 0.5, 1),
)  # fmt: skip
HTTP_DURATION_HIGHR = Histogram(
    "http_request_duration_highr_seconds",
    "HTTP request latency over all handlers, with fine buckets.",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5,
             7.5, 10, 30, 60),
)  # fmt: skip

# --- ours -------------------------------------------------------------------------------------
PROVIDER_REQUESTS = Counter(
    "tbd_provider_requests_total",
    "Model calls, by provider type, model and outcome (ok or error).",
    ["provider_type", "model", "outcome"],
)
PROVIDER_ERRORS = Counter(
    "tbd_provider_errors_total",
    "Failed model calls, by provider type, model and error kind "
    "(rate_limited, auth, timeout, connection, server, bad_request, other).",
    ["provider_type", "model", "kind"],
)
PROVIDER_DURATION = Histogram(
    "tbd_provider_request_duration_seconds",
    "Duration of one model call (request to last token), by provider type and model.",
    ["provider_type", "model"],
    buckets=(*_FAST_BUCKETS, 60, 120, 300),
)
PROVIDER_FIRST_TOKEN = Histogram(
    "tbd_provider_time_to_first_token_seconds",
    "Time from request to the first streamed token, by provider type and model.",
    ["provider_type", "model"],
    buckets=_FAST_BUCKETS,
)
TOOL_DURATION = Histogram(
    "tbd_tool_call_duration_seconds",
    "Duration of one tool call, by origin (builtin, mcp, custom, plugin) and outcome.",
    ["origin", "outcome"],
    buckets=(*_FAST_BUCKETS, 60, 120, 300),
)
GUARDRAIL_CHECKS = Counter(
    "tbd_guardrail_checks_total",
    "Guardrail verdicts, by stage (input, request, output, tool) and outcome "
    "(passed, redacted, warned, blocked).",
    ["stage", "outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "tbd_webhook_deliveries_total",
    "Webhook HTTP attempts, by outcome (delivered, retrying, failed).",
    ["outcome"],
)
WEBHOOK_DURATION = Histogram(
    "tbd_webhook_delivery_duration_seconds", "Duration of one webhook HTTP attempt.",
    buckets=_FAST_BUCKETS,
)  # fmt: skip
SCHEDULER_LAG = Histogram(
    "tbd_scheduler_lag_seconds",
    "Delay between a schedule occurrence's due time and its run being created.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
)
SCHEDULE_FIRES = Counter(
    "tbd_schedule_fires_total",
    "Schedule occurrences, by outcome (fired, skipped, missed).",
    ["outcome"],
)
DB_POOL = Gauge(
    "tbd_db_pool_connections",
    "Database pool connections, by state (in_use, idle, overflow) and pool (app, runtime).",
    ["pool", "state"],
    multiprocess_mode="livesum",
)
VECTOR_SEARCH_DURATION = Histogram(
    "tbd_vector_search_duration_seconds",
    "Duration of one vector search, by backend (pgvector, qdrant) and collection kind "
    "(knowledge, memory).",
    ["backend", "kind"],
    buckets=_FAST_BUCKETS,
)
MIGRATION_RECORDS = Counter(
    "tbd_migration_records_total",
    "Records copied by the MongoDB → PostgreSQL migration, by entity (collection).",
    ["entity"],
)
MIGRATION_PROGRESS = Gauge(
    "tbd_migration_progress_ratio",
    "Share of the source's records copied so far, by entity (collection).",
    ["entity"],
    multiprocess_mode="liveall",
)
RUN_DISPATCHES = Counter(
    "tbd_run_dispatches_total",
    "Runs handed to the broker, by outcome (queued, deferred, requeued).",
    ["outcome"],
)
USAGE_RECORDS = Counter(
    "tbd_usage_records_total",
    "Model calls recorded in the usage ledger, by outcome (stored, failed).",
    ["outcome"],
)
BUDGET_WARNINGS = Counter(
    "tbd_budget_warnings_total",
    "Budgets that reached their warning ratio in a period, by scope "
    "(user, agent, workflow, schedule).",
    ["scope"],
)
BUDGET_EXCEEDED = Counter(
    "tbd_budget_exceeded_total",
    "Model calls refused because a budget was used up, by scope.",
    ["scope"],
)
RETENTION_DELETED = Counter(
    "tbd_retention_deleted_total",
    "Records deleted by the retention rules (services/retention.py), by kind (runs, "
    "chat_sessions, chat_messages, webhook_deliveries, usage_calls).",
    ["kind"],
)
