"""The alert rules (infra/prometheus/alerts.yml) pass `promtool check rules`, their unit tests
(alerts.test.yml) pass `promtool test rules`, and every alert is defined and tested both ways."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra/prometheus/alerts.yml"
RULE_TESTS = ROOT / "infra/prometheus/alerts.test.yml"
# The runbook's alerts: INC-001 to INC-004.
RUNBOOK_ALERTS = {
    "StellaEvidenceIntegrityFailure",
    "StellaEvidenceRetrievalFailed",
    "StellaMerkleAnchorChainBroken",
    "StellaEvidenceStorageFull",
}


def promtool() -> str:
    local = ROOT / ".tools/bin/promtool"
    if local.exists():
        return str(local)
    on_path = shutil.which("promtool")
    if on_path is None:
        pytest.fail("promtool is missing: run `bash infra/install-promtool.sh` (make test and make unit do)")
    return on_path


@pytest.mark.parametrize(("command", "path"), [("check", RULES), ("test", RULE_TESTS)])
def test_promtool_passes(command: str, path: Path) -> None:
    argv = [promtool(), command, "rules", str(path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout}{proc.stderr}"


def test_every_alert_is_defined_and_tested_firing_and_silent() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    defined = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert defined >= RUNBOOK_ALERTS, f"not defined: {RUNBOOK_ALERTS - defined}"
    assert defined <= firing, f"never expected to fire: {defined - firing}"
    assert defined <= silent, f"never expected to stay silent: {defined - silent}"
