"""The pool benchmark's Ray-free parts: the versions, the mix, the two specs, the
client (against a stdlib HTTP server), the counters read from /metrics, and the
report's arithmetic."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from ray.serve import Application

import loadtest.bench_pool as bench
from loadtest.bench_pool import (
    MODEL,
    POOL,
    ClientOutput,
    ClientPlan,
    LayoutResult,
    PoolCounters,
    Record,
    Settings,
    ZipfMix,
    build_pool_store,
    dedicated_args,
    drive,
    ensure_pool_store,
    loaded_versions,
    pool_args,
    pool_counters,
    render_report,
    run_client,
    summarize,
    version_bytes,
    version_names,
    warm_group,
    warm_steps,
)
from rayfleet.cli.demo import DIGITS_SIGNATURE, digits_split
from rayfleet.deployments.app import build
from rayfleet.platform.config.spec import ObservationSpec, parse_spec
from rayfleet.platform.config.store import MANIFEST, REFERENCE, ModelStore
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.rollout.telemetry import render_metrics
from rayfleet.platform.serving.counters import PoolReport
from tests.unit.loadtest.stub_server import PinnedModel, serving

VERSIONS = version_names()


def test_version_names_sort_in_order() -> None:
    assert VERSIONS[:3] == ("v01", "v02", "v03")
    assert VERSIONS[-1] == "v50"
    assert list(VERSIONS) == sorted(VERSIONS)
    assert version_names(120)[:2] == ("v001", "v002")


# -- the versions ------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pool-store")
    built = build_pool_store(root)
    assert [version.name for version in built] == list(VERSIONS)
    # Small subsets and strong regularisation cost accuracy, not usefulness.
    assert min(version.accuracy for version in built) > 0.8
    return root


def test_every_version_is_in_the_store_with_a_valid_manifest(store: Path) -> None:
    models = ModelStore(str(store))
    assert models.models() == [MODEL]
    assert models.versions(MODEL) == list(VERSIONS)
    for name in VERSIONS:
        manifest = models.manifest(MODEL, name)
        assert (manifest.runtime, manifest.artifact) == ("onnx", "model.onnx")
        assert manifest.signature == DIGITS_SIGNATURE
        assert (store / MODEL / name / REFERENCE).exists()


def test_the_versions_predict_differently(store: Path) -> None:
    rows = digits_split()[1][:200]
    labels = set()
    for name in VERSIONS:
        session = ort.InferenceSession(
            str(store / MODEL / name / "model.onnx"),
            providers=["CPUExecutionProvider"],
        )
        label, probabilities = session.run(["label", "probabilities"], {"input": rows})
        assert probabilities.shape == (200, 10)
        labels.add(label.tobytes())
    assert len(labels) == len(VERSIONS)


def test_ensure_pool_store_builds_only_what_is_missing(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Path, int]] = []
    monkeypatch.setattr(
        bench, "build_pool_store", lambda root, count: calls.append((root, count))
    )
    ensure_pool_store(store)
    assert calls == []
    # A version without its manifest is not there.
    partial = tmp_path / "partial"
    (partial / MODEL / "v01").mkdir(parents=True)
    (partial / MODEL / "v01" / "model.onnx").write_bytes(b"")
    ensure_pool_store(partial, count=1)
    assert calls == [(partial, 1)]


def test_version_bytes_count_every_file_of_a_version(store: Path) -> None:
    folder = store / MODEL / "v01"
    expected = sum(
        (folder / name).stat().st_size for name in ("model.onnx", MANIFEST, REFERENCE)
    )
    assert version_bytes(store, ["v01", "v02"])[0] == expected
    assert all(size > 0 for size in version_bytes(store, VERSIONS))


def test_a_warm_group_fits_one_replica() -> None:
    assert warm_group(16, None, [100, 300]) == 16
    assert warm_group(16, 3000, [100, 300]) == 10
    assert warm_group(4, 3000, [100, 300]) == 4
    # Never empty, even when one version alone passes the bound.
    assert warm_group(16, 200, [100, 300]) == 1


# -- the mix -----------------------------------------------------------------------


def test_the_mix_is_fixed_by_its_seed() -> None:
    mix = ZipfMix(VERSIONS)
    assert mix.draws(1000) == ZipfMix(VERSIONS).draws(1000)
    assert mix.draws(1000) != ZipfMix(VERSIONS, seed=1).draws(1000)
    # The stream goes on past one chunk of draws, the same way.
    assert mix.draws(5000)[:1000] == mix.draws(1000)


def test_the_mix_follows_zipf_and_covers_every_version() -> None:
    mix = ZipfMix(VERSIONS, exponent=1.1)
    shares = mix.probabilities()
    assert shares.sum() == pytest.approx(1.0)
    assert shares[0] / shares[1] == pytest.approx(2**1.1)
    assert shares[0] / shares[-1] == pytest.approx(50**1.1)
    counts = Counter(mix.draws(40_000))
    assert set(counts) == set(VERSIONS)
    seen = np.array([counts[name] for name in VERSIONS]) / 40_000
    assert np.abs(seen - shares).max() < 0.01
    # Skewed: the hottest tenth of the versions take about half the requests.
    assert 0.45 < seen[:5].sum() < 0.6


def test_the_hottest_keep_their_relative_shares() -> None:
    mix = ZipfMix(VERSIONS)
    hottest = mix.hottest(10)
    assert hottest.versions == VERSIONS[:10]
    shares = mix.probabilities()[:10]
    np.testing.assert_allclose(hottest.probabilities(), shares / shares.sum())
    assert set(hottest.draws(2000)) == set(VERSIONS[:10])


# -- the two layouts ---------------------------------------------------------------


def test_the_pool_layout_places_every_version_in_one_pool() -> None:
    spec = parse_spec(
        pool_args("/store", VERSIONS, max_loaded=16, max_loaded_bytes=1 << 20)
    )
    (pool,) = spec.pools
    assert pool.name == POOL
    assert (pool.max_loaded_versions, pool.max_loaded_bytes) == (16, 1 << 20)
    assert (pool.autoscaling.min_replicas, pool.autoscaling.max_replicas) == (2, 2)
    (model,) = spec.models
    assert [v.name for v in model.versions] == list(VERSIONS)
    assert {(v.placement, v.pool) for v in model.versions} == {("pool", POOL)}
    assert model.stable_version == "v01"
    assert model.initial_weights()["v01"] == 100
    assert spec.observations.replica_report_s == bench.REPORT_S


def test_the_dedicated_layout_gives_every_version_a_small_replica() -> None:
    spec = parse_spec(dedicated_args("/store", VERSIONS[:20]))
    (model,) = spec.models
    assert [v.name for v in model.versions] == list(VERSIONS[:20])
    assert spec.pools == ()
    assert spec.observations.replica_report_s == ObservationSpec().replica_report_s
    for version in model.versions:
        assert (version.placement, version.num_cpus) == ("replica", 0.02)
        assert version.autoscaling.min_replicas == version.autoscaling.max_replicas
        assert version.autoscaling.max_replicas == 1
    assert model.stable_version == "v01"


def test_both_layouts_build_over_the_store(store: Path) -> None:
    """Serve applications bound over the built versions (nothing starts)."""
    pool = build(pool_args(str(store), VERSIONS, max_loaded=16))
    dedicated = build(dedicated_args(str(store), VERSIONS))
    assert isinstance(pool, Application)
    assert isinstance(dedicated, Application)


def test_the_warm_pass_primes_each_group_before_measuring_it() -> None:
    assert warm_steps(["a", "b", "c"], 2, 2) == (
        (("a", "prime"), ("b", "prime")),
        (("a", "warm"), ("a", "warm"), ("b", "warm"), ("b", "warm")),
        (("c", "prime"),),
        (("c", "warm"), ("c", "warm")),
    )


# -- the client --------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[str]:
    with serving() as url:
        yield url


def test_steps_are_sent_in_order_with_a_pause_after_each(server: str) -> None:
    plan = ClientPlan(
        server,
        "{}",
        steps=((("v01", "cold"), ("v02", "cold")), (("x", "warm"), ("v01", "warm"))),
        pause_s=0.2,
    )
    began = time.perf_counter()
    output = asyncio.run(drive(plan))
    assert time.perf_counter() - began >= 0.4
    assert PinnedModel.seen == ["v01", "v02", "x", "v01"]
    assert [(r.version, r.phase, r.status) for r in output.records] == [
        ("v01", "cold", 200),
        ("v02", "cold", 200),
        ("x", "warm", 404),
        ("v01", "warm", 200),
    ]
    assert [r.cold for r in output.records] == [True, True, False, False]
    assert output.sent == 4
    assert all(r.latency_s > 0 for r in output.records)


def test_the_closed_loop_draws_from_the_mix_for_its_duration(server: str) -> None:
    mix = ZipfMix(VERSIONS[:5])
    plan = ClientPlan(
        server, "{}", concurrency=3, mix=mix, duration_s=0.5, warmup_s=0.2
    )
    output = asyncio.run(drive(plan))
    assert output.records
    assert {r.phase for r in output.records} == {"zipf"}
    assert {r.status for r in output.records} == {200}
    assert {r.cold for r in output.records} == {None}
    # Warm-up requests are sent, not recorded; all were drawn from the mix in order.
    assert output.sent == len(PinnedModel.seen) > len(output.records)
    assert sorted(PinnedModel.seen) == sorted(mix.draws(output.sent))
    assert 0.4 <= output.seconds < 1.5
    assert output.span_s >= output.seconds + 0.15


def test_the_client_runs_in_a_process_of_its_own(server: str, tmp_path: Path) -> None:
    plan = ClientPlan(server, "{}", steps=((("v03", "cold"), ("v04", "cold")),))
    output = run_client(plan, str(tmp_path))
    assert [(r.version, r.status) for r in output.records] == [
        ("v03", 200),
        ("v04", 200),
    ]
    assert list(tmp_path.iterdir()) == []


def test_plans_and_outputs_cross_the_process_boundary_unchanged() -> None:
    plan = ClientPlan(
        "http://h/app",
        "{}",
        concurrency=4,
        steps=((("v01", "prime"),), (("v01", "warm"),)),
        pause_s=1.0,
        mix=ZipfMix(VERSIONS[:3], exponent=1.2, seed=7),
        duration_s=3.0,
        warmup_s=1.0,
    )
    assert ClientPlan.from_json(plan.to_json()) == plan
    output = ClientOutput((Record("v01", "zipf", 200, 0.25),), 2.0, 3, 2.5)
    assert ClientOutput.from_json(output.to_json()) == output


# -- /metrics ----------------------------------------------------------------------


def _report(replica: str, pool: str = POOL, **counts: Any) -> PoolReport:
    fields: dict[str, Any] = {
        "loaded": (),
        "loaded_bytes": 0,
        "loads": 0,
        "load_failures": 0,
        "load_seconds": 0.0,
        "unloads": {},
        "load_waits": 0,
        **counts,
    }
    return PoolReport(pool=pool, replica=replica, node_id="n1", **fields)


def _page(*reports: PoolReport) -> str:
    """The /metrics page the Validator renders for these pool reports."""
    args = pool_args("/store", VERSIONS[:3], max_loaded=2)
    args["pools"].append({"name": "other"})
    args["models"].append(
        {
            "name": "m",
            "versions": [{"name": "v1", "placement": "pool", "pool": "other"}],
        }
    )
    core = ValidatorCore(parse_spec(args), "bench", MemoryStateStore(), {}, now=0.0)
    core.report_pools(reports, 1.0)
    return render_metrics(core, 1.0).decode()


def test_pool_counters_sum_the_replicas_of_one_pool() -> None:
    page = _page(
        _report(
            "r1",
            loaded=((MODEL, "v01"), (MODEL, "v02")),
            loads=3,
            load_seconds=0.6,
            load_waits=4,
            unloads={"count": 1},
        ),
        _report("r2", loaded=((MODEL, "v03"),), loads=2, load_seconds=0.4),
        _report("r3", pool="other", loads=100, load_waits=100),
    )
    counters = pool_counters(page, POOL)
    assert (counters.loads, counters.load_waits) == (5, 4)
    assert counters.load_seconds == pytest.approx(1.0)
    assert counters.load_mean_s == pytest.approx(0.2)
    assert counters.unloads["count"] == 1
    assert loaded_versions(page, POOL) == {"r1": 2, "r2": 1}
    assert pool_counters("", POOL) == PoolCounters()
    assert PoolCounters().load_mean_s is None


def test_counters_subtract_phase_by_phase() -> None:
    before = PoolCounters(loads=2, load_seconds=0.5, load_waits=3, unloads={"count": 1})
    after = PoolCounters(
        loads=7, load_seconds=1.5, load_waits=9, unloads={"count": 4, "idle": 1}
    )
    delta = after - before
    assert (delta.loads, delta.load_seconds, delta.load_waits) == (5, 1.0, 6)
    assert delta.unloads == {"count": 3, "idle": 1}
    assert delta.load_mean_s == pytest.approx(0.2)


# -- the report --------------------------------------------------------------------


def _records(
    phase: str, latencies_ms: list[float], versions: list[str]
) -> list[Record]:
    return [
        Record(version, phase, 200, ms / 1000)
        for version, ms in zip(versions, latencies_ms, strict=True)
    ]


def test_summaries_take_answered_requests_of_one_phase() -> None:
    records = [
        *_records("warm", [1.0, 2.0, 3.0, 4.0], ["v01", "v01", "v02", "v02"]),
        Record("v01", "warm", 503, 0.5),
        *_records("zipf", [100.0], ["v01"]),
    ]
    warm = summarize(records, "warm")
    assert (warm.requests, warm.failed) == (5, 1)
    assert (warm.mean_ms, warm.p50_ms) == pytest.approx((2.5, 2.5))
    assert warm.p99_ms == pytest.approx(3.97)
    only = summarize(records, "warm", {"v02"})
    assert only.requests == 2
    assert only.p50_ms == pytest.approx(3.5)
    assert math.isnan(summarize(records, "cold").p50_ms)


def _layouts(compared: int) -> tuple[LayoutResult, LayoutResult]:
    everything = list(VERSIONS)
    hottest = everything[:compared]
    pool = LayoutResult(
        name="pool",
        versions=VERSIONS,
        # 50 cold requests: 40 ms each but the last, 90 ms (mean 41 ms).
        cold=ClientOutput(
            tuple(_records("cold", [40.0] * 49 + [90.0], everything)), 5.0, 50, 5.0
        ),
        warm=ClientOutput(
            (
                *_records("prime", [30.0] * 50, everything),
                *_records("warm", [6.0] * 50, everything),
            ),
            10.0,
            100,
            10.0,
        ),
        # 300 requests in 10 s, one failed; 60 sent in all over 12 s.
        zipf=ClientOutput(
            (
                *_records("zipf", [5.0] * 299, (everything * 6)[:299]),
                Record("v50", "zipf", 500, 0.001),
            ),
            10.0,
            600,
            12.0,
        ),
        rss_bytes=(300 << 20, 500 << 20),
        counters={
            "cold": PoolCounters(loads=50, load_seconds=1.5, load_waits=50),
            "warm": PoolCounters(loads=40, load_seconds=1.2, load_waits=40),
            "zipf": PoolCounters(
                loads=24, load_seconds=0.7, load_waits=30, unloads={"count": 20}
            ),
        },
        loaded={"r1": 16, "r2": 15},
    )
    dedicated = LayoutResult(
        name="dedicated",
        versions=tuple(hottest),
        cold=None,
        warm=ClientOutput(
            (
                *_records("prime", [5.0] * compared, hottest),
                *_records("warm", [5.0] * compared, hottest),
            ),
            5.0,
            2 * compared,
            5.0,
        ),
        zipf=ClientOutput(
            tuple(_records("zipf", [4.0] * 400, hottest * (400 // compared))),
            10.0,
            450,
            11.0,
        ),
        rss_bytes=tuple([200 << 20] * compared),
    )
    return pool, dedicated


RUN = Settings(
    concurrency=8,
    duration_s=10,
    max_loaded=16,
    max_loaded_bytes=None,
    pool_replicas=2,
    warm_requests=1,
)


def _rows(report: str) -> dict[str, list[str]]:
    rows = {}
    for line in report.splitlines():
        if line.startswith("| ") and not line.startswith("| measure"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_the_report_compares_the_layouts() -> None:
    report = render_report(*_layouts(50), RUN)
    rows = _rows(report)
    assert "Dedicated: one replica of 0.02 CPU for every version." in report
    assert rows["versions served"] == ["50", "50", ""]
    assert rows["Zipf run, c=8: requests/s"] == ["30", "40", ""]
    assert rows["Zipf run: p50 / p99 ms"] == ["5.00 / 5.00", "4.00 / 4.00", ""]
    assert rows["warm, v01-v50: p50 / p99 ms"] == ["6.00 / 6.00", "5.00 / 5.00", ""]
    assert rows["warm p50, pool / dedicated"] == ["1.20x", "", "<= 1.2"]
    assert rows["cold (first request of a version): p50 / p99 ms"][0] == (
        f"40.00 / {np.percentile([40.0] * 49 + [90.0], 99):.2f}"
    )
    # One load: 1.5 s / 50 = 30 ms; cold mean 41 ms; warm mean 6 ms.
    assert rows["one load, mean ms (/metrics)"][0] == "30.00"
    assert rows["cold beyond the load, mean ms"][0] == "11.00"
    assert rows["cold beyond the load and a warm request, mean ms"][0] == "5.00"
    assert rows["loads in the cold pass (/metrics)"][0] == "50 for 50 requests"
    assert rows["load waits in the warm pass (/metrics)"][0] == (
        "40 for 50 priming requests"
    )
    # 24 loads over the 12 s the run took, warm-up included.
    assert rows["loads per minute, Zipf run (/metrics)"][:2] == ["120.0", "0"]
    assert rows["requests that waited for a load, Zipf run (/metrics)"][0] == (
        "30 of 600 (5.0%)"
    )
    assert rows["unloads by reason, Zipf run (/metrics)"][0] == "count 20"
    assert rows["failed requests, every phase"] == ["1", "0", "0"]
    assert rows["replicas"][:2] == ["2", "50"]
    assert rows["RSS per replica, mean / max MiB"][:2] == ["400 / 500", "200 / 200"]
    assert rows["RSS of all replicas, MiB"][:2] == ["800", "10000"]
    assert rows["RSS per version served, MiB"][:2] == ["16.0", "200.0"]
    assert rows["versions loaded per replica at the end (/metrics)"][0] == "16 / 15"
    assert not any(label.startswith("Zipf run, requests to") for label in rows)


def test_the_report_names_the_versions_compared() -> None:
    pool, dedicated = _layouts(20)
    report = render_report(pool, dedicated, RUN)
    rows = _rows(report)
    assert "for the 20 hottest versions alone (v01-v20)" in report
    assert rows["versions served"][:2] == ["50", "20"]
    assert rows["Zipf run, requests to v01-v20: p50 / p99 ms"][0] == "5.00 / 5.00"
    # Warm latency is compared on those versions alone.
    assert rows["warm, v01-v20: p50 / p99 ms"][:2] == ["6.00 / 6.00", "5.00 / 5.00"]
