"""``/metrics`` gauges of the rollouts' state: the current step's start, finished
rollouts by outcome, and the stable version's input drift; and
:func:`rolled_out_core`, a Validator that has seen a whole rollout, whose page the
deploy tests read."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rayfleet.platform.requestlog.writer import RequestLogCounts
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.rollout.telemetry import render_metrics
from rayfleet.platform.runtimes.device import CPU, CUDA
from rayfleet.platform.serving.counters import PoolReport, ReplicaReport
from rayfleet.platform.validation.observation import Observation, ObservationRow
from tests.observations import ingest_rows
from tests.unit.platform.rollout.test_controller import READY, platform, serve
from tests.unit.platform.rollout.test_history import T0, roll_back_v2

# Both features of every reference: the same 200 evenly spread values.
FEATURE = np.linspace(-2.0, 2.0, 200)
REFERENCES = {
    key: {"f0": FEATURE, "f1": FEATURE}
    for key in (("digits", "v1"), ("digits", "v3"), ("iris", "v1"))
}
SERVED_S = 20

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _inputs(at: float) -> list[ObservationRow]:
    """200 requests to each stable v1, those of digits shadowed to v3 and
    answered alike. The stables' f0 lies far off its reference (f1 is the
    reference itself); v3's inputs are its reference."""
    requests = (
        ("digits", "v1", None, 10.0),
        ("digits", "v3", "v1", 0.0),
        ("iris", "v1", None, 10.0),
    )
    return [
        Observation(
            model=model,
            version=version,
            ts=at,
            latency_ms=5.0,
            model_ms=4.0,
            status=200,
            features=(float(value + shift), float(value)),
            prediction=float(i % 2),
            shadow_of=shadow_of,
            request_id=f"{model}-{i}",
        ).to_row()
        for model, version, shadow_of, shift in requests
        for i, value in enumerate(FEATURE)
    ]


REQUEST_LOG = RequestLogCounts(
    rows=120, write_failures=1, dropped={"full": 16, "store": 8}
)
# A replica of pool "small" holding two versions, after three loads (one failed),
# an unload for the count bound and one for idleness.
POOL_REPORT = PoolReport(
    pool="small",
    replica="p1",
    node_id="n3",
    loaded=(("iris", "v1"), ("digits", "v2")),
    loaded_bytes=6144,
    loads=3,
    load_failures=1,
    load_seconds=1.25,
    unloads={"count": 1, "idle": 1},
    load_waits=5,
)


def rolled_out_core(
    store: MemoryStateStore | None = None,
) -> tuple[ValidatorCore, float]:
    """A core with every ``rayfleet_*`` series on its page, and the time to render
    it at.

    v2 was rolled back; v3 entered its first step and has served ``SERVED_S``
    seconds of traffic since, with the inputs of :func:`_inputs` (iris too); a
    router dropped 7 observations; a replica of v1 and one of v3 reported
    batches, v3's running on CPU though it asked for a GPU; router-b's request
    log wrote rows and dropped some (:data:`REQUEST_LOG`); a pool replica
    reported what it holds (:data:`POOL_REPORT`).
    """
    core = ValidatorCore(
        platform(), "shop", store or MemoryStateStore(), REFERENCES, now=T0
    )
    now = roll_back_v2(core)
    core.tick(now, READY)  # v3, started by the rollback, enters its first step
    serve(core, now, SERVED_S)
    ingest_rows(
        core,
        _inputs(now + SERVED_S / 2),
        router="router-b",
        dropped=7,
        request_log=REQUEST_LOG.to_dict(),
    )
    now += SERVED_S
    core.report_replicas(
        [
            ReplicaReport(
                "digits", "v1", "r1", 180, 1, {1: 20, 8: 20}, CUDA, True, "n1"
            ),
            ReplicaReport("digits", "v3", "r2", 40, 0, {4: 10}, CPU, True, "n2"),
        ],
        now,
    )
    core.report_pools([POOL_REPORT], now)
    return core, now


def samples(core: ValidatorCore, now: float, name: str) -> Samples:
    """The samples of one series name on the page, by sorted labels."""
    text = render_metrics(core, now).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_the_step_start_is_shown_for_the_unfinished_rollout_only() -> None:
    core, now = rolled_out_core()
    name = "rayfleet_rollout_step_start_time_seconds"
    step_started = now - SERVED_S
    assert samples(core, now, name) == {
        (name, (("model", "digits"), ("version", "v3"))): step_started
    }
    # Paused, the step keeps its start; finished, there is no step.
    core.act("digits", "pause", now + 1)
    assert list(samples(core, now + 1, name).values()) == [step_started]
    core.act("digits", "rollback", now + 2)
    assert core.rollouts["digits"].finished
    assert samples(core, now + 2, name) == {}


def test_finished_rollouts_are_counted_by_outcome_and_survive_a_restart() -> None:
    store = MemoryStateStore()
    core, now = rolled_out_core(store)
    name = "rayfleet_rollouts_finished"

    def counts(core: ValidatorCore, at: float) -> dict[tuple[str, str], float]:
        return {
            (dict(labels)["model"], dict(labels)["outcome"]): value
            for (_, labels), value in samples(core, at, name).items()
        }

    assert counts(core, now) == {
        ("digits", "promoted"): 0.0,
        ("digits", "rolled_back"): 1.0,
        ("iris", "promoted"): 0.0,
        ("iris", "rolled_back"): 0.0,
    }
    core.act("digits", "promote", now + 1)
    after = counts(core, now + 1)
    assert (after["digits", "promoted"], after["digits", "rolled_back"]) == (1, 1)
    # The counts are the store's record, not the process's: a restart keeps them.
    restarted = ValidatorCore(platform(), "shop", store, REFERENCES, now=now + 2)
    assert counts(restarted, now + 2) == after


def _stable_drift(core: ValidatorCore, at: float) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["model"], dict(labels)["version"]): value
        for (_, labels), value in samples(
            core, at, "rayfleet_stable_input_drift_share"
        ).items()
    }


def test_stable_input_drift_is_the_share_of_drifted_features() -> None:
    core, now = rolled_out_core()
    # f0 moved far off its reference, f1 did not. While v3 rolls out, digits'
    # stable is not tested: v3's own drift is.
    assert _stable_drift(core, now) == {("iris", "v1"): 0.5}
    # v3 rolled back, there is no canary left: digits' v1 is tested again.
    core.act("digits", "rollback", now)
    assert _stable_drift(core, now) == {("iris", "v1"): 0.5, ("digits", "v1"): 0.5}
    # A minute on, the window holds no sampled inputs: no share, not a zero.
    assert _stable_drift(core, now + 61) == {}


def test_a_promoted_canary_shows_the_drift_its_rollout_measured() -> None:
    core, now = rolled_out_core()
    core.act("digits", "promote", now)
    # v3's inputs are its reference: nothing drifted, over its last step (a
    # minute on, still within it).
    assert _stable_drift(core, now) == {("iris", "v1"): 0.5, ("digits", "v3"): 0.0}
    assert _stable_drift(core, now + 61) == {("digits", "v3"): 0.0}


def test_request_log_counters_are_shown_per_router_and_reason() -> None:
    core, now = rolled_out_core()
    assert samples(core, now, "rayfleet_request_log_rows_total") == {
        ("rayfleet_request_log_rows_total", (("router", "router-b"),)): 120
    }
    assert samples(core, now, "rayfleet_request_log_write_failures_total") == {
        ("rayfleet_request_log_write_failures_total", (("router", "router-b"),)): 1
    }
    name = "rayfleet_request_log_dropped_total"
    assert samples(core, now, name) == {
        (name, (("reason", reason), ("router", "router-b"))): count
        for reason, count in (("full", 16), ("store", 8), ("shape", 0))
    }
    # A flush without counts (a router without a request log) keeps them.
    ingest_rows(core, [], router="router-b", dropped=7)
    assert len(samples(core, now, name)) == 3


def test_pool_replicas_are_shown_as_they_last_reported() -> None:
    core, now = rolled_out_core()
    text = render_metrics(core, now).decode()
    found = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("rayfleet_pool_")
        for sample in family.samples
    }
    replica = (("pool", "small"), ("replica", "p1"))
    assert found == {
        ("rayfleet_pool_loaded_versions", replica): 2,
        ("rayfleet_pool_loaded_bytes", replica): 6144,
        (
            "rayfleet_pool_version_loaded",
            (("model", "digits"), *replica, ("version", "v2")),
        ): 1,
        (
            "rayfleet_pool_version_loaded",
            (("model", "iris"), *replica, ("version", "v1")),
        ): 1,
        ("rayfleet_pool_loads_total", replica): 3,
        ("rayfleet_pool_load_failures_total", replica): 1,
        ("rayfleet_pool_load_seconds_total", replica): 1.25,
        (
            "rayfleet_pool_unloads_total",
            (("pool", "small"), ("reason", "bytes"), ("replica", "p1")),
        ): 0,
        (
            "rayfleet_pool_unloads_total",
            (("pool", "small"), ("reason", "count"), ("replica", "p1")),
        ): 1,
        (
            "rayfleet_pool_unloads_total",
            (("pool", "small"), ("reason", "idle"), ("replica", "p1")),
        ): 1,
        ("rayfleet_pool_load_waits_total", replica): 5,
    }
    # Silent for over a minute, the replica is gone from the page.
    assert "rayfleet_pool_loads_total{" not in render_metrics(core, now + 61).decode()


POOL_FAMILIES = {
    "rayfleet_pool_loaded_versions": "gauge",
    "rayfleet_pool_loaded_bytes": "gauge",
    "rayfleet_pool_version_loaded": "gauge",
    "rayfleet_pool_loads": "counter",
    "rayfleet_pool_load_failures": "counter",
    "rayfleet_pool_load_seconds": "counter",
    "rayfleet_pool_unloads": "counter",
    "rayfleet_pool_load_waits": "counter",
}


def test_the_pool_families_are_on_the_page_without_a_pool() -> None:
    core = ValidatorCore(platform(), "shop", MemoryStateStore(), REFERENCES, now=T0)
    text = render_metrics(core, T0).decode()
    families = {
        family.name: family
        for family in text_string_to_metric_families(text)
        if family.name.startswith("rayfleet_pool_")
    }
    assert {name: f.type for name, f in families.items()} == POOL_FAMILIES
    assert all(f.documentation and not f.samples for f in families.values())
    # Counters are named as Prometheus reads them, with their _total.
    assert "# TYPE rayfleet_pool_loads_total counter" in text


def test_request_counters_count_every_ingested_request() -> None:
    # Routers send their observations summed up; the counters must still count
    # each request once, by status, and its latency in the histogram.
    core = ValidatorCore(platform(), "shop", MemoryStateStore(), REFERENCES, now=T0)
    latencies = (0.5, 3.0, 3.0, 40.0, 700.0)
    rows = [
        Observation("iris", "v1", T0, ms, ms / 2, status).to_row()
        for ms, status in zip(latencies, (200, 200, 404, 200, 503), strict=True)
    ]
    ingest_rows(core, rows[:2], router="router-a")
    ingest_rows(core, rows[2:], router="router-b")
    requests = samples(core, T0, "rayfleet_requests_total")
    assert {labels: value for (_, labels), value in requests.items()} == {
        (("code", "200"), ("model", "iris"), ("version", "v1")): 3,
        (("code", "404"), ("model", "iris"), ("version", "v1")): 1,
        (("code", "503"), ("model", "iris"), ("version", "v1")): 1,
    }
    buckets = samples(core, T0, "rayfleet_request_latency_seconds_bucket")
    by_bound = {
        dict(labels)["le"]: value
        for (_, labels), value in buckets.items()
        if dict(labels)["version"] == "v1" and dict(labels)["model"] == "iris"
    }
    assert (by_bound["0.001"], by_bound["0.005"], by_bound["0.05"]) == (1, 3, 4)
    assert by_bound["+Inf"] == 5
    total = samples(core, T0, "rayfleet_request_latency_seconds_sum")
    assert sum(total.values()) == pytest.approx(sum(latencies) / 1000)
