"""promtool checks the Prometheus config, the alert rules and their unit tests.

`promtool check config` and `check rules` parse deploy/prometheus/; `promtool test rules`
runs deploy/prometheus/tests/conveyor.test.yml, where every alert has a case that fires and
cases that must not. Negative tests show the harness fails: a broken expression, and rule
thresholds changed so the unit tests no longer hold. The dashboards' expressions are parsed
by promtool too (as recording rules). promtool is a local binary and needs no service, so
this lives with the unit tests; `./dev test` installs it (Debian's prometheus package).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_dashboards import dashboard_exprs, load

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules" / "conveyor.yml"
RULE_TESTS = PROMETHEUS_DIR / "tests" / "conveyor.test.yml"
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
ALERTS = {
    "ConveyorBacklogAgeOverTarget",
    "ConveyorAgentFailureRateHigh",
    "ConveyorWorkerPoolDown",
    "ConveyorExporterDown",
    "ConveyorBeatLeaderMissing",
    "ConveyorDeadLetters",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (./dev test installs Debian's prometheus package)")
    return found


def run(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


# -- the real files --------------------------------------------------------------------------


def test_check_config(promtool: str) -> None:
    result = run(promtool, "check", "config", CONFIG)
    assert_ok(result)
    # rule_files (rules/*.yml, relative to the config) found the rule file and nothing else.
    assert "1 rule files found" in result.stdout, result.stdout
    assert "Checking " + str(PROMETHEUS_DIR / "rules" / "conveyor.yml") in result.stdout


def test_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", RULES)
    assert_ok(result)
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout


def test_rule_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS)
    assert_ok(result)
    assert "SUCCESS" in result.stdout, result.stdout


def test_scrape_config() -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["rules/*.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "conveyor"  # ConveyorExporterDown selects up{job="conveyor"}
    assert job["static_configs"] == [{"targets": ["conveyor-exporter:9810"]}]


def test_every_alert_has_for_severity_and_annotations() -> None:
    found = {str(rule["alert"]) for rule in rules()}
    assert found == ALERTS
    for rule in rules():
        assert re.fullmatch(r"\d+m", str(rule.get("for"))), rule["alert"]
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels["severity"] in ("warning", "critical"), rule["alert"]
        assert annotations["summary"] and annotations["description"], rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    spec = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert spec["rule_files"] == ["../rules/conveyor.yml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in spec["tests"]:
        for check in case.get("alert_rule_test", []):
            if check.get("exp_alerts"):
                fires.add(check["alertname"])
                for alert in check["exp_alerts"]:
                    assert alert["exp_labels"]["severity"], check["alertname"]
                    assert set(alert["exp_annotations"]) == {"summary", "description"}
            else:
                quiet.add(check["alertname"])
    assert fires == ALERTS, "alerts without a firing case: " + str(ALERTS - fires)
    assert quiet == ALERTS, "alerts without a non-firing case: " + str(ALERTS - quiet)


# -- the harness can fail ----------------------------------------------------------------------


def copy_with(tmp_path: Path, old: str, new: str) -> Path:
    """deploy/prometheus copied to tmp_path with one change in the rule file."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    text = RULES.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    (copy / "rules" / "conveyor.yml").write_text(text.replace(old, new), encoding="utf-8")
    return copy


def test_check_rules_fails_on_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    copy = copy_with(
        tmp_path,
        "max by (pool) (conveyor_pool_workers) == 0",
        "max by (pool) (conveyor_pool_workers == 0",
    )
    result = run(promtool, "check", "rules", copy / "rules" / "conveyor.yml")
    assert result.returncode != 0, result.stdout
    assert "ConveyorWorkerPoolDown" in result.stdout + result.stderr
    assert run(promtool, "check", "config", copy / "prometheus.yml").returncode != 0


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max by (pool) (conveyor_pool_target_drain_seconds)",
         "2 * max by (pool) (conveyor_pool_target_drain_seconds)"),
        ("            > on (pool)", "            >= on (pool)"),  # at the target would fire
        (") > 0.05", ") > 0.03"),  # the 4 % agent would fire
        ("for: 10m", "for: 5m"),  # failure rate: fires before its 10 minutes
        ("max by (pool) (conveyor_pool_desired_replicas) > 0",
         "max by (pool) (conveyor_pool_desired_replicas) >= 0"),  # desired 0 would fire
        ('up{job="conveyor"} == 0', 'up{job="conveyor"} < 1 and up{job="conveyor"} > 1'),
        ("max(conveyor_beat_leader_age_seconds) > 120",
         "max(conveyor_beat_leader_age_seconds) > 300"),
        ("for: 2m", "for: 1m"),  # beat: fires before the test says it may
    ],
    ids=[
        "backlog-target",
        "backlog-boundary",
        "failure-rate",
        "failure-for",
        "pool-down",
        "exporter-down",
        "beat-age",
        "beat-for",
    ],
)  # fmt: skip
def test_rule_unit_tests_catch_a_changed_rule(
    promtool: str, tmp_path: Path, old: str, new: str
) -> None:
    copy = copy_with(tmp_path, old, new)
    assert_ok(run(promtool, "check", "rules", copy / "rules" / "conveyor.yml"))
    result = run(promtool, "test", "rules", copy / "tests" / "conveyor.test.yml")
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr


# -- the dashboards' PromQL parses -----------------------------------------------------------

DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by what they expand to."""
    return VARIABLE.sub(lambda m: DURATIONS.get(m.group(1) or m.group(2), ".*"), expr)


def dashboard_rule_file(tmp_path: Path, extra: tuple[str, ...] = ()) -> Path:
    exprs = [
        promql(expr)
        for path in sorted(DASHBOARD_DIR.glob("*.json"))
        for expr in dashboard_exprs(load(path), path.name).values()
    ]
    records = [
        {"record": f"dashboard:expr_{i}", "expr": expr} for i, expr in enumerate([*exprs, *extra])
    ]
    assert len(records) > 15
    path = tmp_path / "dashboards.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": records}]}))
    return path


def test_dashboard_expressions_parse(promtool: str, tmp_path: Path) -> None:
    assert_ok(run(promtool, "check", "rules", dashboard_rule_file(tmp_path)))


def test_a_dashboard_expression_that_does_not_parse_fails(promtool: str, tmp_path: Path) -> None:
    broken = dashboard_rule_file(tmp_path, ("sum by (pool (conveyor_pool_workers)",))
    assert run(promtool, "check", "rules", broken).returncode != 0
