"""The Grafana dashboard (infra/grafana/evidence-locker.json) has the runbook's five panels, and it
and the alert rules (infra/prometheus/alerts.yml) query only series a running locker exports."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from locker.config import Settings
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import produce, scrape, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra/grafana/evidence-locker.json"
ALERTS = ROOT / "infra/prometheus/alerts.yml"
# The runbook's "Monitoring Dashboard" panels, in order.
PANELS = [
    "Artifact ingestion rate",
    "Retrieval latency",
    "Storage utilization trend",
    "Integrity check status",
    "Anchor chain health",
]
# The locker's metric names in a PromQL expression. A query names series as they are exposed (a
# histogram's `..._bucket`), and so do the exposition's sample names: they compare as they are.
METRIC = re.compile(r"\bstella_[a-z0-9_]+")


def metric_names(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC.findall(expr)}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert [panel["title"] for panel in panels] == PANELS
    for panel in panels:
        assert panel["targets"], f"{panel['title']}: no queries"
        for target in panel["targets"]:
            assert target.get("expr"), f"{panel['title']}: a query without an expression: {target}"
    return [target["expr"] for panel in panels for target in panel["targets"]]


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_dashboard_has_the_runbooks_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert (dashboard["uid"], dashboard["title"], dashboard["tags"]) == (
        "stella-evidence-locker",
        "Evidence Locker",
        ["stella-ops"],
    )
    [source] = dashboard["templating"]["list"]  # the Prometheus data source, picked on the dashboard
    assert (source["name"], source["type"], source["query"]) == ("datasource", "datasource", "prometheus")
    assert all(metric_names([expr]) for expr in dashboard_exprs())


def test_dashboard_and_alerts_query_only_exported_series(anchoring: Settings, tmp_path: Path) -> None:
    queried = {"dashboard": metric_names(dashboard_exprs()), "alerts": metric_names(alert_exprs())}
    # Samples for everything that has none on a new locker: an ingest, a rejected submission, a
    # retrieval, a completed verification run and an anchor.
    sbom = tmp_path / "app.cdx.json"
    sbom.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6"}))
    out = run_cli("evidence", "ingest", str(sbom), "--kind", "sbom", "--format", "json")
    artifact = f"{anchoring.api_url}/artifacts/{json.loads(out.stdout)[0]['artifact_id']}"
    # The CLI waits for the event; the service's index folds it a moment later.
    wait_for(lambda: served(f"{artifact}/meta"), what="the artifact in the service's index")
    with urllib.request.urlopen(artifact, timeout=10) as response:
        assert response.read() == sbom.read_bytes()
    submissions = Topics(anchoring.topic_prefix).submissions
    asyncio.run(produce(anchoring, submissions, [(b"junk", b"not a submission")]))
    wait_for(
        lambda: any(k.startswith("stella_evidence_rejected_total{") for k in scrape(anchoring)),
        what="the refusal",
    )
    run_cli("evidence", "verify", "--mode", "full")
    run_cli("evidence", "anchor", "create")
    wait_for(lambda: served(f"{anchoring.api_url}/anchors/latest"), what="the anchor in the service's chain")

    with urllib.request.urlopen(f"{anchoring.api_url}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    exported = {s.name for family in text_string_to_metric_families(exposition) for s in family.samples}
    missing = {source: sorted(names - exported) for source, names in queried.items() if names - exported}
    assert not missing, f"queried but not on /metrics: {missing}"


def served(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10):
            return True
    except urllib.error.HTTPError:
        return False
