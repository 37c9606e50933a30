"""``GET /metrics``: the Validator's statistics in Prometheus text format.

Rendered at scrape time from
:class:`~rayfleet.platform.rollout.controller.ValidatorCore` by a custom collector,
so the numbers come from one place: the same windows that drive the rollout gates
and ``/-/validation``. Counters are monotonic since the
Validator started; gauges describe the current window or the rollouts' state.
``deploy/grafana/rayfleet.json`` and ``deploy/prometheus/rules.yaml`` read these
names (a unit test keeps them to what is rendered here).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from rayfleet.platform.requestlog.writer import DROP_REASONS
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.machine import Phase
from rayfleet.platform.serving.pool import UNLOAD_REASONS
from rayfleet.platform.validation.drift import DriftReport, feature_drift
from rayfleet.platform.validation.totals import LATENCY_BUCKETS_MS
from rayfleet.platform.validation.window import VersionStats

__all__ = ["CONTENT_TYPE", "render_metrics", "replica_requests"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# How a rollout can end: the values ``ValidatorCore.finished`` records.
_OUTCOMES = (Phase.PROMOTED, Phase.ROLLED_BACK)


class _ValidatorCollector(Collector):
    def __init__(self, core: ValidatorCore, now: float, window_s: float) -> None:
        self.core = core
        self.now = now
        self.window_s = window_s
        # Merging a window's buckets is the costly part of a scrape: each
        # version's is merged once, for its summary and its input drift alike.
        self._windows: dict[tuple[str, str], VersionStats] = {}

    def _window(self, key: tuple[str, str]) -> VersionStats:
        if key not in self._windows:
            stats = self.core.stats[key]
            self._windows[key] = stats.window(self.window_s, self.now)
        return self._windows[key]

    def collect(self) -> Iterator[Metric]:
        core = self.core
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
            summary = self._window((model, version)).summary()
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
            "Observations routers lost: flushes the Validator did not take.",
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
        yield from self._request_logs()
        yield from self._replicas()
        yield from self._pools()

    def _request_logs(self) -> Iterator[Metric]:
        rows = CounterMetricFamily(
            "rayfleet_request_log_rows",
            "Rows each router wrote to its request log in the store.",
            labels=["router"],
        )
        dropped = CounterMetricFamily(
            "rayfleet_request_log_dropped",
            "Rows of sampled requests each router did not log, by reason: full "
            "(its buffer's byte bound), store (the store refused their part), "
            "shape (tensors without a shared batch dimension; counted per request).",
            labels=["router", "reason"],
        )
        failures = CounterMetricFamily(
            "rayfleet_request_log_write_failures",
            "Request log parts the store refused, per router.",
            labels=["router"],
        )
        for router, counts in sorted(self.core.request_logs.items()):
            rows.add_metric([router], counts.rows)
            failures.add_metric([router], counts.write_failures)
            for reason in DROP_REASONS:
                dropped.add_metric([router, reason], counts.dropped.get(reason, 0))
        yield from (rows, dropped, failures)

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
        info = GaugeMetricFamily(
            "rayfleet_replica_info",
            "1 per replica, labelled with what it really runs its version on: "
            "the onnxruntime execution provider (CPUExecutionProvider after a "
            "fallback from CUDA; the replica's log says why), or python or "
            "remote for runtimes that pick their own device; whether the "
            "version asked for a GPU; and the replica's Ray node.",
            labels=[*labels, "provider", "gpu_requested", "node_id"],
        )
        for report in self.core.replicas.current(self.now):
            key = [report.model, report.version, report.replica]
            requests.add_metric(key, report.requests)
            errors.add_metric(key, report.errors)
            for size, count in sorted(report.batches.items()):
                batches.add_metric([*key, str(size)], count)
            if report.provider:  # empty from a replica too old to say
                gpu = "true" if report.gpu_requested else "false"
                info.add_metric([*key, report.provider, gpu, report.node_id], 1)
        yield from (requests, errors, batches, info)

    def _pools(self) -> Iterator[Metric]:
        labels = ["pool", "replica"]
        versions = GaugeMetricFamily(
            "rayfleet_pool_loaded_versions",
            "Versions each replica of a pool holds loaded now (a version still "
            "loading is not counted): what max_loaded_versions bounds.",
            labels=labels,
        )
        size = GaugeMetricFamily(
            "rayfleet_pool_loaded_bytes",
            "Bytes in the store of the versions each replica of a pool holds "
            "loaded now: what max_loaded_bytes bounds.",
            labels=labels,
        )
        held = GaugeMetricFamily(
            "rayfleet_pool_version_loaded",
            "1 per version a replica of a pool holds loaded now.",
            labels=[*labels, "model", "version"],
        )
        loads = CounterMetricFamily(
            "rayfleet_pool_loads",
            "Versions each replica of a pool loaded, from the store and warmed "
            "up, on a request for a version it did not hold.",
            labels=labels,
        )
        failures = CounterMetricFamily(
            "rayfleet_pool_load_failures",
            "Loads of a version that raised, per replica of a pool; the requests "
            "waiting for the load failed with it.",
            labels=labels,
        )
        seconds = CounterMetricFamily(
            "rayfleet_pool_load_seconds",
            "Seconds each replica of a pool spent in the loads that succeeded; "
            "over rayfleet_pool_loads_total, the time one load takes.",
            labels=labels,
        )
        unloads = CounterMetricFamily(
            "rayfleet_pool_unloads",
            "Versions each replica of a pool unloaded, by reason: count (to load "
            "another within max_loaded_versions), bytes (within max_loaded_bytes), "
            "idle (unused for unload_after_s).",
            labels=[*labels, "reason"],
        )
        waits = CounterMetricFamily(
            "rayfleet_pool_load_waits",
            "Requests that found their version not loaded on the replica of a "
            "pool they reached, and waited for it to load.",
            labels=labels,
        )
        for report in self.core.pools.current(self.now):
            key = [report.pool, report.replica]
            versions.add_metric(key, len(report.loaded))
            size.add_metric(key, report.loaded_bytes)
            for model, version in sorted(report.loaded):
                held.add_metric([*key, model, version], 1)
            loads.add_metric(key, report.loads)
            failures.add_metric(key, report.load_failures)
            seconds.add_metric(key, report.load_seconds)
            # Every reason from the first report on, so rate() sees each start.
            for reason in sorted({*UNLOAD_REASONS, *report.unloads}):
                unloads.add_metric([*key, reason], report.unloads.get(reason, 0))
            waits.add_metric(key, report.load_waits)
        yield from (versions, size, held, loads, failures, seconds, unloads, waits)

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
        step_start = GaugeMetricFamily(
            "rayfleet_rollout_step_start_time_seconds",
            "Unix time the unfinished rollout's current step (or its wait for a "
            "ready canary) began.",
            labels=["model", "version"],
        )
        finished = GaugeMetricFamily(
            "rayfleet_rollouts_finished",
            "Canary versions whose rollout ended, by outcome, as the store "
            "records them.",
            labels=["model", "outcome"],
        )
        for model, outcomes in core.finished.items():
            for outcome in _OUTCOMES:
                count = sum(1 for done in outcomes.values() if done == outcome.value)
                finished.add_metric([model, outcome.value], count)
        rolling: set[str] = set()
        # Input drift of each promoted canary that is stable now, as measured here.
        promoted: dict[str, DriftReport | None] = {}
        for model, state in core.rollouts.items():
            for candidate in Phase:
                value = 1.0 if candidate is state.phase else 0.0
                phase.add_metric([model, state.canary_version, candidate.value], value)
            if not state.finished:
                rolling.add(model)
                step_start.add_metric(
                    [model, state.canary_version], state.step_started_at
                )
            comparison = core.comparison(model, self.now)
            if comparison is None:
                continue
            version = state.canary_version
            if state.finished and version == core.stable[model]:
                promoted[model] = comparison.input_drift
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
        yield from (phase, step_start, finished, psi, prediction, agreement)
        yield self._stable_drift(rolling, promoted)

    def _stable_drift(
        self, rolling: set[str], promoted: Mapping[str, DriftReport | None]
    ) -> Metric:
        """Each stable version's input drift, at most one test per model a scrape.

        A test costs seconds on wide inputs (64 features, 540 reference rows: 2 s),
        so none is added while a canary rolls out (its own drift, on the same
        traffic, is the one measured then), and a promoted canary's drift, just
        measured by its rollout's comparison, is not measured again.
        """
        share = GaugeMetricFamily(
            "rayfleet_stable_input_drift_share",
            "Share of the stable version's input features drifted against its "
            "reference (KS at the observations' alpha, Bonferroni-corrected), "
            "while no canary of the model rolls out: over its promotion's last "
            f"step when it was promoted, else the last {self.window_s:g} s.",
            labels=["model", "version"],
        )
        core = self.core
        for model, version in core.stable.items():
            if model in rolling:
                continue
            if model in promoted:
                report = promoted[model]
            else:
                report = self._drift((model, version))
            if report is not None:
                share.add_metric([model, version], report.drifted_share)
        return share

    def _drift(self, key: tuple[str, str]) -> DriftReport | None:
        """The version's window against its reference; None, as for a canary,
        without a reference or a shared feature (no test, and no zero to mislead)."""
        reference = self.core.references.get(key)
        if reference is None:
            return None
        current = self._window(key).feature_columns()
        if not any(name in current for name in reference):
            return None
        return feature_drift(reference, current, self.core.spec.observations.alpha)


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
