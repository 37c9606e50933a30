"""``GET /metrics``: the Validator's statistics in Prometheus text format.

Rendered at scrape time from
:class:`~rayfleet.platform.rollout.controller.ValidatorCore` by a custom collector,
so the numbers come from one place: the same windows that drive the rollout gates
and ``/-/validation``. Counters are monotonic since the
Validator started; gauges describe the current window.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.machine import Phase
from rayfleet.platform.rollout.totals import LATENCY_BUCKETS_MS

__all__ = ["CONTENT_TYPE", "render_metrics", "replica_requests"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _ValidatorCollector(Collector):
    def __init__(self, core: ValidatorCore, now: float, window_s: float) -> None:
        self.core = core
        self.now = now
        self.window_s = window_s

    def collect(self) -> Iterator[Metric]:
        core, now = self.core, self.now
        labels = ["model", "version"]
        requests = CounterMetricFamily(
            "rayfleet_requests",
            "Requests by model, version and HTTP status.",
            labels=[*labels, "code"],
        )
        latency = HistogramMetricFamily(
            "rayfleet_request_latency_seconds",
            "End-to-end request latency at the router.",
            labels=labels,
        )
        window_latency = GaugeMetricFamily(
            "rayfleet_window_latency_ms",
            f"Latency quantiles over the last {self.window_s:g} s.",
            labels=[*labels, "quantile"],
        )
        error_rate = GaugeMetricFamily(
            "rayfleet_window_error_rate",
            f"5xx per request over the last {self.window_s:g} s.",
            labels=labels,
        )
        weight = GaugeMetricFamily(
            "rayfleet_traffic_weight", "Percent of unpinned traffic.", labels=labels
        )
        for (model, version), totals in core.totals.items():
            for code, count in sorted(totals.by_status.items()):
                requests.add_metric([model, version, str(code)], count)
            cumulative, buckets = 0, []
            for bound, count in zip(
                LATENCY_BUCKETS_MS, totals.latency_buckets, strict=False
            ):
                cumulative += count
                buckets.append((str(bound / 1000), cumulative))
            buckets.append(("+Inf", totals.latency_count))
            latency.add_metric([model, version], buckets, totals.latency_sum_ms / 1000)
            summary = core.stats[(model, version)].window(self.window_s, now).summary()
            for quantile, value in (("0.5", summary.p50_ms), ("0.99", summary.p99_ms)):
                if value is not None:
                    window_latency.add_metric([model, version, quantile], value)
            if summary.error_rate is not None:
                error_rate.add_metric([model, version], summary.error_rate)
        for model, plan in core.plans().items():
            for version, percent in plan.weights.items():
                weight.add_metric([model, version], percent)
        yield from (requests, latency, window_latency, error_rate, weight)
        yield from self._rollouts()
        dropped = CounterMetricFamily(
            "rayfleet_observations_dropped",
            "Observations routers dropped because their buffer was full.",
            labels=["router"],
        )
        for router, count in sorted(core.routers_dropped.items()):
            dropped.add_metric([router], count)
        ingested = CounterMetricFamily(
            "rayfleet_observations_ingested", "Observations the Validator took in."
        )
        ingested.add_metric([], core.ingested)
        history_failures = CounterMetricFamily(
            "rayfleet_history_write_failures",
            "Rollout events the store refused to record in a model's history.",
        )
        history_failures.add_metric([], core.history.write_failures)
        state_failures = CounterMetricFamily(
            "rayfleet_state_write_failures",
            "Rollout state saves the store refused: a restarted Validator would "
            "resume from an older state.",
        )
        state_failures.add_metric([], core.writer.state_failures)
        yield from (dropped, ingested, history_failures, state_failures)
        yield from self._replicas()

    def _replicas(self) -> Iterator[Metric]:
        labels = ["model", "version", "replica"]
        requests = CounterMetricFamily(
            "rayfleet_replica_requests",
            "Requests each replica took, as it last reported them; for versions "
            "placed in the router, the replica is the router's.",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "rayfleet_replica_errors",
            "Requests the replica failed (the model raised, or the batch could "
            "not be formed or split), per replica.",
            labels=labels,
        )
        batches = CounterMetricFamily(
            "rayfleet_replica_batches",
            "Model calls that returned, per replica, by the number of requests "
            "batched in them (a failed batch counts as the single calls it is "
            "retried as).",
            labels=[*labels, "size"],
        )
        for report in self.core.replicas.current(self.now):
            key = [report.model, report.version, report.replica]
            requests.add_metric(key, report.requests)
            errors.add_metric(key, report.errors)
            for size, count in sorted(report.batches.items()):
                batches.add_metric([*key, str(size)], count)
        yield from (requests, errors, batches)

    def _rollouts(self) -> Iterator[Metric]:
        core = self.core
        phase = GaugeMetricFamily(
            "rayfleet_rollout_phase",
            "1 for the rollout's current phase.",
            labels=["model", "version", "phase"],
        )
        psi = GaugeMetricFamily(
            "rayfleet_drift_score",
            "Input drift of the canary against its reference.",
            labels=["model", "version", "feature", "method"],
        )
        prediction = GaugeMetricFamily(
            "rayfleet_prediction_drift",
            "Canary predictions against stable's on the same window.",
            labels=["model", "version", "method"],
        )
        agreement = GaugeMetricFamily(
            "rayfleet_shadow_agreement",
            "Share of shadow pairs that agree.",
            labels=["model", "version"],
        )
        for model, state in core.rollouts.items():
            for candidate in Phase:
                value = 1.0 if candidate is state.phase else 0.0
                phase.add_metric([model, state.canary_version, candidate.value], value)
            comparison = core.comparison(model, self.now)
            if comparison is None:
                continue
            version = state.canary_version
            if comparison.input_drift is not None:
                for row in comparison.input_drift.features:
                    psi.add_metric([model, version, row.name, "psi"], row.psi)
                    psi.add_metric([model, version, row.name, "ks"], row.ks_statistic)
            drift = comparison.prediction_drift
            if drift is not None:
                scores: dict[str, float | None] = {"js": drift.js, "psi": drift.psi}
                for method, score in scores.items():
                    if score is not None:
                        prediction.add_metric([model, version, method], score)
            if comparison.agreement is not None:
                rate = comparison.agreement.rate
                if rate is not None:
                    agreement.add_metric([model, version], rate)
        yield from (phase, psi, prediction, agreement)


def render_metrics(core: ValidatorCore, now: float, window_s: float = 60.0) -> bytes:
    """The Prometheus text exposition of ``core`` at ``now``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ValidatorCollector(core, now, window_s))
    return generate_latest(registry)


def replica_requests(text: str, model: str, version: str) -> dict[str, float]:
    """Requests per replica of ``model``/``version`` in a ``/metrics`` page, as a
    scraper reads them (for checks of load balance)."""
    return {
        sample.labels["replica"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "rayfleet_replica_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
        and (sample.labels["model"], sample.labels["version"]) == (model, version)
    }
