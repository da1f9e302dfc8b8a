"""The alert rules are real and tested: the single host's `deploy/prometheus/whisper-alerts.yml` and the Kubernetes
PrometheusRule's `spec` pass `promtool check rules` (and `prometheus.yml` `promtool check config`), their unit tests
(`tests/deploy/alerts/*.test.yml`, run by `promtool test rules`) pass, and every alert has a case where it fires and
one where it stays quiet. Every metric a rule or a unit test names is exported by the proxy or a service (their real
registries) or is one of the few external ones; every alert links to a runbook section of the guide that exists in
the built site and says what the alert means, how to confirm it and what to do."""
from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.wiring import known_metrics, promql_metric_names
from tests.support import require

ROOT = Path(__file__).resolve().parents[2]
SINGLE_HOST_RULES = ROOT / "deploy" / "prometheus" / "whisper-alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
KUBERNETES_RULE = ROOT / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"
UNIT_TESTS = ROOT / "tests" / "deploy" / "alerts"
RUNBOOKS_PAGE = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://whisper-guide.example.com/"
RUNBOOK_PARTS = ("**What it means.**", "**How to confirm.**", "**What to do.**")


@dataclass(frozen=True)
class Rule:
    where: str
    alert: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]


def promtool() -> str:
    found = shutil.which("promtool")
    require(found is not None, "promtool (apt-get install prometheus; scripts/install-system-deps.sh installs it)")
    assert found is not None
    return found


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def kubernetes_spec() -> dict[str, Any]:
    rule = yaml.safe_load(KUBERNETES_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    return dict(rule["spec"])


def rules_of(groups: dict[str, Any], where: str) -> list[Rule]:
    return [
        Rule(where, rule["alert"], str(rule["expr"]), dict(rule.get("labels", {})), dict(rule.get("annotations", {})))
        for group in groups["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def all_rules() -> list[Rule]:
    return [
        *rules_of(yaml.safe_load(SINGLE_HOST_RULES.read_text()), "deploy/prometheus/whisper-alerts.yml"),
        *rules_of(kubernetes_spec(), "PrometheusRule whisper"),
    ]


@pytest.fixture(scope="module")
def kubernetes_test_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's spec as a plain rule file, beside a copy of its unit tests."""
    directory = tmp_path_factory.mktemp("kubernetes-rules")
    (directory / "kubernetes-rules.yml").write_text(yaml.safe_dump(kubernetes_spec(), sort_keys=False))
    shutil.copy(UNIT_TESTS / "kubernetes.test.yml", directory / "kubernetes.test.yml")
    return directory


# --- promtool ---------------------------------------------------------------------------------------------------


def test_single_host_rules_and_config_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", str(SINGLE_HOST_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    # The config names the rule file beside it, which promtool checks again from there.
    result = run_promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_kubernetes_rules_pass_promtool_check(kubernetes_test_dir: Path) -> None:
    result = run_promtool("check", "rules", str(kubernetes_test_dir / "kubernetes-rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_single_host_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", "single-host.test.yml", cwd=UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_unit_tests_pass(kubernetes_test_dir: Path) -> None:
    result = run_promtool("test", "rules", "kubernetes.test.yml", cwd=kubernetes_test_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    # The unit tests can fail: the single-host rules without the first-failure branches miss a wake failure whose
    # counter series appears with 1 (increase() over it is 0).
    (tmp_path / "deploy" / "prometheus").mkdir(parents=True)
    broken = "\n".join(line for line in SINGLE_HOST_RULES.read_text().splitlines() if "_created" not in line)
    (tmp_path / "deploy" / "prometheus" / "whisper-alerts.yml").write_text(broken)
    tests_dir = tmp_path / "tests" / "deploy" / "alerts"
    tests_dir.mkdir(parents=True)
    shutil.copy(UNIT_TESTS / "single-host.test.yml", tests_dir)
    result = run_promtool("test", "rules", "single-host.test.yml", cwd=tests_dir)
    assert result.returncode != 0
    assert "WhisperWakeFailed" in result.stdout + result.stderr


# --- coverage of the unit tests -----------------------------------------------------------------------------------


def unit_cases(test_file: Path) -> list[tuple[str, list[dict[str, Any]], list[str]]]:
    """(alertname, expected alerts, input series) of every alert_rule_test."""
    cases = []
    for group in yaml.safe_load(test_file.read_text())["tests"]:
        series = [entry["series"] for entry in group.get("input_series", [])]
        for case in group.get("alert_rule_test", []):
            cases.append((case["alertname"], list(case.get("exp_alerts") or []), series))
    return cases


@pytest.mark.parametrize(
    ("rules_where", "test_file"),
    [("deploy/prometheus/whisper-alerts.yml", "single-host.test.yml"), ("PrometheusRule whisper", "kubernetes.test.yml")],
)
def test_every_alert_fires_in_a_unit_test_and_stays_quiet_in_another(rules_where: str, test_file: str) -> None:
    cases = unit_cases(UNIT_TESTS / test_file)
    rules = [rule for rule in all_rules() if rule.where == rules_where]
    assert rules
    problems = []
    for rule in rules:
        fired = any(
            name == rule.alert and any(rule.labels.items() <= dict(expected.get("exp_labels", {})).items()
                                       for expected in alerts)
            for name, alerts, _ in cases
        )
        quiet = any(name == rule.alert and not alerts for name, alerts, _ in cases)
        if not fired:
            problems.append(f"{rule.alert} {rule.labels}: no case where it fires")
        if not quiet:
            problems.append(f"{rule.alert}: no case where it stays quiet")
    unknown = {name for name, _, _ in cases} - {rule.alert for rule in rules}
    assert not unknown, f"{test_file} tests alerts that {rules_where} does not have: {sorted(unknown)}"
    assert not problems, problems


# --- metric names -------------------------------------------------------------------------------------------------


def test_every_metric_a_rule_names_is_exported() -> None:
    known = known_metrics()
    problems = [
        f"{rule.where} {rule.alert}: {name}"
        for rule in all_rules()
        for name in sorted(promql_metric_names(rule.expr) - known)
    ]
    assert not problems, f"metrics no component exports: {problems}"


def test_every_series_a_unit_test_feeds_is_exported() -> None:
    # A unit test fed with a made-up series would prove nothing about the real one.
    known = known_metrics()
    problems = [
        f"{test_file.name}: {series}"
        for test_file in sorted(UNIT_TESTS.glob("*.test.yml"))
        for _, _, all_series in unit_cases(test_file)
        for series in all_series
        if series.split("{", 1)[0].strip() not in known
    ]
    assert not problems, sorted(set(problems))


def test_the_metric_check_catches_a_misspelt_name() -> None:
    assert "whisper_faster_jobs_oldest_queued_age_second" in promql_metric_names(
        "max(whisper_faster_jobs_oldest_queued_age_second) > 900"
    )
    assert "whisper_faster_jobs_oldest_queued_age_second" not in known_metrics()
    assert {"autostart_wakes_created", "whisper_faster_jobs", "whisperx_webhook_deliveries_created"} <= known_metrics()


# --- runbooks -----------------------------------------------------------------------------------------------------


def runbook_sections(page: str) -> dict[str, str]:
    """Heading (`## Name`) -> the text of its section."""
    parts = re.split(r"^## (\S+)\s*$", page, flags=re.M)
    return {parts[index]: parts[index + 1] for index in range(1, len(parts), 2)}


@pytest.fixture(scope="module")
def built_runbooks(tmp_path_factory: pytest.TempPathFactory) -> str:
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return (site / "runbooks" / "index.html").read_text()


def test_every_alert_links_to_a_runbook_that_exists_in_the_built_site(built_runbooks: str) -> None:
    anchors = set(re.findall(r'\bid="([^"]+)"', built_runbooks))
    sections = runbook_sections(RUNBOOKS_PAGE.read_text())
    problems = []
    for rule in all_rules():
        url = rule.annotations.get("runbook_url", "")
        expected = f"{RUNBOOK_BASE}runbooks/#{rule.alert.lower()}"
        if url != expected:
            problems.append(f"{rule.where} {rule.alert}: runbook_url {url!r}, expected {expected!r}")
            continue
        if rule.alert not in sections:
            problems.append(f"{rule.alert}: no '## {rule.alert}' section in docs/runbooks.md")
        if html.unescape(url.rsplit("#", 1)[1]) not in anchors:
            problems.append(f"{rule.alert}: anchor #{rule.alert.lower()} is not in the built runbooks page")
    assert not problems, problems


def test_every_runbook_section_says_what_it_means_how_to_confirm_and_what_to_do() -> None:
    sections = runbook_sections(RUNBOOKS_PAGE.read_text())
    alerts = {rule.alert for rule in all_rules()}
    assert set(sections) == alerts, (
        f"sections without an alert: {sorted(set(sections) - alerts)}; alerts without a section: {sorted(alerts - set(sections))}"
    )
    missing = [f"{name}: {part}" for name, text in sections.items() for part in RUNBOOK_PARTS if part not in text]
    assert not missing, missing


def test_the_runbook_check_catches_a_missing_section() -> None:
    page = RUNBOOKS_PAGE.read_text()
    without = re.sub(r"^## WhisperJobsStuck$.*?(?=^## )", "", page, flags=re.M | re.S)
    assert "WhisperJobsStuck" in runbook_sections(page)
    assert "WhisperJobsStuck" not in runbook_sections(without)


def test_the_monitoring_page_embeds_the_shipped_files() -> None:
    page = (ROOT / "docs" / "monitoring.md").read_text()
    assert '--8<-- "deploy/prometheus/whisper-alerts.yml"' in page
    assert '--8<-- "deploy/prometheus/prometheus.yml"' in page
    assert "alert: Whisper" not in page.replace('--8<-- "deploy/prometheus/whisper-alerts.yml"', ""), (
        "rules written inline in docs/monitoring.md drift from the shipped file: embed it"
    )
