"""docs/metrics.md is the one list of metric names: the code exports exactly those, and
alerts and dashboards use nothing else."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from agents.worker import AGENT_NAMES
from streams.common.observability import StateDirCollector, WorkerMetrics
from streams.common.settings import load_settings
from streams.common.topics import TOPICS_BY_BASE
from tests.deployment import (
    REPO,
    UNBOUNDED_LABELS,
    CatalogueMetric,
    allowed_series,
    catalogue,
    read_service_merged,
)

PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
# Labels Prometheus or histograms add to every series.
IMPLICIT_LABELS = {"job", "instance", "le", "__name__"}


def _promtool() -> str | None:
    """promtool on PATH, or where .ci/run puts it (the memstream cache's bin/)."""
    found = shutil.which("promtool")
    cached = load_settings().cache_dir / "bin" / "promtool"
    return found or (str(cached) if cached.exists() else None)


def _declared(metrics: object) -> dict[str, tuple[str, frozenset[str]]]:
    """family name -> (type, label names) of every metric object an instance holds."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            out[value._name] = (value._type, frozenset(value._labelnames))
    return out


def _state_dir_families(tmp_path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    return {
        family.name: (family.type, frozenset(k for s in family.samples for k in s.labels))
        for family in StateDirCollector("worker", tmp_path).collect()
    }


def _check_against(
    rows: list[CatalogueMetric], declared: dict[str, tuple[str, frozenset[str]]], where: str
) -> None:
    by_family = {m.family: m for m in rows}
    undocumented = sorted(set(declared) - set(by_family))
    assert not undocumented, f"{where} exports metrics docs/metrics.md lacks: {undocumented}"
    for family, (kind, labels) in declared.items():
        row = by_family[family]
        assert kind == row.type, f"{row.name}: {where} says {kind}, docs/metrics.md {row.type}"
        assert labels == row.labels, (
            f"{row.name}: {where} labels {sorted(labels)}, docs/metrics.md {sorted(row.labels)}"
        )


def test_catalogue_rows_are_well_formed() -> None:
    rows = catalogue()
    assert len(rows) >= 20
    for m in rows.values():
        assert m.type in {"counter", "gauge", "histogram"}, m
        assert (m.type == "counter") == m.name.endswith("_total"), f"{m.name}: counters end _total"
        assert all(re.fullmatch(r"worker(/[a-z]+)?|serve", src) for src in m.sources), m
        assert not (m.labels & UNBOUNDED_LABELS), f"{m.name}: unbounded labels {m.labels}"


def test_worker_code_exports_exactly_the_catalogued_worker_metrics(tmp_path: Path) -> None:
    rows = [m for m in catalogue().values() if m.exported_by("worker")]
    declared = _declared(WorkerMetrics()) | _state_dir_families(tmp_path)
    _check_against(rows, declared, "the worker")
    # Rows of agents this tree has must be in the code; others arrive with their branch.
    missing = [m.name for m in rows if m.family not in declared
               and m.required_in("worker", AGENT_NAMES)]
    assert not missing, f"docs/metrics.md lists worker metrics the code lacks: {missing}"


def test_service_code_exports_exactly_the_catalogued_service_metrics(tmp_path: Path) -> None:
    if not read_service_merged():
        pytest.skip("`memstream serve` is not in this tree yet (read-service branch, issue 5)")
    from streams.service.core import ServiceMetrics

    # The state-dir gauges come from a collector the service registers when it starts:
    # the scrape test (tests/integration/test_metrics_scrape.py) checks those.
    state_dir = set(_state_dir_families(tmp_path))
    rows = [m for m in catalogue().values()
            if m.exported_by("serve") and m.family not in state_dir]
    declared = _declared(ServiceMetrics())
    _check_against(rows, declared, "the read service")
    missing = [m.name for m in rows if m.family not in declared and m.required_in("serve")]
    assert not missing, f"docs/metrics.md lists service metrics the code lacks: {missing}"


def _metric_refs(expr: str) -> list[tuple[str, set[str]]]:
    """(series name, label names matched) for every memstream series in a PromQL expression."""
    refs = []
    for match in re.finditer(r"\b(memstream_[a-z0-9_]+)(\{([^}]*)\})?", expr):
        matchers = match.group(3) or ""
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
        refs.append((match.group(1), labels))
    return refs


def _check_expr(expr: str, where: str) -> None:
    allowed = allowed_series()
    refs = _metric_refs(expr)
    for name, labels in refs:
        assert name in allowed, f"{where}: {name} is not in docs/metrics.md"
        unknown = labels - allowed[name].labels - IMPLICIT_LABELS
        assert not unknown, f"{where}: {name} has no labels {sorted(unknown)}"
    grouped = {label for group in re.findall(r"\bby\s*\(([^)]*)\)", expr)
               for label in re.split(r"\s*,\s*", group.strip()) if label}
    known = {label for name, _ in refs for label in allowed[name].labels} | IMPLICIT_LABELS
    assert grouped <= known, f"{where}: groups by {sorted(grouped - known)}, no such label"
    for topic in re.findall(r'topic\s*=~?\s*"([^"]+)"', expr):
        assert topic in TOPICS_BY_BASE, f"{where}: unknown topic {topic}"


def _alert_rules() -> list[dict]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alerts_use_only_catalogued_metrics_and_labels() -> None:
    rules = _alert_rules()
    for rule in rules:
        _check_expr(rule["expr"], f"alert {rule['alert']}")
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_alerts_cover_the_operational_risks() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    wanted = {
        "worker down": 'up{job="memstream-worker"}',
        "consumer lag": "memstream_consumer_lag",
        "dead letters": "memstream_dead_letters_total",
        "transaction aborts": 'memstream_transactions_total{outcome="abort"}',
        "embedding errors": "memstream_embed_errors_total",
        "transcription errors": "memstream_transcribe_errors_total",
        "recall p99": 'memstream_serve_request_seconds_bucket{route="/v1/recall"}',
        "index lag": "memstream_serve_lag_records",
        "state disk": "memstream_state_fs_free_bytes",
    }
    for risk, needle in wanted.items():
        assert any(needle in e for e in exprs.values()), f"no alert on {risk} ({needle})"
    lag = [r for r in _alert_rules() if "memstream_consumer_lag" in r["expr"]]
    assert any(r.get("for") == "10m" for r in lag), "lag alerts must hold for 10 minutes"


def test_prometheus_scrapes_worker_and_service() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"memstream-worker", "memstream-serve"} <= set(jobs)
    assert config["rule_files"] == ["alerts.yml"]
    for rule in _alert_rules():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, f"alert {rule['alert']} names job {job}, not scraped"


def _dashboard_targets() -> list[tuple[str, str]]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
    return found


def test_dashboards_use_only_catalogued_metrics() -> None:
    targets = _dashboard_targets()
    assert targets
    for where, expr in targets:
        _check_expr(expr, where)
    used = {name for _, expr in targets for name, _ in _metric_refs(expr)}
    for needle in ("memstream_events_in_total", "memstream_consumer_lag",
                   "memstream_dead_letters_total", "memstream_serve_request_seconds_bucket",
                   "memstream_embed_seconds_bucket", "memstream_transcribe_seconds_bucket"):
        assert needle in used, f"the dashboard shows nothing of {needle}"


def test_dashboards_use_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text("utf-8")
    )
    uids = {d["uid"] for d in provisioned["datasources"]}
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            if "datasource" in panel:
                assert panel["datasource"]["uid"] in uids, f"{path.name}: {panel['title']}"


@pytest.mark.skipif(_promtool() is None, reason="promtool not installed (.ci/run installs it)")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = _promtool()
    assert promtool is not None
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"],
                 ["check", "config", "prometheus.yml"]):
        result = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_alert_unit_tests_use_catalogued_series() -> None:
    doc = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text(encoding="utf-8"))
    for case in doc["tests"]:
        for series in case["input_series"]:
            _check_expr(series["series"], "alerts.test.yml")
