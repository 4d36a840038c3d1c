"""docker/observability as Prometheus and Grafana will read it: promtool checks the
configuration and the alert rules and runs the rules' unit tests; every expression (alerts
and dashboard) reads only metrics the platform exports; the dashboard is well formed; every
compose service that serves metrics is scraped."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from apps.eventbus import metrics as eventbus_metrics
from tests.observability.conftest import OBSERVABILITY, run_promtool
from tests.observability.promql import SYNTHETIC, exported_samples, metric_names, platform_registry
from tests.support import ROOT

PROMETHEUS = OBSERVABILITY / "prometheus.yml"
RULES = sorted((OBSERVABILITY / "rules").glob("*.rules.yml"))
RULE_TESTS = sorted((OBSERVABILITY / "rules").glob("*_test.yml"))
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "orders-platform.json"
PROVISIONING = OBSERVABILITY / "grafana" / "provisioning"
COMPOSE = ROOT / "docker" / "compose.yaml"
DATASOURCE_UID = "prometheus"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def alert_rules() -> list[dict]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


# -- promtool --------------------------------------------------------------------------------


def test_promtool_accepts_the_prometheus_configuration_and_its_rule_files(promtool):
    result = run_promtool(promtool, "check", "config", PROMETHEUS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules(promtool):
    assert RULES, "no rules/*.rules.yml"
    result = run_promtool(promtool, "check", "rules", *(str(path) for path in RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_pass_their_unit_tests(promtool):
    assert RULE_TESTS, "no rules/*_test.yml"
    result = run_promtool(promtool, "test", "rules", *(path.name for path in RULE_TESTS), cwd=OBSERVABILITY / "rules")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_parses_every_expression_of_the_dashboard(promtool, tmp_path):
    """Each panel query as a recording rule (Grafana's interval variables replaced by durations)."""
    rules = []
    for number, expr in enumerate(dashboard_exprs()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable promtool cannot read: {expr}"
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# -- the alert rules --------------------------------------------------------------------------

WANTED_ALERTS = {
    "DeadLettersGrowing", "ConsumerPendingGrowing", "OutboxTooOld", "PaymentGatewayCircuitOpen", "OrdersStuck",
}  # fmt: skip


def test_every_alert_has_a_duration_a_severity_and_explains_itself():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules if "alert" in rule]
    assert set(names) >= WANTED_ALERTS, WANTED_ALERTS - set(names)
    assert len(names) == len(set(names)), "an alert name is used twice"
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{rule['alert']}: no `for:`"
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), rule["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing():
    fired, silent = set(), set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"


# -- metric names -----------------------------------------------------------------------------


def test_every_alert_and_dashboard_query_reads_metrics_the_platform_exports():
    exported = exported_samples(platform_registry())
    unknown = {}
    for expr in [rule["expr"] for rule in alert_rules()] + dashboard_exprs():
        missing = {name for name in metric_names(expr) if name not in exported and name not in SYNTHETIC}
        if missing:
            unknown[expr] = sorted(missing)
    assert not unknown, unknown


def test_the_metric_name_reader_sees_names_and_only_names():
    expr = (
        'histogram_quantile(0.95, sum by (le, view) (rate(a_bucket{status=~"5..", x="sum"}[$__rate_interval])))'
        " / ignoring (pod) group_left max(b) and on (consumer) (time() - c_total offset 5m) or vector(0)"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c_total"}


def test_every_platform_metric_is_documented_in_the_eventbus_metrics_module():
    documented = eventbus_metrics.__doc__
    exported = set(exported_samples(platform_registry()).values())
    ours = {
        name
        for name in exported
        if not name.startswith(("process_", "python_", "orders_platform_django_")) and not name.startswith("django_")
    }
    assert "orders_platform_django_http_*" in documented
    undocumented = {name for name in ours if not re.search(rf"\b{name}(_total)?\b", documented)}
    assert not undocumented, f"add them to the table in apps/eventbus/metrics.py: {sorted(undocumented)}"


# -- the dashboard ----------------------------------------------------------------------------


def test_the_dashboard_is_a_grafana_dashboard_whose_panels_query_the_provisioned_prometheus():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queries = [panel for panel in panels if panel["type"] != "row"]
    assert len(queries) >= 10
    for panel in queries:
        assert panel["title"] and panel["type"] in ("timeseries", "stat", "gauge", "table", "bargauge"), panel
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
    # What the issue asks the dashboard to show, by the metrics behind it.
    reads = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    for needed in (
        "orders_platform_django_http_requests_latency_seconds_by_view_method_bucket",  # web latency
        "orders_platform_django_http_responses_total_by_status_total",  # web error rate
        "order_processing_duration_seconds_bucket",  # consumer latency
        "order_processing_errors_total",  # consumer errors
        "nats_stream_messages",  # stream depth
        "nats_consumer_pending_messages",  # pending
        "dead_letters_total",  # dead letters
        "eventbus_outbox_oldest_unsent_age_seconds",  # outbox age
        "order_saga_duration_seconds_bucket",  # saga latency
    ):
        assert needed in reads, needed


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder():
    (datasource,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert (datasource["type"], datasource["uid"], datasource["url"]) == (
        "prometheus",
        DATASOURCE_UID,
        "http://prometheus:9090",
    )
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "orders-platform.yml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


# -- Prometheus against compose ---------------------------------------------------------------


def _scrape_targets() -> dict[str, int]:
    """Compose service name -> scraped port."""
    targets = {}
    for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets.update(dict.fromkeys(sd["names"], sd["port"]))
    return targets


def _command(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def test_prometheus_scrapes_every_compose_service_that_serves_metrics_on_its_port():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    serving = {}
    for name, service in services.items():
        command = _command(service)
        if "--metrics-port" in command:
            serving[name] = int(command[command.index("--metrics-port") + 1])
    if "web" in services:
        serving["web"] = 8000  # django-prometheus on the web port (the image's gunicorn command)
    if set(serving) <= {"web"}:
        pytest.fail("compose.yaml runs no relay or consumer with --metrics-port", pytrace=False)
    targets = _scrape_targets()
    assert {name: targets.get(name) for name in serving} == serving, "scrape each on its metrics port"
    assert set(targets) <= set(services), f"scraped but not in compose.yaml: {set(targets) - set(services)}"


def test_compose_lets_prometheus_scrape_the_web_across_its_workers():
    """The scrape's Host header is the service name: Django answers 400 unless it is allowed; and
    without multiprocess mode each scrape counts only the gunicorn worker that answered it."""
    web = yaml.safe_load(COMPOSE.read_text())["services"]["web"]
    env = web.get("environment") or {}
    assert "web" in str(env.get("ALLOWED_HOSTS", "")).split(","), "add `web` to the web service's ALLOWED_HOSTS"
    assert env.get("PROMETHEUS_MULTIPROC_DIR"), "set PROMETHEUS_MULTIPROC_DIR (a tmpfs) for the web service"
