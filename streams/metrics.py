"""The service's Prometheus metrics, kept and exposed by the Prometheus project's client.

Two sources:
- `Metrics`: counters and a histogram that move as the service works: what the loops carried out
  (each handler counts into its `Outbox.counts`; every dead letter is a rejection by reason) and
  the API's retrievals. They start at zero with the process; dashboards take their `rate()`.
- `Snapshot`: what the stores hold, read once per scrape and turned into gauges by the pure
  `families` (artifacts, bytes, free space, tree sizes, anchor age and chain, verification runs,
  each loop's lag and stage seconds).

Names are the runbook's (`stella_evidence_artifacts_total` and the others under "Metrics to
Watch"); `infra/prometheus/alerts.yml` and `infra/grafana/evidence-locker.json` query them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from projections.verification import RunState
from streams.runtime import Outbox

# What `Outbox.counts` may name, and the counter each becomes (with its one label).
COUNTED = {
    "ingested": ("stella_evidence_ingested", "Artifacts ingested (new blobs), by kind.", "kind"),
    "verifications": (
        "stella_evidence_verifications",
        "Artifact checks of verification runs, by outcome.",
        "outcome",
    ),
}
RETRIEVAL_OUTCOMES = (
    "ok",
    "not-found",
    "invalid",
    "unservable",
    "blob-missing",
    "integrity-mismatch",
    "error",
)
# Reading one blob back takes from well under a millisecond (cached, small) to seconds (large).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Snapshot:
    """What the stores hold at one scrape."""

    artifacts: int
    stored_bytes: int
    tree_sizes: Mapping[int, int]
    anchor_age: float | None
    unanchored: int = 0
    broken_links: int = 0
    integrity_failures: int = 0
    last_run: RunState | None = None
    free_bytes: int | None = None
    capacity_bytes: int | None = None
    reserve_bytes: int = 0
    lag: Mapping[str, Mapping[int, int]] = field(default_factory=dict)  # loop -> partition -> records
    loop_seconds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # loop -> stage -> s


def families(s: Snapshot) -> Iterator[Metric]:
    """The gauges (and store-kept counters) of a snapshot. Pure."""
    yield _gauge("stella_evidence_artifacts_total", "Artifacts in the index.", s.artifacts)
    yield _gauge("stella_evidence_storage_bytes", "Bytes of the indexed artifacts.", s.stored_bytes)
    yield _gauge(
        "stella_evidence_storage_free_bytes", "Free bytes on the blob store's file system.", s.free_bytes
    )
    yield _gauge(
        "stella_evidence_storage_capacity_bytes", "Size of the blob store's file system.", s.capacity_bytes
    )
    yield _gauge(
        "stella_evidence_storage_reserve_bytes",
        "Free bytes ingest keeps (it refuses new artifacts with storage-full below them).",
        s.reserve_bytes,
    )
    trees = GaugeMetricFamily(
        "stella_merkle_tree_size", "Leaves in each events partition's Merkle tree.", labels=["partition"]
    )
    for partition, size in sorted(s.tree_sizes.items()):
        trees.add_metric([str(partition)], size)
    yield trees
    yield _gauge(
        "stella_merkle_anchor_age_seconds", "Seconds since the latest anchor was created.", s.anchor_age
    )
    yield _gauge(
        "stella_merkle_unanchored_records",
        "Events logged since the latest anchor (the anchor does not cover them yet).",
        s.unanchored,
    )
    yield _gauge(
        "stella_merkle_anchor_chain_broken_links",
        "Anchors of the latest anchor's chain that fail their checks (signature, link), and unreadable "
        "records since that chain began: 0 when the chain verifies.",
        s.broken_links,
    )
    failures = CounterMetricFamily(
        "stella_evidence_integrity_failures", "Failed artifact checks, all verification runs."
    )
    failures.add_metric([], s.integrity_failures)
    yield failures
    yield from _last_run(s.last_run)
    lag = GaugeMetricFamily(
        "stella_projection_lag_records",
        "Records on each partition a loop has not yet carried out (applied, for projections).",
        labels=["loop", "partition"],
    )
    for loop, partitions in sorted(s.lag.items()):
        for partition, records in sorted(partitions.items()):
            lag.add_metric([loop, str(partition)], records)
    yield lag
    stages = CounterMetricFamily(
        "stella_loop_stage_seconds",
        "Wall seconds each batch loop spent in each stage.",
        labels=["loop", "stage"],
    )
    for loop, seconds in sorted(s.loop_seconds.items()):
        for stage, spent in seconds.items():
            stages.add_metric([loop, stage], spent)
    yield stages


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    """A gauge without labels; no sample when the value is unknown."""
    gauge = GaugeMetricFamily(name, documentation)
    if value is not None:
        gauge.add_metric([], value)
    return gauge


def _last_run(run: RunState | None) -> Iterator[Metric]:
    """When the last verification run completed, and its artifacts by outcome."""
    last = "stella_evidence_verification_last_run"
    when = GaugeMetricFamily(f"{last}_timestamp_seconds", "When the last run completed.", labels=["mode"])
    artifacts = GaugeMetricFamily(
        f"{last}_artifacts", "Artifacts of the last completed run, by outcome.", labels=["mode", "outcome"]
    )
    if run is not None and run.completed_at is not None:
        when.add_metric([run.mode], run.completed_at.timestamp())
        counts = {
            "ok": run.ok,
            "mismatch": run.mismatch,
            "missing": run.missing,
            "unreadable": run.unreadable,
        }
        for outcome, n in counts.items():
            artifacts.add_metric([run.mode, outcome], n)
    yield when
    yield artifacts


class Metrics:
    """The service's registry: its event counters, and the stores' gauges read at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._counted = {
            key: Counter(name, doc, [label], registry=self.registry)
            for key, (name, doc, label) in COUNTED.items()
        }
        self.rejected = Counter(
            "stella_evidence_rejected",
            "Records refused and sent to the dead-letter topic, by loop and reason.",
            ["loop", "reason"],
            registry=self.registry,
        )
        self.retrievals = Counter(
            "stella_evidence_retrievals",
            "GET /artifacts/{id} answers, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.retrieval_latency = Histogram(
            "stella_evidence_retrieval_latency_seconds",
            "Seconds to answer GET /artifacts/{id} with the artifact's bytes (checked on the way).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        for outcome in RETRIEVAL_OUTCOMES:  # every outcome has a series from the start, at 0
            self.retrievals.labels(outcome)

    def carried_out(self, loop: str, out: Outbox) -> None:
        """Count what a loop's batch did, once it is published and applied."""
        for (key, label), n in out.counts.items():
            self._counted[key].labels(label).inc(n)
        for _, letter in out.dead:
            self.rejected.labels(loop, letter.reason).inc()

    def render(self, snapshot: Snapshot) -> bytes:
        """The exposition of every metric, with the stores as `snapshot` says."""
        return generate_latest(_With(self.registry, snapshot))


class _With(Collector):
    """The registry's metrics and a snapshot's, as one collector to render."""

    def __init__(self, registry: CollectorRegistry, snapshot: Snapshot) -> None:
        self._registry, self._snapshot = registry, snapshot

    def collect(self) -> Iterable[Metric]:
        yield from self._registry.collect()
        yield from families(self._snapshot)
