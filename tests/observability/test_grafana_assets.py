"""The operations assets in observability/: dashboards, alert rules, Prometheus, the collector,
Tempo and Grafana provisioning. No Prometheus, Grafana or collector runs here (and promtool is not
installed), so these tests check what would otherwise break silently in production: a query on a
series that no process exports, a label the series does not carry, a template variable that no
query uses (the existing dashboards' flaw), an alert without its annotations, a collector
pipeline naming an undefined component, and JSON that the generator would no longer produce."""

from __future__ import annotations

import importlib.util
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from tbd_agents.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "observability"
DASHBOARDS = OBS / "grafana" / "dashboards"
DASHBOARD_FILES = sorted(p.name for p in DASHBOARDS.glob("*.json"))

# Series that exist without TBD Agents exporting them: Prometheus' own, and the span metrics the
# OpenTelemetry collector's spanmetrics connector computes (otel-collector-config.yaml), with the
# labels the connector adds (service.name, span.name, span.kind, status.code + the dimensions).
SPAN_LABELS = {"service_name", "span_name", "span_kind", "status_code", "gen_ai_request_model"}
EXTERNAL: dict[str, set[str]] = {
    "up": {"job", "instance"},
    "traces_span_metrics_calls_total": SPAN_LABELS,
    "traces_span_metrics_duration_milliseconds_bucket": SPAN_LABELS | {"le"},
}
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "atan2",
}  # fmt: skip
EXISTING_ALERTS = {
    "HighTaskFailureRate": ("5m", "0.25"),
    "NoTaskCompletions": ("15m", "15m"),
    "CostSpikeHourly": (None, "> 50"),
    "CostSpikeDaily": (None, "> 500"),
    "CeleryQueueBacklog": ("5m", "> 10"),
    "CeleryQueueCritical": ("2m", "> 50"),
    "WorkerDown": (None, 'up{job="tbd-worker"}'),
    "AppDown": (None, 'up{job="tbd-app"}'),
    "SlowTaskExecution": (None, "> 300"),
    "HighSSEConnections": (None, "> 100"),
}


@cache
def exported() -> dict[str, set[str]]:
    """Every sample name TBD Agents' processes can expose → the labels it carries.

    Built from the metric objects of tbd_agents.observability.metrics (a labelled metric with no
    values yet has no samples to collect) plus everything else in the default registry."""
    names: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        labels = set(value._labelnames)
        base, kind = value._name, value._type
        if kind == "counter":
            suffixes = ["_total", "_created"]
        elif kind == "histogram":
            suffixes = ["_sum", "_count", "_created"]
            names[base + "_bucket"] = labels | {"le"}
        else:
            suffixes = [""]
        for suffix in suffixes:
            names[base + suffix] = set(labels)
    for family in REGISTRY.collect():  # process_*, python_* and anything registered elsewhere
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def _strip(expr: str) -> str:
    """`expr` without strings, Grafana variables, range/offset brackets and grouping clauses."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "x", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    return re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)


def series_in(expr: str) -> list[tuple[str, set[str]]]:
    """The metric names a PromQL expression selects, each with the label names it matches on or
    groups by (grouping labels are attributed to every series of the expression)."""
    grouped = set()
    for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        grouped |= {label.strip() for label in clause.split(",") if label.strip()}
    body = _strip(expr)
    found = []
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?(\s*\()?", body):
        name, matchers, call = match.group(1), match.group(2) or "", match.group(3)
        if call or name.lower() in PROMQL_WORDS or name == "x":
            continue
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
        found.append((name, labels | grouped))
    return found


def check_expr(expr: str, where: str) -> list[str]:
    """Problems of one expression: unknown series, or labels its series do not carry."""
    problems = []
    series = series_in(expr)
    if not series:
        problems.append(f"{where}: no series in {expr!r}")
    known = {**exported(), **EXTERNAL}
    for name, labels in series:
        if name not in known:
            problems.append(f"{where}: unknown series {name!r}")
            continue
        if name in EXTERNAL:
            continue
        missing = labels - known[name] - SCRAPE_LABELS - {"le"}
        if missing:
            problems.append(f"{where}: {name} has no label(s) {sorted(missing)}")
    return problems


def load_dashboard(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text())


def prom_targets(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel.get("targets", []) if "expr" in t]


# --- the PromQL parser the other tests rely on ---------------------------------------------------


def test_series_parser_finds_names_and_labels_and_skips_functions_and_variables() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, model) (rate(x_bucket{model=~"$model", '
        'a="b{c}"}[$__rate_interval]))) / on() group_left sum(up{job="tbd-app"}) offset 5m'
    )
    assert series_in(expr) == [("x_bucket", {"le", "model", "a"}), ("up", {"le", "model", "job"})]
    assert check_expr("sum(rate(no_such_series_total[5m]))", "t") == [
        "t: unknown series 'no_such_series_total'"
    ]
    assert check_expr('sum(cost_dollars_total{direction="in"})', "t") == [
        "t: cost_dollars_total has no label(s) ['direction']"
    ]
    assert check_expr("sum by (le) (rate(agent_task_duration_seconds_bucket[5m]))", "t") == []
    assert check_expr("vector(1)", "t") == ["t: no series in 'vector(1)'"]


def test_every_metric_of_the_metrics_module_is_registered() -> None:
    names = exported()
    assert "copilot_hub_tokens_total" in names and "cost_dollars_total" in names
    assert names["tbd_provider_request_duration_seconds_bucket"] == {
        "provider_type", "model", "le",
    }  # fmt: skip
    assert "agent_tasks_active" in names


# --- dashboards --------------------------------------------------------------------------------


def test_the_five_dashboards_exist_and_match_their_generator() -> None:
    expected = ["overview.json", "llm-analytics.json", "context-engineering.json"]
    expected += ["usage-and-budgets.json", "runtime.json"]
    assert sorted(expected) == DASHBOARD_FILES
    spec = importlib.util.spec_from_file_location(
        "grafana_dashboards", ROOT / "scripts" / "grafana_dashboards.py"
    )
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    rendered = generator.render()
    assert set(rendered) == set(DASHBOARD_FILES)
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text() == text, (
            f"{name} is out of date: run scripts/grafana_dashboards.py"
        )


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_structure(name: str) -> None:
    board = load_dashboard(name)
    assert board["schemaVersion"] >= 39
    assert board["uid"].startswith("tbd-") and len(board["uid"]) <= 40
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["title"], f"untitled panel {panel['id']} in {name}"
        assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
        for item in (panel, *panel["targets"]):
            uid = item["datasource"]["uid"]
            assert uid.startswith("${") and uid[2:-1] in variables, (name, panel["title"], uid)
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_queries_use_exported_series_and_labels(name: str) -> None:
    board = load_dashboard(name)
    problems = []
    for panel in board["panels"]:
        for expr in prom_targets(panel):
            problems += check_expr(expr, f"{name} / {panel['title']}")
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query).groups()  # type: ignore[union-attr]
            assert metric in exported(), (name, query)
            assert label in exported()[metric], (name, query)
    assert problems == []


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_template_variable_is_used_by_a_query(name: str) -> None:
    """The existing llm-analytics.json declared variables no query used; ours are wired."""
    board = load_dashboard(name)
    queries = json.dumps([p.get("targets", []) for p in board["panels"]])
    everything = json.dumps(board["panels"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "datasource":
            used = "${" + variable["name"] + "}" in everything
        else:
            used = re.search(r"\$" + variable["name"] + r"\b", queries) is not None
        assert used, f"{name}: variable {variable['name']!r} is declared but never used"


# --- alert rules ----------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((OBS / "alert-rules.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_alert_rules_structure_and_series() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    problems = []
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert all(str(v).strip() for v in rule["annotations"].values())
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        problems += check_expr(rule["expr"], rule["alert"])
    assert problems == []


def test_the_existing_ten_alerts_keep_their_names_and_thresholds() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name, (duration, fragment) in EXISTING_ALERTS.items():
        rule = rules[name]
        if duration:
            assert duration in (rule["for"], rule["expr"]) or duration in rule["expr"], name
        assert fragment in rule["expr"], (name, rule["expr"])
    assert rules["HighTaskFailureRate"]["for"] == "5m"
    assert rules["CeleryQueueBacklog"]["for"] == "5m"
    assert rules["CeleryQueueCritical"]["for"] == "2m"


def test_our_alerts_cover_the_new_series() -> None:
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    for series in (
        "tbd_provider_requests_total", "tbd_provider_request_duration_seconds_bucket",
        "tbd_budget_exceeded_total", "tbd_budget_warnings_total", "tbd_scheduler_lag_seconds_bucket",
        "tbd_db_pool_connections", "tbd_webhook_deliveries_total", "http_requests_total",
    ):  # fmt: skip
        assert series in exprs, series


# --- Prometheus, collector, Tempo, Grafana provisioning ------------------------------------------


def test_prometheus_scrapes_the_three_processes_with_the_token_and_loads_the_rules() -> None:
    config = yaml.safe_load((OBS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alert-rules.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    ports = {"tbd-app": ("app", 8000), "tbd-worker": ("worker", 9101)}
    ports["tbd-scheduler"] = ("scheduler", 9102)
    for name, (service, port) in ports.items():
        job = jobs[name]
        assert job["authorization"] == {
            "type": "Bearer", "credentials_file": "/prometheus/.metrics_token",
        }  # fmt: skip
        assert job["dns_sd_configs"] == [{"names": [service], "type": "A", "port": port}]
    assert jobs["tbd-app"]["metrics_path"] == "/metrics"
    assert jobs["otel-collector"]["static_configs"][0]["targets"] == ["otel-collector:8889"]
    # The alert rules' `up{job=...}` selectors name these jobs.
    for rule in alert_rules():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, (rule["alert"], job)


def test_collector_pipelines_reference_defined_components() -> None:
    config = yaml.safe_load((OBS / "otel-collector-config.yaml").read_text())
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    connectors = set(config.get("connectors", {}))
    pipelines = config["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] and pipeline["exporters"], name
        for receiver in pipeline["receivers"]:
            assert receiver in set(config["receivers"]) | connectors, (name, receiver)
        for processor in pipeline.get("processors", []):
            assert processor in config["processors"], (name, processor)
        for exporter in pipeline["exporters"]:
            assert exporter in set(config["exporters"]) | connectors, (name, exporter)
        assert pipeline.get("processors", [None])[0] == "memory_limiter", name
    # A connector joins two pipelines: exported by one, received by another.
    for connector in connectors:
        assert any(connector in p["exporters"] for p in pipelines.values()), connector
        assert any(connector in p["receivers"] for p in pipelines.values()), connector
    assert "spanmetrics" in connectors and "prometheus" in config["exporters"]
    assert config["exporters"]["otlp/tempo"]["endpoint"] == "tempo:4317"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]


def test_tempo_and_grafana_provisioning() -> None:
    tempo = yaml.safe_load((OBS / "tempo.yaml").read_text())
    assert tempo["server"]["http_listen_port"] == 3200
    grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc == "0.0.0.0:4317"
    provisioning = OBS / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())
    by_uid = {source["uid"]: source for source in sources["datasources"]}
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["tempo"]["url"] == "http://tempo:3200"
    links = by_uid["tempo"]["jsonData"]["tracesToMetrics"]
    assert links["datasourceUid"] == "prometheus"
    for query in links["queries"]:  # `$$` is Grafana's escape for a literal `$` in provisioning
        assert check_expr(query["query"].replace("$$__tags", ""), query["name"]) == []
    dest = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]
    assert dest["datasourceUid"] == "tempo"
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
