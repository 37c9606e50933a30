"""Per-replica request counters: kept by replicas, gathered by the Validator,
rendered in ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.spec import (
    BatchingSpec,
    ModelSpec,
    PlatformSpec,
    VersionSpec,
)
from rayfleet.platform.errors import ModelError
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.rollout.telemetry import render_metrics, replica_requests
from rayfleet.platform.runtimes.device import CPU, CUDA, PYTHON, Device
from rayfleet.platform.serving.counters import (
    PoolReport,
    PoolTable,
    ReplicaCounters,
    ReplicaReport,
    ReplicaTable,
    balance_ratio,
)
from rayfleet.platform.serving.inprocess import InProcessBackend
from rayfleet.platform.serving.pool import UNLOAD_REASONS
from rayfleet.platform.serving.runner import VersionRunner

T0 = 1_700_000_000.0


def _core() -> ValidatorCore:
    spec = PlatformSpec(
        store="memory://unused",
        models=(ModelSpec(name="digits", versions=(VersionSpec(name="v1"),)),),
    )
    return ValidatorCore(spec, "app", MemoryStateStore(), {}, now=T0)


def test_counters_report_running_totals() -> None:
    counters = ReplicaCounters()
    counters.served(3)
    counters.ran_batch(2)
    counters.ran_batch(1)
    counters.failed()
    report = counters.report(
        "digits", "v1", "r1", device=Device(CUDA, True), node_id="n1"
    )
    assert report == ReplicaReport(
        "digits", "v1", "r1", 3, 1, {2: 1, 1: 1}, CUDA, True, "n1"
    )
    assert ReplicaReport.from_dict(report.to_dict()) == report


def test_a_report_from_a_replica_too_old_to_name_its_device_is_read() -> None:
    old = {"model": "digits", "version": "v1", "replica": "r1", "requests": 3}
    report = ReplicaReport.from_dict({**old, "errors": 0})
    assert (report.provider, report.gpu_requested, report.node_id) == ("", False, "")


def test_table_keeps_the_latest_report_and_forgets_silent_replicas() -> None:
    table = ReplicaTable(expire_s=60)
    table.update([ReplicaReport("digits", "v1", "a", 5, 0)], T0)
    table.update([ReplicaReport("digits", "v1", "b", 7, 0)], T0 + 30)
    table.update([ReplicaReport("digits", "v1", "a", 9, 1)], T0 + 40)
    assert [(r.replica, r.requests) for r in table.current(T0 + 40)] == [
        ("a", 9),
        ("b", 7),
    ]
    # b last reported at T0 + 30: gone 60 s later, a still there.
    assert [r.replica for r in table.current(T0 + 91)] == ["a"]
    assert table.current(T0 + 101) == []


POOL_REPORT = PoolReport(
    pool="small",
    replica="p1",
    node_id="n1",
    loaded=(("digits", "v2"), ("iris", "v1")),
    loaded_bytes=3072,
    loads=5,
    load_failures=1,
    load_seconds=2.5,
    unloads={"count": 2, "idle": 1},
    load_waits=6,
)


def test_a_pool_report_crosses_a_process_boundary_as_plain_data() -> None:
    data = POOL_REPORT.to_dict()
    assert data == {
        "pool": "small",
        "replica": "p1",
        "node_id": "n1",
        "loaded": [["digits", "v2"], ["iris", "v1"]],
        "loaded_bytes": 3072,
        "loads": 5,
        "load_failures": 1,
        "load_seconds": 2.5,
        "unloads": {"count": 2, "idle": 1},
        "load_waits": 6,
    }
    # Through JSON as through Ray's serialisation: lists stay lists.
    assert PoolReport.from_dict(json.loads(json.dumps(data))) == POOL_REPORT
    empty = replace(POOL_REPORT, loaded=(), loaded_bytes=0, loads=0, unloads={})
    assert PoolReport.from_dict(empty.to_dict()) == empty


_COUNTS = st.integers(min_value=0, max_value=2**53)


@given(
    st.builds(
        PoolReport,
        pool=st.text(max_size=12),
        replica=st.text(max_size=12),
        node_id=st.text(max_size=12),
        loaded=st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8))).map(tuple),
        loaded_bytes=_COUNTS,
        loads=_COUNTS,
        load_failures=_COUNTS,
        load_seconds=st.floats(min_value=0, allow_infinity=False),
        unloads=st.dictionaries(st.sampled_from(UNLOAD_REASONS), _COUNTS),
        load_waits=_COUNTS,
    )
)
def test_every_pool_report_survives_json(report: PoolReport) -> None:
    assert PoolReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_pool_table_keeps_the_latest_report_per_pool_replica() -> None:
    table = PoolTable(expire_s=60)
    table.update(
        [replace(POOL_REPORT, replica="b", loads=1), replace(POOL_REPORT, replica="a")],
        T0,
    )
    table.update([replace(POOL_REPORT, pool="large", replica="a", loads=4)], T0 + 30)
    table.update([replace(POOL_REPORT, replica="a", loads=2)], T0 + 40)
    assert [(r.pool, r.replica, r.loads) for r in table.current(T0 + 40)] == [
        ("large", "a", 4),
        ("small", "a", 2),
        ("small", "b", 1),
    ]
    # b last reported at T0, large/a at T0 + 30: each gone 60 s later.
    assert [r.key for r in table.current(T0 + 61)] == [
        ("large", "a"),
        ("small", "a"),
    ]
    assert [r.key for r in table.current(T0 + 91)] == [("small", "a")]
    assert table.current(T0 + 101) == []


def test_the_core_keeps_pool_reports_whatever_versions_they_name() -> None:
    core = _core()
    # digits/v2 and iris are not in the spec: a pool still holds them.
    core.report_pools([POOL_REPORT], T0)
    assert core.pools.current(T0 + 1) == [POOL_REPORT]
    assert core.pools.current(T0 + 61) == []


def test_balance_ratio() -> None:
    assert balance_ratio([]) is None
    assert balance_ratio([10]) is None
    assert balance_ratio([100, 120, 150]) == 1.5
    assert balance_ratio([0, 0]) == 1.0
    assert balance_ratio([0, 3]) == math.inf


@given(st.lists(st.integers(min_value=1, max_value=10**6), min_size=2))
def test_balance_ratio_is_at_least_one_and_ignores_order(counts: list[int]) -> None:
    ratio = balance_ratio(counts)
    assert ratio is not None and ratio >= 1.0
    assert ratio == balance_ratio(list(reversed(counts)))


def test_metrics_render_each_replica_as_prometheus_counters() -> None:
    core = _core()
    core.report_replicas(
        [
            ReplicaReport("digits", "v1", "r1", 120, 2, {1: 40, 4: 20}),
            ReplicaReport("digits", "v1", "r2", 100, 0, {1: 100}),
            # Versions the spec does not declare are not the Validator's to show.
            ReplicaReport("digits", "v9", "r3", 5, 0),
        ],
        T0,
    )
    text = render_metrics(core, T0 + 1).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = replica_requests(text, "digits", "v1")
    assert requests == {"r1": 120.0, "r2": 100.0}
    errors = {
        s.labels["replica"]: s.value
        for s in families["rayfleet_replica_errors"].samples
        if s.name.endswith("_total")
    }
    assert errors == {"r1": 2.0, "r2": 0.0}
    batches = {
        (s.labels["replica"], s.labels["size"]): s.value
        for s in families["rayfleet_replica_batches"].samples
        if s.name.endswith("_total")
    }
    assert batches == {("r1", "1"): 40.0, ("r1", "4"): 20.0, ("r2", "1"): 100.0}
    # A minute after the last report both replicas are gone from the page.
    later = render_metrics(core, T0 + 61).decode()
    assert 'replica="r1"' not in later


def test_metrics_name_the_device_each_replica_really_runs() -> None:
    core = _core()
    core.report_replicas(
        [
            ReplicaReport("digits", "v1", "r1", 1, 0, {}, CUDA, True, "node-a"),
            # Asked for a GPU, fell back to CPU: the series an alert looks for.
            ReplicaReport("digits", "v1", "r2", 1, 0, {}, CPU, True, "node-b"),
            ReplicaReport("digits", "v1", "router-1", 1, 0, {}, PYTHON, False, ""),
            # A replica too old to name its device shows no info series.
            ReplicaReport("digits", "v1", "r3", 1, 0),
        ],
        T0,
    )
    text = render_metrics(core, T0 + 1).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    info = families["rayfleet_replica_info"]
    assert info.type == "gauge"
    assert {sample.name for sample in info.samples} == {"rayfleet_replica_info"}
    assert {s.labels["replica"]: (s.labels, s.value) for s in info.samples} == {
        replica: (
            {
                "model": "digits",
                "version": "v1",
                "replica": replica,
                "provider": provider,
                "gpu_requested": gpu,
                "node_id": node,
            },
            1.0,
        )
        for replica, provider, gpu, node in (
            ("r1", CUDA, "true", "node-a"),
            ("r2", CPU, "true", "node-b"),
            ("router-1", PYTHON, "false", ""),
        )
    }
    # Silent replicas drop out of it as out of every per-replica series.
    later = render_metrics(core, T0 + 61).decode()
    assert "rayfleet_replica_info{" not in later


def test_snapshot_lists_replicas_per_version() -> None:
    core = _core()
    core.report_replicas([ReplicaReport("digits", "v1", "r1", 12, 1)], T0)
    versions = core.snapshot(T0)["models"][0]["versions"]
    assert versions[0]["replicas"] == [{"replica": "r1", "requests": 12, "errors": 1}]


class _Doubler:
    device = Device(CPU, gpu_requested=False)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        if (x < 0).any():
            raise ValueError("negative input")
        return {"y": x * 2}


def test_in_process_backend_counts_per_version() -> None:
    signature = Signature(
        inputs=(TensorSpec(name="x", datatype="FP64", shape=(-1,)),),
        outputs=(TensorSpec(name="y", datatype="FP64", shape=(-1,)),),
    )
    runner = VersionRunner(
        "double",
        "v1",
        _Doubler(),  # type: ignore[arg-type]
        signature,
        BatchingSpec(max_batch_size=1),
        placement="router",
    )
    backend = InProcessBackend({"double": {"v1": runner}})

    async def run() -> None:
        for value in (1.0, 2.0):
            await backend.infer("double", "v1", {"x": np.array([value])})
        with pytest.raises(ModelError):
            await backend.infer("double", "v1", {"x": np.array([-1.0])})

    asyncio.run(run())
    assert backend.reports("router-1", "node-a") == [
        # Batches count the model calls that returned, as in a ModelReplica.
        ReplicaReport("double", "v1", "router-1", 3, 1, {1: 2}, CPU, False, "node-a")
    ]
