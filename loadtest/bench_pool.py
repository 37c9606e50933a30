"""A model pool against a replica per version: 50 small versions of one model.

One Ray and one Serve with rayfleet's Serve settings; two layouts of the same
versions, each its own rayfleet application, deployed one after the other:

- ``pool``: every version ``placement: pool`` in one pool of two replicas, which
  load a version on its first request and keep the most recently used
  (``--max-loaded`` per replica);
- ``dedicated``: every version in a replica of its own (``num_cpus`` 0.02), or
  only the ``--dedicated-versions`` hottest where the machine cannot hold fifty
  replicas; the report names the versions compared.

The versions (``tiny/v01`` .. ``tiny/v50``) are scaled logistic regressions on
sklearn's digits, each on its own subset of the training rows with its own
regularisation, so that their predictions differ; built offline once into
build/pool-models. Requests are one row of v2 JSON, each pinned to its version
(``/v2/models/tiny/versions/{v}/infer``), sent by a client in a process of its
own at nice 19 (as loadtest/loadgen.py), which records every request's version,
latency and status. Per layout:

1. cold (pool only, on the freshly started pool): one request per version, one
   at a time: each has to wait for its version to load;
2. warm: versions in groups that fit one replica: one priming request per version,
   a pause for Serve's routers to learn where each version is loaded, then
   ``--warm-requests`` per version, one at a time;
3. Zipf: a closed loop of ``-c`` workers for ``--duration`` seconds over a
   Zipf-skewed mix of the versions (exponent 1.1, fixed seed; ``v01`` hottest).

Load counts and times come from the Validator's ``/metrics``
(``rayfleet_pool_*``, read before and after each phase); memory is each replica
process's RSS. Prints a markdown table (warm p50 pool / dedicated, target
<= 1.2; failed requests, target 0) and writes it to loadtest/out/pool.md, and
every request to loadtest/out/pool-requests.json.

    .venv/bin/python -m loadtest.bench_pool [--duration 30] [-c 8]
        [--dedicated-versions 50] [--max-loaded 16] [--max-loaded-bytes B]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from loadtest.common import (
    OUT,
    ROOT,
    actor_pids,
    free_port,
    markdown_table,
    write_report,
)
from rayfleet.cli.demo import (
    DemoVersion,
    digits_split,
    push_digits_version,
)
from rayfleet.platform.config.store import MANIFEST, REFERENCE, ModelStore

__all__ = [
    "MODEL",
    "POOL",
    "POOL_STORE",
    "VERSIONS",
    "ClientOutput",
    "ClientPlan",
    "LayoutResult",
    "PoolCounters",
    "Record",
    "Settings",
    "Summary",
    "ZipfMix",
    "build_pool_store",
    "dedicated_args",
    "drive",
    "ensure_pool_store",
    "loaded_versions",
    "main",
    "pool_args",
    "pool_counters",
    "render_report",
    "run_client",
    "summarize",
    "version_bytes",
    "version_names",
    "warm_group",
    "warm_steps",
]

MODEL = "tiny"
POOL = "shared"
VERSIONS = 50
POOL_STORE = ROOT / "build" / "pool-models"
# Rows each version trains on: few enough that 50 versions build in seconds and
# that the subsets differ, enough for ~90% held-out accuracy.
TRAIN_ROWS = 300
EXPONENT = 1.1
SEED = 0
# The pool's replicas send their counters every replica_report_s (1 s here): a
# read after this long sees everything done before it.
REPORT_S = 1.0
REPORT_WAIT_S = 2.5
# Serve's replicas push the versions they hold every 0.1 s, and the controller
# passes them on to the routers: after this long a router prefers the replica
# that loaded a version.
ROUTING_SETTLE_S = 1.0
REQUEST_TIMEOUT_S = 60.0
ZIPF_WARMUP_S = 1.0
DEDICATED_CPUS = 0.02
POOL_CPUS = 0.5
OK = 200

# Sends one request for a version: its status and seconds.
Send = Callable[[str], Awaitable[tuple[int, float]]]


def version_names(count: int = VERSIONS) -> tuple[str, ...]:
    """``v01`` .. ``v50``: zero-padded so that they sort in order, hottest first."""
    width = max(2, len(str(count)))
    return tuple(f"v{index:0{width}d}" for index in range(1, count + 1))


# -- the versions ------------------------------------------------------------------


def build_pool_store(root: str | Path, count: int = VERSIONS) -> list[DemoVersion]:
    """Train, export and push ``count`` versions of ``tiny`` into the store at
    ``root``, each with its manifest and ``reference.parquet``; returns them.

    Version ``i`` (from 0) is a standard scaler and a logistic regression fitted
    on ``TRAIN_ROWS`` training rows drawn with seed ``i``, its ``C`` drawn
    log-uniformly from 0.01 to 10 with the same seed.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x_train, _, y_train, _ = digits_split()
    store = ModelStore(str(root))
    built = []
    for index, name in enumerate(version_names(count)):
        rng = np.random.default_rng(index)
        rows = rng.choice(len(x_train), TRAIN_ROWS, replace=False)
        strength = float(10 ** rng.uniform(-2, 1))
        estimator = make_pipeline(
            StandardScaler(), LogisticRegression(C=strength, max_iter=1000)
        )
        # BLAS threads on a 64 x 10 problem only contend: one is about five
        # times faster on a busy two-core machine (limits apply to the BLAS
        # libraries loaded already, hence after sklearn's imports).
        with threadpool_limits(1):
            estimator.fit(x_train[rows], y_train[rows])
        description = (
            f"scaled logistic regression, C={strength:.3g}, {TRAIN_ROWS} training "
            f"rows (seed {index})"
        )
        built.append(push_digits_version(store, MODEL, name, estimator, description))
    return built


def ensure_pool_store(root: Path = POOL_STORE, count: int = VERSIONS) -> None:
    """Build the versions into ``root`` unless every one of them is there."""
    files = ("model.onnx", MANIFEST, REFERENCE)
    if all(
        (root / MODEL / name / file).exists()
        for name in version_names(count)
        for file in files
    ):
        return
    print(f"building {count} versions of {MODEL} into {root} (once) ...", flush=True)
    build_pool_store(root, count)


# -- the mix -----------------------------------------------------------------------


@dataclass(frozen=True)
class ZipfMix:
    """Versions drawn with probability proportional to ``rank ** -exponent``, the
    first of ``versions`` being rank 1; the draws are fixed by ``seed``."""

    versions: tuple[str, ...]
    exponent: float = EXPONENT
    seed: int = SEED

    def probabilities(self) -> np.ndarray:
        """Each version's share of the draws, in the order of ``versions``."""
        weights = np.arange(1, len(self.versions) + 1, dtype=float) ** -self.exponent
        shares: np.ndarray = weights / weights.sum()
        return shares

    def stream(self, chunk: int = 4096) -> Iterator[str]:
        """An endless, seeded stream of draws."""
        rng = np.random.default_rng(self.seed)
        shares = self.probabilities()
        while True:
            for index in rng.choice(len(self.versions), size=chunk, p=shares):
                yield self.versions[index]

    def draws(self, count: int) -> list[str]:
        """The first ``count`` draws of :meth:`stream`."""
        return list(itertools.islice(self.stream(), count))

    def hottest(self, count: int) -> ZipfMix:
        """The same mix over the ``count`` most drawn versions alone."""
        return ZipfMix(self.versions[:count], self.exponent, self.seed)


# -- the two layouts ---------------------------------------------------------------


def _common_args(store: str) -> dict[str, Any]:
    return {
        "store": store,
        "router": {
            "num_cpus": 0.5,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        },
    }


def _weights(versions: Sequence[str]) -> list[dict[str, Any]]:
    # Every request pins its version: the first takes the unpinned traffic there
    # is none of, so that the spec has a stable version.
    return [
        {"name": name, "weight": 100.0 if index == 0 else 0.0}
        for index, name in enumerate(versions)
    ]


def pool_args(
    store: str,
    versions: Sequence[str],
    *,
    max_loaded: int,
    max_loaded_bytes: int | None = None,
    replicas: int = 2,
    num_cpus: float = POOL_CPUS,
) -> dict[str, Any]:
    """The spec of the pool layout: every version in pool ``shared``."""
    pool: dict[str, Any] = {
        "name": POOL,
        "num_cpus": num_cpus,
        "autoscaling": {"min_replicas": replicas, "max_replicas": replicas},
        "max_loaded_versions": max_loaded,
        "max_loaded_bytes": max_loaded_bytes,
    }
    placed = [
        {**version, "placement": "pool", "pool": POOL} for version in _weights(versions)
    ]
    return {
        **_common_args(store),
        # Counters read soon after each phase; the dedicated layout keeps the
        # default, sparing its fifty replicas the extra reports.
        "observations": {"replica_report_s": REPORT_S},
        "pools": [pool],
        "models": [{"name": MODEL, "versions": placed}],
    }


def dedicated_args(
    store: str, versions: Sequence[str], *, num_cpus: float = DEDICATED_CPUS
) -> dict[str, Any]:
    """The spec of the dedicated layout: every version in one replica of its own."""
    placed = [
        {
            **version,
            "placement": "replica",
            "num_cpus": num_cpus,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        }
        for version in _weights(versions)
    ]
    return {**_common_args(store), "models": [{"name": MODEL, "versions": placed}]}


# -- the client --------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One request as the client saw it; ``status`` -1 when no answer came."""

    version: str
    phase: str
    status: int
    latency_s: float

    @property
    def cold(self) -> bool | None:
        """Whether the request waited for its version to load: every request of
        the cold pass did, none of the warm pass did; unknown otherwise."""
        return {"cold": True, "warm": False}.get(self.phase)


@dataclass(frozen=True)
class ClientPlan:
    """What the client sends to ``base_url`` (the application's route prefix).

    Either ``steps``: lists of ``(version, phase)`` requests, each list sent by
    ``concurrency`` workers in order, with ``pause_s`` after each; or ``mix``:
    closed-loop workers drawing versions from it for ``warmup_s`` (not recorded)
    and then ``duration_s``, recorded as phase ``zipf``.
    """

    base_url: str
    body: str
    concurrency: int = 1
    steps: tuple[tuple[tuple[str, str], ...], ...] = ()
    pause_s: float = 0.0
    mix: ZipfMix | None = None
    duration_s: float = 0.0
    warmup_s: float = 0.0

    def url(self, version: str) -> str:
        """Where a request for ``version`` goes."""
        return f"{self.base_url}/v2/models/{MODEL}/versions/{version}/infer"

    def worst_case_s(self) -> float:
        """How long the client may run if every request times out."""
        rounds = sum(math.ceil(len(step) / self.concurrency) for step in self.steps)
        return (
            self.warmup_s
            + self.duration_s
            + self.pause_s * len(self.steps)
            + REQUEST_TIMEOUT_S * (rounds + 1)
        )

    def to_json(self) -> str:
        """The plan as the client process reads it."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ClientPlan:
        """The plan :meth:`to_json` wrote."""
        data = json.loads(text)
        mix = data.pop("mix")
        steps = tuple(
            tuple((version, phase) for version, phase in step)
            for step in data.pop("steps")
        )
        return cls(
            **data,
            steps=steps,
            mix=None if mix is None else ZipfMix(tuple(mix.pop("versions")), **mix),
        )


@dataclass(frozen=True)
class ClientOutput:
    """What one client run saw: its records, the seconds they span, and every
    request sent over the whole run (warm-up included) and how long it took."""

    records: tuple[Record, ...]
    seconds: float
    sent: int
    span_s: float

    def to_json(self) -> str:
        """The output as the client process prints it."""
        return json.dumps(
            {
                "records": [
                    [r.version, r.phase, r.status, r.latency_s] for r in self.records
                ],
                "seconds": self.seconds,
                "sent": self.sent,
                "span_s": self.span_s,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ClientOutput:
        """The output :meth:`to_json` printed."""
        data = json.loads(text)
        records = tuple(Record(v, p, s, t) for v, p, s, t in data["records"])
        return cls(records, data["seconds"], data["sent"], data["span_s"])


async def drive(plan: ClientPlan) -> ClientOutput:
    """Send ``plan``'s requests and record each."""
    body = plan.body.encode()
    headers = {"content-type": "application/json"}
    records: list[Record] = []
    sent = 0
    connector = aiohttp.TCPConnector(limit=plan.concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(version: str) -> tuple[int, float]:
            nonlocal sent
            sent += 1
            started = time.perf_counter()
            try:
                async with session.post(
                    plan.url(version), data=body, headers=headers
                ) as reply:
                    await reply.read()
                    status = reply.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = -1
            return status, time.perf_counter() - started

        began = time.perf_counter()
        if plan.mix is not None:
            seconds = await _closed_loop(plan, plan.mix, send, records)
        else:
            for step in plan.steps:
                await _in_order(step, plan.concurrency, send, records)
                await asyncio.sleep(plan.pause_s)
            seconds = time.perf_counter() - began
        span = time.perf_counter() - began
    return ClientOutput(tuple(records), seconds, sent, span)


async def _in_order(
    step: Sequence[tuple[str, str]],
    concurrency: int,
    send: Send,
    records: list[Record],
) -> None:
    pending = iter(step)

    async def worker() -> None:
        for version, phase in pending:
            status, latency = await send(version)
            records.append(Record(version, phase, status, latency))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _closed_loop(
    plan: ClientPlan, mix: ZipfMix, send: Send, records: list[Record]
) -> float:
    draws = mix.stream()
    measuring = False
    stop_at = time.perf_counter() + plan.warmup_s + plan.duration_s

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            version = next(draws)
            status, latency = await send(version)
            if measuring:
                records.append(Record(version, "zipf", status, latency))

    tasks = [asyncio.create_task(worker()) for _ in range(plan.concurrency)]
    await asyncio.sleep(plan.warmup_s)
    measuring = True
    began = time.perf_counter()
    await asyncio.gather(*tasks)
    return time.perf_counter() - began


def run_client(plan: ClientPlan, scratch: str) -> ClientOutput:
    """Run :func:`drive` on ``plan`` in a fresh process at niceness 19."""
    with tempfile.NamedTemporaryFile(
        "w", dir=scratch, suffix=".json", delete=False
    ) as file:
        file.write(plan.to_json())
    try:
        output = subprocess.run(
            [sys.executable, "-m", "loadtest.bench_pool", "--client", file.name],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=plan.worst_case_s() + 60,
        ).stdout
    finally:
        os.unlink(file.name)
    return ClientOutput.from_json(output.strip().splitlines()[-1])


def _client_main(plan_file: str) -> None:
    os.nice(19)
    plan = ClientPlan.from_json(Path(plan_file).read_text())
    print(asyncio.run(drive(plan)).to_json())


def version_bytes(root: Path, versions: Sequence[str]) -> list[int]:
    """What a pool counts for each version against ``max_loaded_bytes``: the
    bytes of its files in the (local) store at ``root``."""
    return [
        sum(f.stat().st_size for f in (root / MODEL / name).rglob("*") if f.is_file())
        for name in versions
    ]


def warm_group(
    max_loaded: int, max_loaded_bytes: int | None, sizes: Sequence[int]
) -> int:
    """How many versions one pool replica surely holds at once: ``max_loaded``,
    fewer if that many of the largest would pass ``max_loaded_bytes``."""
    if max_loaded_bytes is None:
        return max_loaded
    return max(1, min(max_loaded, max_loaded_bytes // max(sizes)))


def warm_steps(
    versions: Sequence[str], group: int, per_version: int
) -> tuple[tuple[tuple[str, str], ...], ...]:
    """The warm pass's steps: for each ``group`` of versions in turn, one
    ``prime`` request per version, then ``per_version`` ``warm`` requests each.

    A group no larger than what one replica holds (:func:`warm_group`) stays
    loaded while it is measured, wherever its versions were loaded.
    """
    steps = []
    for start in range(0, len(versions), group):
        chunk = versions[start : start + group]
        steps.append(tuple((version, "prime") for version in chunk))
        steps.append(
            tuple((version, "warm") for version in chunk for _ in range(per_version))
        )
    return tuple(steps)


# -- /metrics ----------------------------------------------------------------------

_COUNTERS = {
    "rayfleet_pool_loads_total": "loads",
    "rayfleet_pool_load_seconds_total": "load_seconds",
    "rayfleet_pool_load_waits_total": "load_waits",
    "rayfleet_pool_load_failures_total": "load_failures",
}
_UNLOADS = "rayfleet_pool_unloads_total"


@dataclass(frozen=True)
class PoolCounters:
    """A pool's counters summed over its replicas; unloads by reason."""

    loads: float = 0.0
    load_seconds: float = 0.0
    load_waits: float = 0.0
    load_failures: float = 0.0
    unloads: Mapping[str, float] = field(default_factory=dict)

    def __sub__(self, other: PoolCounters) -> PoolCounters:
        reasons = {*self.unloads, *other.unloads}
        return PoolCounters(
            loads=self.loads - other.loads,
            load_seconds=self.load_seconds - other.load_seconds,
            load_waits=self.load_waits - other.load_waits,
            load_failures=self.load_failures - other.load_failures,
            unloads={
                reason: self.unloads.get(reason, 0.0) - other.unloads.get(reason, 0.0)
                for reason in sorted(reasons)
            },
        )

    @property
    def load_mean_s(self) -> float | None:
        """Seconds one load took on average; None without loads."""
        return self.load_seconds / self.loads if self.loads > 0 else None


def pool_counters(text: str, pool: str) -> PoolCounters:
    """The counters of ``pool`` in a ``/metrics`` page (zero for a pool whose
    replicas have not reported yet)."""
    sums: dict[str, float] = defaultdict(float)
    unloads: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("pool") != pool:
                continue
            if sample.name == _UNLOADS:
                unloads[sample.labels.get("reason", "")] += sample.value
            elif sample.name in _COUNTERS:
                sums[_COUNTERS[sample.name]] += sample.value
    return PoolCounters(**sums, unloads=dict(sorted(unloads.items())))


def loaded_versions(text: str, pool: str) -> dict[str, float]:
    """Versions each replica of ``pool`` holds loaded, by replica, from a
    ``/metrics`` page."""
    return {
        sample.labels["replica"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rayfleet_pool_loaded_versions"
        and sample.labels.get("pool") == pool
    }


# -- the report --------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Requests, failures, and the latency of the answered ones (NaN for none)."""

    requests: int
    failed: int
    mean_ms: float
    p50_ms: float
    p99_ms: float


def summarize(
    records: Sequence[Record],
    phase: str,
    versions: Collection[str] | None = None,
) -> Summary:
    """The requests of ``phase`` (to ``versions`` alone, if given)."""
    chosen = [
        r
        for r in records
        if r.phase == phase and (versions is None or r.version in versions)
    ]
    answered = np.array([r.latency_s for r in chosen if r.status == OK]) * 1000
    if answered.size == 0:
        answered = np.array([math.nan])
    return Summary(
        requests=len(chosen),
        failed=sum(r.status != OK for r in chosen),
        mean_ms=float(answered.mean()),
        p50_ms=float(np.percentile(answered, 50)),
        p99_ms=float(np.percentile(answered, 99)),
    )


@dataclass(frozen=True)
class LayoutResult:
    """What one layout measured. ``counters``: the pool's, by phase (``cold``,
    ``warm``, ``zipf``), and ``loaded``: the versions each pool replica held at
    the end; both empty for the dedicated layout."""

    name: str
    versions: tuple[str, ...]
    cold: ClientOutput | None
    warm: ClientOutput
    zipf: ClientOutput
    rss_bytes: tuple[int, ...]
    counters: Mapping[str, PoolCounters] = field(default_factory=dict)
    loaded: Mapping[str, float] = field(default_factory=dict)

    @property
    def records(self) -> tuple[Record, ...]:
        """Every request of every phase."""
        outputs = [self.cold, self.warm, self.zipf]
        return tuple(
            r for output in outputs if output is not None for r in output.records
        )


@dataclass(frozen=True)
class Settings:
    """How the run was made, for the report's opening lines."""

    concurrency: int
    duration_s: float
    max_loaded: int
    max_loaded_bytes: int | None
    pool_replicas: int
    warm_requests: int
    exponent: float = EXPONENT
    seed: int = SEED


def _pair(summary: Summary) -> str:
    if math.isnan(summary.p50_ms):
        return "n/a"
    return f"{summary.p50_ms:.2f} / {summary.p99_ms:.2f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def _span(versions: Sequence[str]) -> str:
    return versions[0] if len(versions) == 1 else f"{versions[0]}-{versions[-1]}"


def _memory(rss: Sequence[int], versions: int) -> tuple[str, str, str]:
    """Mean / max MiB per replica, MiB of all replicas, and MiB per version."""
    if not rss:
        return "n/a", "n/a", "n/a"
    mib = np.array(rss, dtype=float) / 2**20
    return (
        f"{mib.mean():.0f} / {mib.max():.0f}",
        f"{mib.sum():.0f}",
        f"{mib.sum() / versions:.1f}",
    )


def _failed(layout: LayoutResult) -> str:
    return str(sum(r.status != OK for r in layout.records))


def render_report(pool: LayoutResult, dedicated: LayoutResult, run: Settings) -> str:
    """The markdown report of both layouts, the opening lines saying how the run
    was made and which versions were compared."""
    compared = dedicated.versions
    pool_warm = summarize(pool.warm.records, "warm", compared)
    dedicated_warm = summarize(dedicated.warm.records, "warm")
    cold = summarize(pool.cold.records if pool.cold else (), "cold")
    at_cold, at_warm, at_zipf = (
        pool.counters.get(phase, PoolCounters()) for phase in ("cold", "warm", "zipf")
    )
    load_s = at_cold.load_mean_s
    # Means, not medians: the mean of (cold - load) is the difference of means.
    beyond = None if load_s is None else cold.mean_ms - load_s * 1000
    warm_mean = summarize(pool.warm.records, "warm").mean_ms
    waits = at_zipf.load_waits
    rows = [
        ["versions served", str(len(pool.versions)), str(len(compared))],
        [
            f"Zipf run, c={run.concurrency}: requests/s",
            f"{len(pool.zipf.records) / pool.zipf.seconds:.0f}",
            f"{len(dedicated.zipf.records) / dedicated.zipf.seconds:.0f}",
        ],
        [
            "Zipf run: p50 / p99 ms",
            _pair(summarize(pool.zipf.records, "zipf")),
            _pair(summarize(dedicated.zipf.records, "zipf")),
        ],
    ]
    if len(compared) < len(pool.versions):
        rows.append(
            [
                f"Zipf run, requests to {_span(compared)}: p50 / p99 ms",
                _pair(summarize(pool.zipf.records, "zipf", compared)),
                _pair(summarize(dedicated.zipf.records, "zipf")),
            ]
        )
    rows += [
        [
            f"warm, {_span(compared)}: p50 / p99 ms",
            _pair(pool_warm),
            _pair(dedicated_warm),
        ],
        [
            "warm p50, pool / dedicated",
            _ratio(pool_warm.p50_ms, dedicated_warm.p50_ms),
            "",
            "<= 1.2",
        ],
        ["cold (first request of a version): p50 / p99 ms", _pair(cold), "none"],
        [
            "one load, mean ms (/metrics)",
            _ms(None if load_s is None else load_s * 1000),
        ],
        ["cold beyond the load, mean ms", _ms(beyond)],
        [
            "cold beyond the load and a warm request, mean ms",
            _ms(None if beyond is None else beyond - warm_mean),
        ],
        [
            "loads in the cold pass (/metrics)",
            f"{at_cold.loads:.0f} for {cold.requests} requests",
            "",
            "one per request",
        ],
        [
            "load waits in the warm pass (/metrics)",
            f"{at_warm.load_waits:.0f} for "
            f"{sum(r.phase == 'prime' for r in pool.warm.records)} priming requests",
            "",
            "at most one per priming request",
        ],
        [
            "loads per minute, Zipf run (/metrics)",
            f"{at_zipf.loads / (pool.zipf.span_s / 60):.1f}",
            "0",
        ],
        [
            "requests that waited for a load, Zipf run (/metrics)",
            f"{waits:.0f} of {pool.zipf.sent}"
            + (f" ({100 * waits / pool.zipf.sent:.1f}%)" if pool.zipf.sent else ""),
            "0",
        ],
        [
            "unloads by reason, Zipf run (/metrics)",
            ", ".join(f"{k} {v:.0f}" for k, v in at_zipf.unloads.items()) or "0",
        ],
        ["failed requests, every phase", _failed(pool), _failed(dedicated), "0"],
        ["replicas", str(len(pool.rss_bytes)), str(len(dedicated.rss_bytes))],
    ]
    memory = [
        _memory(layout.rss_bytes, len(layout.versions)) for layout in (pool, dedicated)
    ]
    for index, label in enumerate(
        [
            "RSS per replica, mean / max MiB",
            "RSS of all replicas, MiB",
            "RSS per version served, MiB",
        ]
    ):
        rows.append([label, memory[0][index], memory[1][index]])
    rows.append(
        [
            "versions loaded per replica at the end (/metrics)",
            " / ".join(f"{n:.0f}" for n in pool.loaded.values()) or "n/a",
        ]
    )
    header = ["measure", "pool", "dedicated", "target"]
    table = [row + [""] * (len(header) - len(row)) for row in rows]
    return (
        f"{_opening(pool, dedicated, run)}\n\n"
        + markdown_table(header, table, right={1, 2})
        + "\n"
    )


def _ratio(numerator: float, denominator: float) -> str:
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


def _opening(pool: LayoutResult, dedicated: LayoutResult, run: Settings) -> str:
    compared = dedicated.versions
    which = (
        "every version"
        if len(compared) == len(pool.versions)
        else f"the {len(compared)} hottest versions alone ({_span(compared)})"
    )
    bound = "none" if run.max_loaded_bytes is None else f"{run.max_loaded_bytes}"
    return (
        f"`{MODEL}`: {len(pool.versions)} versions ({_span(pool.versions)}, hottest "
        f"first). Pool `{POOL}`: {run.pool_replicas} replicas of {POOL_CPUS} CPU, "
        f"max_loaded_versions {run.max_loaded}, max_loaded_bytes {bound}. "
        f"Dedicated: one replica of {DEDICATED_CPUS} CPU for {which}. Zipf "
        f"exponent {run.exponent:g}, seed {run.seed}, closed loop c="
        f"{run.concurrency} for {run.duration_s:g} s per layout; one row of v2 "
        f"JSON a request, pinned to its version. Warm: {run.warm_requests} "
        f"requests per version, one at a time, after a priming one."
    )


# -- on Ray ------------------------------------------------------------------------


def _metrics(base_url: str) -> str:
    import httpx

    time.sleep(REPORT_WAIT_S)
    return httpx.get(f"{base_url}/metrics", timeout=30).text


def _wait_ready(base_url: str, timeout_s: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base_url}/v2/health/ready", timeout=5).status_code == OK:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base_url} never became ready")
        time.sleep(0.5)


def _rss(pids: Sequence[int]) -> tuple[int, ...]:
    import psutil

    return tuple(int(psutil.Process(pid).memory_info().rss) for pid in pids)


def _measure(
    app: str,
    spec_args: dict[str, Any],
    mix: ZipfMix,
    base: ClientPlan,
    run: Settings,
    scratch: str,
) -> LayoutResult:
    """Deploy ``app``, run its phases, read its replicas' memory, delete it."""
    from ray import serve

    from rayfleet.deployments.app import build
    from rayfleet.deployments.health import pool_deployment_name

    pooled = app == "pool"
    url = base.base_url
    sizes = version_bytes(Path(spec_args["store"]), mix.versions)
    group = warm_group(run.max_loaded, run.max_loaded_bytes, sizes)
    serve.run(build(spec_args), name=app, route_prefix=f"/{app}")
    _wait_ready(url)
    plans = {
        "cold": replace(base, steps=(tuple((v, "cold") for v in mix.versions),)),
        "warm": replace(
            base,
            steps=warm_steps(mix.versions, group, run.warm_requests),
            pause_s=ROUTING_SETTLE_S,
        ),
        "zipf": replace(
            base,
            concurrency=run.concurrency,
            mix=mix,
            duration_s=run.duration_s,
            warmup_s=ZIPF_WARMUP_S,
        ),
    }
    # A dedicated replica loaded its version before it became healthy: nothing is
    # cold there, and there is no pool to count loads in.
    phases = ["cold", "warm", "zipf"] if pooled else ["warm", "zipf"]
    outputs: dict[str, ClientOutput] = {}
    counters: dict[str, PoolCounters] = {}
    text = _metrics(url) if pooled else ""
    for phase in phases:
        before = pool_counters(text, POOL)
        outputs[phase] = run_client(plans[phase], scratch)
        _say(app, phase, outputs[phase])
        if pooled:
            text = _metrics(url)
            counters[phase] = pool_counters(text, POOL) - before
    title = pool_deployment_name(POOL) if pooled else f"{MODEL}:"
    rss = _rss(actor_pids(f"ServeReplica:{app}:{title}"))
    serve.delete(app)
    return LayoutResult(
        name=app,
        versions=mix.versions,
        cold=outputs.get("cold"),
        warm=outputs["warm"],
        zipf=outputs["zipf"],
        rss_bytes=rss,
        counters=counters,
        loaded=loaded_versions(text, POOL),
    )


def _say(app: str, phase: str, output: ClientOutput) -> None:
    ok = [r.latency_s for r in output.records if r.status == OK]
    failed = len(output.records) - len(ok)
    p50 = np.percentile(np.array(ok) * 1000, 50) if ok else math.nan
    print(
        f"{app:9} {phase:4} {len(output.records):6} requests  p50 {p50:7.2f} ms  "
        f"failed {failed}",
        flush=True,
    )


def _one_row_body() -> str:
    from loadtest.bench_overhead import digits_payloads

    rows = np.ascontiguousarray(digits_split()[1][:1])
    body, _ = digits_payloads(rows)["json"]
    return body.decode()


def main() -> None:
    """Build the versions once, then measure the pool and the dedicated layout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument(
        "--dedicated-versions",
        type=int,
        default=VERSIONS,
        help="serve only the N hottest versions in the dedicated layout",
    )
    parser.add_argument("--max-loaded", type=int, default=16, help="per pool replica")
    parser.add_argument("--max-loaded-bytes", type=int, help="per pool replica")
    parser.add_argument("--pool-replicas", type=int, default=2)
    parser.add_argument("--warm-requests", type=int, default=5, help="per version")
    parser.add_argument("--num-cpus", type=int, default=4, help="Ray's CPUs")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        _client_main(args.client)
        return
    if not 1 <= args.dedicated_versions <= VERSIONS:
        parser.error(f"--dedicated-versions must lie between 1 and {VERSIONS}")
    run = Settings(
        concurrency=args.concurrency,
        duration_s=args.duration,
        max_loaded=args.max_loaded,
        max_loaded_bytes=args.max_loaded_bytes,
        pool_replicas=args.pool_replicas,
        warm_requests=args.warm_requests,
    )
    ensure_pool_store()
    mix = ZipfMix(version_names())
    store = str(POOL_STORE)
    port = free_port()
    OUT.mkdir(parents=True, exist_ok=True)
    import ray
    from ray import serve

    from rayfleet.deployments.serve_env import apply_serve_env

    apply_serve_env()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    body = _one_row_body()
    try:
        with tempfile.TemporaryDirectory(dir=OUT) as scratch:
            pool = _measure(
                "pool",
                pool_args(
                    store,
                    mix.versions,
                    max_loaded=args.max_loaded,
                    max_loaded_bytes=args.max_loaded_bytes,
                    replicas=args.pool_replicas,
                ),
                mix,
                ClientPlan(f"http://127.0.0.1:{port}/pool", body),
                run,
                scratch,
            )
            hottest = mix.hottest(args.dedicated_versions)
            dedicated = _measure(
                "dedicated",
                dedicated_args(store, hottest.versions),
                hottest,
                ClientPlan(f"http://127.0.0.1:{port}/dedicated", body),
                run,
                scratch,
            )
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    (OUT / "pool-requests.json").write_text(
        json.dumps(
            {
                layout.name: [{**asdict(r), "cold": r.cold} for r in layout.records]
                for layout in (pool, dedicated)
            }
        )
    )
    write_report("pool.md", render_report(pool, dedicated, run))


if __name__ == "__main__":
    main()
