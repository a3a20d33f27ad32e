"""Generate the Grafana dashboards in observability/grafana/dashboards/ from this one file.

Why a generator: five dashboards share the same panel shapes, datasource variable and template
variables; writing the JSON by hand made the existing system's variables drift from the queries
(its `llm-analytics.json` declared `model` but no query used it). Here every panel is built by the
same few functions, every query addresses the datasource through the `${datasource}` variable, and
tests/observability/test_grafana_assets.py checks that each declared variable is used.

Run after editing, and commit both this script and the JSON it writes:

    python scripts/grafana_dashboards.py            # rewrite the JSON files
    python scripts/grafana_dashboards.py --check    # exit 1 when a file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "observability" / "grafana" / "dashboards"
SCHEMA_VERSION = 39
PROM = {"type": "prometheus", "uid": "${datasource}"}
TEMPO = {"type": "tempo", "uid": "${tempo}"}
RATE = "$__rate_interval"

Panel = dict[str, Any]


class Layout:
    """Places panels left to right on Grafana's 24-column grid and numbers them from 1."""

    def __init__(self) -> None:
        self.panels: list[Panel] = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def add(self, panel: Panel, width: int = 12, height: int = 8) -> None:
        if self.x + width > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)

    def row(self, title: str) -> None:
        """A full-width section header (never collapsed, so its panels stay top-level)."""
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> Panel:
    return {
        "refId": ref,
        "datasource": PROM,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }


def _targets(queries: list[tuple[str, str]], instant: bool = False) -> list[Panel]:
    return [
        target(expr, legend, chr(ord("A") + i), instant) for i, (expr, legend) in enumerate(queries)
    ]


def timeseries(
    title: str,
    queries: list[tuple[str, str]],
    unit: str = "short",
    description: str = "",
    stack: bool = False,
) -> Panel:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": PROM,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 20 if stack else 10,
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                    "showPoints": "never",
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": _targets(queries),
    }


def stat(
    title: str,
    expr: str,
    unit: str = "short",
    description: str = "",
    thresholds: tuple[float, float] | None = None,
) -> Panel:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if thresholds:
        steps += [
            {"color": "orange", "value": thresholds[0]},
            {"color": "red", "value": thresholds[1]},
        ]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": PROM,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        },
        "targets": [target(expr, "", "A", instant=True)],
    }


def bars(title: str, expr: str, legend: str, unit: str = "short", description: str = "") -> Panel:
    """A horizontal bar gauge of an instant query (top-N lists)."""
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": PROM,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "orientation": "horizontal",
            "displayMode": "gradient",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
        },
        "targets": [target(expr, legend, "A", instant=True)],
    }


def traces(title: str, traceql: str) -> Panel:
    """A Tempo search table (TraceQL); clicking a trace id opens it in Explore."""
    return {
        "type": "table",
        "title": title,
        "datasource": TEMPO,
        "targets": [
            {
                "refId": "A",
                "datasource": TEMPO,
                "queryType": "traceql",
                "query": traceql,
                "limit": 20,
                "tableType": "traces",
            }
        ],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
    }


def datasource_var(name: str, kind: str, label: str) -> Panel:
    return {
        "name": name,
        "label": label,
        "type": "datasource",
        "query": kind,
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "includeAll": False,
        "multi": False,
        "options": [],
    }


def label_var(name: str, metric: str, label: str = "") -> Panel:
    """A multi-value variable of one label's values; queries use it as `label=~"$name"`."""
    query = f"label_values({metric}, {label or name})"
    return {
        "name": name,
        "label": name.replace("_", " "),
        "type": "query",
        "datasource": PROM,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
        "regex": "",
        "options": [],
    }


def dashboard(uid: str, title: str, variables: list[Panel], layout: Layout, **extra: Any) -> Panel:
    return {
        "uid": uid,
        "title": title,
        "description": extra.pop("description", ""),
        "tags": ["tbd-agents"],
        "timezone": "utc",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": extra.pop("since", "now-6h"), "to": "now"},
        "links": [
            {
                "type": "dashboards",
                "tags": ["tbd-agents"],
                "asDropdown": True,
                "title": "TBD Agents",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "annotations": {"list": []},
        "templating": {
            "list": [datasource_var("datasource", "prometheus", "Prometheus"), *variables]
        },
        "panels": layout.panels,
    }


MODEL = 'model=~"$model"'


def _sel(metric: str, sel: str) -> str:
    return f"{metric}{{{sel}}}" if sel else metric


def rate_by(metric: str, by: str, sel: str = "", fn: str = "rate", window: str = RATE) -> str:
    """`sum by (<by>) (rate(<metric>{<sel>}[window]))`; no braces when there is no selector
    (an empty `{}` is a PromQL error)."""
    return f"sum by ({by}) ({fn}({_sel(metric, sel)}[{window}]))"


def total(metric: str, sel: str = "", window: str = "24h") -> str:
    return f"sum(increase({_sel(metric, sel)}[{window}]))"


def hq(quantile: float, metric: str, sel: str = "", by: str = "") -> str:
    """The `quantile` of histogram `metric` (without `_bucket`), per `by` labels."""
    group = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile({quantile}, sum by ({group}) "
        f"(rate({_sel(metric + '_bucket', sel)}[{RATE}])))"
    )


def p50_p95(metric: str, sel: str = "", by: str = "") -> list[tuple[str, str]]:
    suffix = legend(by) if by else ""
    return [
        (hq(0.5, metric, sel, by), f"p50 {suffix}".strip()),
        (hq(0.95, metric, sel, by), f"p95 {suffix}".strip()),
    ]


def legend(by: str) -> str:
    return " ".join("{{" + label.strip() + "}}" for label in by.split(","))


def overview() -> Panel:
    p = Layout()
    p.row("Service health")
    p.add(stat("API replicas up", 'sum(up{job="tbd-app"})'), 6, 4)
    p.add(stat("Workers up", 'sum(up{job="tbd-worker"})'), 6, 4)
    p.add(stat("Runs active", "sum(agent_tasks_active)", thresholds=(20, 50)), 6, 4)
    p.add(stat("Queue length", "max(celery_queue_length)", thresholds=(10, 50)), 6, 4)
    p.row("API")
    http = "http_request_duration_highr_seconds"
    p.add(timeseries("Requests by status class", [(rate_by("http_requests_total", "status"),
                     "{{status}}")], "reqps", stack=True))  # fmt: skip
    p.add(timeseries("Request latency (all handlers)",
                     [*p50_p95(http), (hq(0.99, http), "p99")], "s"))  # fmt: skip
    p.add(timeseries("Slowest handlers (p95)", [(
        f"topk(10, {hq(0.95, 'http_request_duration_seconds', by='handler')})", "{{handler}}")], "s"))  # fmt: skip
    p.add(timeseries("Open event streams (SSE)", [("sum(sse_connections_active)", "streams")]))
    p.row("Runs")
    p.add(timeseries("Finished runs by status", [(rate_by("agent_tasks_total", "status", MODEL),
                     "{{status}}")], "ops", stack=True))  # fmt: skip
    p.add(timeseries("Run duration", p50_p95("agent_task_duration_seconds", MODEL), "s"))
    failed = f'status="failed",{MODEL}'
    p.add(stat("Failure ratio (1h)",
               f"{total('agent_tasks_total', failed, '1h')} / {total('agent_tasks_total', MODEL, '1h')}",
               "percentunit", thresholds=(0.1, 0.25)), 8, 6)  # fmt: skip
    p.add(stat("Runs (24h)", total("agent_tasks_total", MODEL)), 8, 6)
    p.add(stat("Cost (24h)", total("cost_dollars_total", MODEL), "currencyUSD",
               thresholds=(100, 500)), 8, 6)  # fmt: skip
    p.row("Tokens and cost")
    p.add(timeseries("Tokens by direction", [(rate_by("copilot_hub_tokens_total", "direction",
                     MODEL), "{{direction}}")], stack=True))  # fmt: skip
    p.add(timeseries("Cost per hour by model", [(rate_by("cost_dollars_total", "model", MODEL,
                     "increase", "1h"), "{{model}}")], "currencyUSD", stack=True))  # fmt: skip
    p.row("Tools, MCP and chat")
    p.add(timeseries("Tool calls (top 10)", [(f"topk(10, {rate_by('tool_calls_total', 'tool_name')})",
                     "{{tool_name}}")], "ops"))  # fmt: skip
    for title, metric, by in (
        ("MCP connections opened", "mcp_connections_total", "server_name"),
        ("Chat messages by role", "chat_messages_total", "role"),
        ("Repository syncs", "repo_sync_total", "status"),
    ):
        p.add(timeseries(title, [(rate_by(metric, by), legend(by))], "ops"))
    return dashboard("tbd-overview", "TBD Agents — Overview",
                     [label_var("model", "agent_tasks_total")], p,
                     description="API, runs, tokens and cost, tools and MCP.")  # fmt: skip


def llm_analytics() -> Panel:
    p = Layout()
    sel = f'{MODEL},provider_type=~"$provider_type"'
    p.row("Tokens and cost")
    p.add(timeseries("Tokens by model", [(rate_by("copilot_hub_tokens_total", "model, direction",
                     MODEL), "{{model}} {{direction}}")], stack=True))  # fmt: skip
    p.add(timeseries("Cost per hour by model", [(rate_by("cost_dollars_total", "model", MODEL,
                     "increase", "1h"), "{{model}}")], "currencyUSD", stack=True))  # fmt: skip
    p.add(timeseries("Cost of one run", p50_p95("cost_per_task_dollars", MODEL), "currencyUSD"))
    p.add(timeseries("Premium requests (Copilot)", [(rate_by("premium_requests_total", "model",
                     MODEL), "{{model}}")], "ops"))  # fmt: skip
    p.row("Providers")
    for title, metric, by in (
        ("Model calls by outcome", "tbd_provider_requests_total", "provider_type, outcome"),
        ("Errors by kind", "tbd_provider_errors_total", "provider_type, kind"),
    ):
        p.add(timeseries(title, [(rate_by(metric, by, sel), legend(by))], "ops", stack=True))
    p.add(timeseries("Call duration p95 by model", [(
        hq(0.95, "tbd_provider_request_duration_seconds", sel, "model"), "{{model}}")], "s"))  # fmt: skip
    p.add(timeseries("Time to first token p95 by model", [(
        hq(0.95, "tbd_provider_time_to_first_token_seconds", sel, "model"), "{{model}}")], "s"))  # fmt: skip
    p.add(timeseries("Chat answer time p95", [(
        hq(0.95, "chat_response_duration_seconds", MODEL, "model"), "{{model}}")], "s"))  # fmt: skip
    p.add(timeseries("Runs by reasoning effort", [(rate_by("agent_tasks_total", "reasoning_effort",
                     MODEL), "{{reasoning_effort}}")], "ops", stack=True))  # fmt: skip
    p.row("Traces")
    p.add(timeseries("Span rate by service (collector span metrics)", [(
        rate_by("traces_span_metrics_calls_total", "service_name"), "{{service_name}}")], "ops",
        description="From the OpenTelemetry collector's spanmetrics connector."))  # fmt: skip
    p.add(traces("Recent model-call traces",
                 '{resource.service.name=~"tbd-agents.*" && span.gen_ai.request.model=~"$model"}'))  # fmt: skip
    return dashboard("tbd-llm-analytics", "TBD Agents — LLM analytics", [
        datasource_var("tempo", "tempo", "Tempo"),
        label_var("model", "copilot_hub_tokens_total"),
        label_var("provider_type", "tbd_provider_requests_total"),
    ], p, description="Tokens, cost and provider behaviour per model; traces.")  # fmt: skip


def context_engineering() -> Panel:
    p = Layout()
    kind = 'type=~"$type"'
    p.row("Compaction")
    p.add(timeseries("Compactions by model", [(rate_by("context_compactions_total", "model",
                     MODEL), "{{model}}")], "ops"))  # fmt: skip
    p.add(timeseries("Messages dropped per compaction (p95)", [(
        hq(0.95, "context_compaction_messages_dropped", MODEL, "model"), "{{model}}")]))  # fmt: skip
    p.row("Retrieval and embeddings")
    p.add(timeseries("Retrievals that found something", [(rate_by(
        "semantic_retrieval_hits_total", "type", kind), "{{type}}")], "ops"))  # fmt: skip
    p.add(timeseries("Results per retrieval", p50_p95("semantic_retrieval_results", kind, "type")))
    p.add(timeseries("Embedding requests by status", [(rate_by("embeddings_requests_total",
                     "status"), "{{status}}")], "ops", stack=True))  # fmt: skip
    p.add(timeseries("Vector search duration p95", [(hq(0.95, "tbd_vector_search_duration_seconds",
                     by="backend, kind"), "{{backend}} {{kind}}")], "s"))  # fmt: skip
    p.row("Run shape")
    p.add(timeseries("Tool calls per run", p50_p95("tool_calls_per_task", MODEL)))
    p.add(timeseries("Run duration p95 by model", [(hq(0.95, "agent_task_duration_seconds", MODEL,
                     "model"), "{{model}}")], "s"))  # fmt: skip
    p.add(timeseries("Guardrail verdicts", [(rate_by("tbd_guardrail_checks_total", "stage, outcome"),
                     "{{stage}} {{outcome}}")], "ops", stack=True))  # fmt: skip
    p.add(timeseries("Tool call duration p95 by origin", [(hq(0.95, "tbd_tool_call_duration_seconds",
                     by="origin"), "{{origin}}")], "s"))  # fmt: skip
    return dashboard("tbd-context-engineering", "TBD Agents — Context engineering", [
        label_var("model", "context_compactions_total"),
        label_var("type", "semantic_retrieval_hits_total"),
    ], p, description="Compaction, retrieval, embeddings, vector search and run shape.")  # fmt: skip


def usage_and_budgets() -> Panel:
    p = Layout()
    scope = 'scope=~"$scope"'
    p.row("Spend")
    p.add(stat("Cost (24h)", total("cost_dollars_total", MODEL), "currencyUSD",
               thresholds=(100, 500)), 6, 5)  # fmt: skip
    p.add(stat("Cost (7d)", total("cost_dollars_total", MODEL, "7d"), "currencyUSD"), 6, 5)
    p.add(stat("Tokens (24h)", total("copilot_hub_tokens_total", MODEL)), 6, 5)
    p.add(stat("Model calls (24h)", total("tbd_provider_requests_total", MODEL)), 6, 5)
    p.add(timeseries("Cost per hour by model", [(rate_by("cost_dollars_total", "model", MODEL,
                     "increase", "1h"), "{{model}}")], "currencyUSD", stack=True))  # fmt: skip
    week = rate_by("cost_dollars_total", "model", MODEL, "increase", "7d")
    p.add(bars("Top models by cost (7d)", f"topk(10, {week})", "{{model}}", "currencyUSD"))
    p.add(timeseries("Tokens per hour by direction", [(rate_by("copilot_hub_tokens_total",
                     "direction", MODEL, "increase", "1h"), "{{direction}}")], stack=True))  # fmt: skip
    p.add(timeseries("Usage ledger writes", [(rate_by("tbd_usage_records_total", "outcome"),
                     "{{outcome}}")], "ops", description="Model calls recorded in the usage "
                     "ledger; 'failed' means a call's usage was not stored."))  # fmt: skip
    p.row("Budgets")
    p.add(timeseries("Budget warnings by scope", [(rate_by("tbd_budget_warnings_total", "scope",
                     scope, "increase", "1h"), "{{scope}}")], description="Budgets reaching "
                     "their warning ratio (first time in a period)."))  # fmt: skip
    p.add(timeseries("Calls refused by a budget", [(rate_by("tbd_budget_exceeded_total", "scope",
                     scope, "increase", "1h"), "{{scope}}")], description="Model calls refused "
                     "because a budget was used up."))  # fmt: skip
    return dashboard("tbd-usage-and-budgets", "TBD Agents — Usage and budgets", [
        label_var("model", "cost_dollars_total"),
        label_var("scope", "tbd_budget_warnings_total"),
    ], p, since="now-7d", description="Spend, tokens and budget events. Per-user and per-agent "
       "figures live in the dashboard's Usage page (the ledger), never in Prometheus labels.")  # fmt: skip


def runtime() -> Panel:
    p = Layout()
    p.row("Processes")
    p.add(timeseries("Targets up", [('sum by (job) (up{job=~"tbd-.*"})', "{{job}}")]), 8)
    p.add(timeseries("Queue length", [("max(celery_queue_length)", "waiting runs")]), 8)
    p.add(timeseries("Runs handed to the broker", [(rate_by("tbd_run_dispatches_total", "outcome"),
                     "{{outcome}}")], "ops"), 8)  # fmt: skip
    p.row("Scheduler")
    p.add(timeseries("Scheduler lag", p50_p95("tbd_scheduler_lag_seconds"), "s"))
    p.add(timeseries("Schedule occurrences by outcome", [(rate_by("tbd_schedule_fires_total",
                     "outcome", fn="increase"), "{{outcome}}")], stack=True))  # fmt: skip
    p.row("Database")
    p.add(timeseries("Pool connections by state", [(
        'sum by (pool, state) (tbd_db_pool_connections{pool=~"$pool"})', "{{pool}} {{state}}")],
        stack=True))  # fmt: skip
    p.add(timeseries("Migration progress", [(
        "max by (entity) (tbd_migration_progress_ratio)", "{{entity}}")], "percentunit"))  # fmt: skip
    p.row("Webhooks")
    p.add(timeseries("Webhook attempts by outcome", [(rate_by("tbd_webhook_deliveries_total",
                     "outcome"), "{{outcome}}")], "ops", stack=True))  # fmt: skip
    p.add(
        timeseries(
            "Webhook attempt duration", p50_p95("tbd_webhook_delivery_duration_seconds"), "s"
        )
    )
    return dashboard("tbd-runtime", "TBD Agents — Runtime",
                     [label_var("pool", "tbd_db_pool_connections")], p,
                     description="Workers, queue, scheduler lag, database pool and webhooks.")  # fmt: skip


DASHBOARDS = {
    "overview.json": overview,
    "llm-analytics.json": llm_analytics,
    "context-engineering.json": context_engineering,
    "usage-and-budgets.json": usage_and_budgets,
    "runtime.json": runtime,
}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print("out of date (run scripts/grafana_dashboards.py): " + ", ".join(stale))
        return 1
    if not args.check:
        print(f"wrote {len(stale)} of {len(DASHBOARDS)} dashboards to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
