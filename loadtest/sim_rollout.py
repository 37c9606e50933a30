"""Progressive rollouts under simulated traffic: false rollbacks and time to decide.

Drives the pure state machine in ``rayfleet.platform.rollout`` with window
statistics sampled from known distributions, no Ray and no HTTP::

    .venv/bin/python -m loadtest.sim_rollout [--runs 100] [--seed 0] [--rps 50] \\
        [--data loadtest/data/latency_slices.json] [--block 6] [--horizon-s 1800]

Traffic arrives at ``--rps`` (Poisson); each request goes to the canary with the
rollout's current weight. Every ``evaluate_every_s`` the controller's window since
the step began is summarised the way a validator would: error rates, latency
sketches of end-to-end and model time (real ``LatencySketch`` objects, so the
latency gates weigh their evidence as on real Serve) and their p50/p99, the
Jensen-Shannon divergence (bits) between predicted-class counts drawn from
multinomials, input-drift share (PSI per feature, approximated by its sampling
distribution, since canary and stable see the same inputs) and, in the shadow
phase, agreement on shadow pairs. At the 100% step stable takes no traffic; its
numbers come from the previous step's window, as the validator's do.

Latency comes from one of two sources:

- a lognormal per version (:class:`LognormalLatency`), model time and end to end
  alike: thin-tailed, the same for a version in the router and one in a replica;
- latency recorded on real Serve by ``loadtest/rollout_trials.py --record``
  (:class:`RecordedLatency`): each simulated interval replays one recorded
  evaluation interval of the same load, both versions' sketches of that moment
  (a block bootstrap, :class:`loadtest.latency_slices.SliceSampler`), its
  requests drawn from their bins. Heavy tails, bursts and the difference between
  the router and a replica of its own come with the data. Each load runs at the
  request rate measured there.

The class mixes and accuracies are the demo's (``rayfleet.cli.demo``) predictions on
its 540 held-out digits: v1, logistic regression, 96.1% accurate (stable); v3, a
depth-3 decision tree, 47.6% accurate, agreeing with v1 on 48.0% (the bad canary).

Scenarios, all with the default :class:`RolloutSpec` unless named:

- identical: the canary's statistics come from stable's own distributions;
  every rollback is a false one (target 0 of 100).
- bad (v3): how many canary requests users see, and how long, before rollback
  (targets: at most 500 requests and 60 s).
- slow: v1's predictions at 3x its latency, which the latency gates must catch.
- the identical and bad canaries with a 10% shadow phase first (good canary
  agreeing 96.3% with stable, as v2 does), where the bad canary should never
  reach users.
- per load recorded in ``--data``: the good canary (its rollbacks are the false
  rollback rate to compare with the harness's) and, where recorded, the slow one.
  Without the file these are skipped, and the table says so.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from loadtest.latency_slices import (
    DEFAULT_PATH,
    Bins,
    Recording,
    Slice,
    SliceSampler,
    read_recording,
)
from rayfleet.platform.config.rollout import RolloutSpec
from rayfleet.platform.rollout import (
    Phase,
    Verdict,
    WindowComparison,
    shadow_percent,
    start,
    step,
)
from rayfleet.platform.validation.drift import chi_square
from rayfleet.platform.validation.sketch import LatencySketch

CLASSES = 10
FEATURES = 64  # 8x8 digits pixels
REFERENCE_ROWS = 540  # held-out rows in each version's reference.parquet
PSI_BINS = 10
HORIZON_S = 1800.0
# Recorded slices a block of the bootstrap runs through: 30 s at the default
# 5 s evaluations, a step's minimum length, so a burst as long as a step recurs.
DEFAULT_BLOCK = 6


@dataclass(frozen=True)
class Behaviour:
    """What a version's traffic looks like: the distributions windows sample.

    The latency fields are :class:`LognormalLatency`'s; recorded latency ignores
    them.
    """

    class_counts: tuple[int, ...]
    agreement_with_stable: float
    error_rate: float = 0.001
    latency_median_ms: float = 8.0
    latency_sigma: float = 0.35

    @property
    def class_mix(self) -> np.ndarray:
        counts = np.asarray(self.class_counts, dtype=float)
        mix: np.ndarray = counts / counts.sum()
        return mix


# Predicted-class counts on the demo's held-out split (see the module docstring).
STABLE = Behaviour((53, 62, 52, 55, 53, 54, 54, 52, 48, 57), 1.0)
IDENTICAL = Behaviour(STABLE.class_counts, 0.963)
BAD_V3 = Behaviour((53, 0, 0, 275, 45, 81, 69, 0, 0, 17), 0.480)
# The harness's slow canary: v1's own model, answering the same, only slower.
SLOW = Behaviour(STABLE.class_counts, 1.0, latency_median_ms=3 * 8.0)


class Latency(Protocol):
    """Where one run's latencies come from; a new one per run, as it keeps state."""

    def next_interval(self, rng: np.random.Generator, weight: float) -> None:
        """Move on to the next evaluation interval, the canary at ``weight``%."""
        ...

    def draw(
        self, rng: np.random.Generator, canary: bool, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """End-to-end and model times (ms) of ``n`` successful requests of the
        canary or stable in this interval."""
        ...


@dataclass(frozen=True)
class LognormalLatency:
    """Each version's latency from its behaviour's lognormal, independent between
    intervals; the model's own time is the whole request (no hop, no queue)."""

    stable: Behaviour
    canary: Behaviour

    def next_interval(self, rng: np.random.Generator, weight: float) -> None:
        """Nothing changes between intervals."""

    def draw(
        self, rng: np.random.Generator, canary: bool, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` lognormal times, the same for end to end and model."""
        behaviour = self.canary if canary else self.stable
        median, sigma = behaviour.latency_median_ms, behaviour.latency_sigma
        values = rng.lognormal(np.log(median), sigma, n)
        return values, values


class RecordedLatency:
    """Latency replayed from slices recorded on real Serve.

    Each interval takes one recorded slice (:class:`SliceSampler`) and draws each
    version's requests from that slice's bins, end-to-end and model time apart
    (the gates read them apart). A slice without requests of a version (a few
    seconds at 5% can have none) lends it those of every slice at its weight.
    """

    def __init__(self, sampler: SliceSampler, relative_accuracy: float) -> None:
        self.sampler = sampler
        self.relative_accuracy = relative_accuracy
        self._slice: Slice | None = None
        self._weight = 0.0

    def next_interval(self, rng: np.random.Generator, weight: float) -> None:
        """Draw the slice this interval replays."""
        self._slice = self.sampler.next(rng, weight)
        self._weight = weight

    def draw(
        self, rng: np.random.Generator, canary: bool, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` requests' times from the interval's slice."""
        assert self._slice is not None, "next_interval comes first"
        own = self._slice.canary if canary else self._slice.stable
        pooled = self.sampler.merged(self._weight)[1 if canary else 0]
        times = []
        for bins, fallback in ((own.e2e, pooled.e2e), (own.model, pooled.model)):
            source = bins if bins.count else fallback
            times.append(self._values(rng, source, n))
        return times[0], times[1]

    def _values(self, rng: np.random.Generator, bins: Bins, n: int) -> np.ndarray:
        # A version never timed this way (no model time in a remote runtime)
        # leaves its sketch empty, as the Validator's would be.
        if not bins.count:
            return np.zeros(0)
        return bins.draw(rng, n, self.relative_accuracy)


def js_bits(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits between two vectors of counts."""
    p, q = a / a.sum(), b / b.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log2(x[nz] / m[nz])).sum())

    return (kl(p) + kl(q)) / 2


@dataclass
class Side:
    """One version's requests in the current window."""

    requests: int = 0
    errors: int = 0
    latency: LatencySketch = field(default_factory=LatencySketch)
    model_latency: LatencySketch = field(default_factory=LatencySketch)
    classes: np.ndarray = field(default_factory=lambda: np.zeros(CLASSES))

    def add(
        self,
        rng: np.random.Generator,
        n: int,
        behaviour: Behaviour,
        latency: Latency,
        canary: bool,
    ) -> None:
        errors = int(rng.binomial(n, behaviour.error_rate))
        self.requests += n
        self.errors += errors
        # The Validator times only the requests that succeeded.
        e2e, model = latency.draw(rng, canary, n - errors)
        for sketch, values in ((self.latency, e2e), (self.model_latency, model)):
            for value in values.tolist():
                sketch.add(value)
        self.classes += rng.multinomial(n - errors, behaviour.class_mix)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _sample(sketch: LatencySketch) -> LatencySketch | None:
    return sketch if sketch.count else None


@dataclass
class Window:
    canary: Side = field(default_factory=Side)
    stable: Side = field(default_factory=Side)
    pairs: int = 0
    agreed: int = 0

    def compare(
        self, rng: np.random.Generator, baseline: Side, psi_threshold: float
    ) -> WindowComparison:
        stable = self.stable if self.stable.requests else baseline
        canary = self.canary
        js = pvalue = None
        if canary.classes.sum() and stable.classes.sum():
            js = js_bits(canary.classes, stable.classes)
            # The Validator's own test, as the controller computes it.
            pvalue = chi_square(stable.classes, canary.classes)[1]
        drift = None
        if canary.requests:
            scale = 1 / canary.requests + 1 / REFERENCE_ROWS
            psi = scale * rng.chisquare(PSI_BINS - 1, FEATURES)
            drift = float((psi > psi_threshold).mean())
        return WindowComparison(
            canary_requests=canary.requests,
            stable_requests=stable.requests,
            canary_error_rate=canary.error_rate,
            stable_error_rate=stable.error_rate,
            canary_p50_ms=canary.latency.quantile(0.5),
            canary_p99_ms=canary.latency.quantile(0.99),
            stable_p50_ms=stable.latency.quantile(0.5),
            stable_p99_ms=stable.latency.quantile(0.99),
            canary_model_p50_ms=canary.model_latency.quantile(0.5),
            canary_model_p99_ms=canary.model_latency.quantile(0.99),
            stable_model_p50_ms=stable.model_latency.quantile(0.5),
            stable_model_p99_ms=stable.model_latency.quantile(0.99),
            prediction_js=js,
            prediction_chi2_pvalue=pvalue,
            input_drift_share=drift,
            shadow_pairs=self.pairs,
            agreement=self.agreed / self.pairs if self.pairs else None,
            canary_latency=_sample(canary.latency),
            stable_latency=_sample(stable.latency),
            canary_model_latency=_sample(canary.model_latency),
            stable_model_latency=_sample(stable.model_latency),
        )


@dataclass(frozen=True)
class Outcome:
    phase: Phase
    seconds: float
    canary_requests: int  # served to users, shadow requests not counted
    failed_gates: tuple[str, ...]


def simulate(
    rng: np.random.Generator,
    spec: RolloutSpec,
    canary: Behaviour,
    rps: float,
    latency: Latency | None = None,
    horizon_s: float = HORIZON_S,
) -> Outcome:
    """One rollout from start to a decision (or ``horizon_s``); latency from
    ``canary``'s and stable's lognormals unless ``latency`` is given."""
    latency = latency or LognormalLatency(STABLE, canary)
    state, _ = start("digits", "canary", "v1", spec, 0.0)
    state, _ = step(state, spec, Window().compare(rng, Side(), 1.0), 0.0)
    window, baseline, served, now = Window(), Side(), 0, 0.0
    dt = spec.evaluate_every_s
    while not state.finished and now < horizon_s:
        now += dt
        n = int(rng.poisson(rps * dt))
        latency.next_interval(rng, state.weight)
        if state.phase is Phase.SHADOW:
            shadowed = int(rng.binomial(n, shadow_percent(state) / 100))
            window.stable.add(rng, n, STABLE, latency, canary=False)
            window.canary.add(rng, shadowed, canary, latency, canary=True)
            window.pairs += shadowed
            window.agreed += int(rng.binomial(shadowed, canary.agreement_with_stable))
        else:
            to_canary = int(rng.binomial(n, state.weight / 100))
            served += to_canary
            window.canary.add(rng, to_canary, canary, latency, canary=True)
            window.stable.add(rng, n - to_canary, STABLE, latency, canary=False)
        comparison = window.compare(rng, baseline, spec.gates.feature_psi_threshold)
        before = state.step_started_at
        state, _ = step(state, spec, comparison, now)
        if state.step_started_at != before:
            if window.stable.requests:
                baseline = window.stable
            window = Window()
    failed = tuple(g.name for g in state.gates if g.verdict is Verdict.FAIL)
    rolled_back = state.phase is Phase.ROLLED_BACK
    return Outcome(state.phase, now, served, failed if rolled_back else ())


@dataclass(frozen=True)
class Scenario:
    name: str
    canary: Behaviour
    spec: RolloutSpec
    good: bool
    rps: float
    latency: Callable[[], Latency] | None = None  # a new source per run


# The harness's canaries (loadtest/rollout_trials.py) the recording can replay:
# what each predicts, and whether a rollback of it is a false one.
RECORDED_CANARIES = {"good": (IDENTICAL, True), "slow": (SLOW, False)}


def recorded_scenarios(
    recording: Recording, spec: RolloutSpec, block: int
) -> list[Scenario]:
    """Per recorded load, the good canary and the slow one where recorded, each
    at the load's measured request rate."""
    scenarios = []
    for load in recording.loads:
        for name, (behaviour, good) in RECORDED_CANARIES.items():
            runs = recording.runs(load, name)
            if not runs:
                continue
            sampler = SliceSampler(runs, block)
            scenarios.append(
                Scenario(
                    f"{name} canary, recorded {load} ({len(runs)} runs)",
                    behaviour,
                    spec,
                    good,
                    recording.rps(load, name),
                    _replaying(sampler, recording.relative_accuracy),
                )
            )
    return scenarios


def _replaying(
    sampler: SliceSampler, relative_accuracy: float
) -> Callable[[], Latency]:
    return lambda: RecordedLatency(sampler.fresh(), relative_accuracy)


def run_scenario(
    scenario: Scenario,
    runs: int,
    seed: int,
    index: int,
    horizon_s: float = HORIZON_S,
) -> list[Outcome]:
    """``runs`` seeded rollouts of one scenario, each undecided after
    ``horizon_s``."""
    return [
        simulate(
            np.random.default_rng([seed, index, run]),
            scenario.spec,
            scenario.canary,
            scenario.rps,
            scenario.latency() if scenario.latency else None,
            horizon_s,
        )
        for run in range(runs)
    ]


def _spread(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    median, p95 = np.percentile(values, [50, 95])
    return f"{median:.0f} / {p95:.0f} / {max(values):.0f}{unit}"


def table_row(scenario: Scenario, outcomes: list[Outcome]) -> str:
    """One markdown row: outcomes, canary requests, seconds, failing gates."""
    runs = len(outcomes)
    phases = Counter(o.phase for o in outcomes)
    decided = [o for o in outcomes if o.phase in (Phase.PROMOTED, Phase.ROLLED_BACK)]
    gates = Counter(g for o in outcomes for g in o.failed_gates)
    rolled = phases[Phase.ROLLED_BACK]
    false = f" ({rolled / runs:.0%} false)" if scenario.good and rolled else ""
    return (
        f"| {scenario.name} | {scenario.rps:.0f} | {runs} | "
        f"{phases[Phase.PROMOTED]} | {rolled}{false} | {runs - len(decided)} | "
        f"{_spread([o.canary_requests for o in decided], '')} | "
        f"{_spread([o.seconds for o in decided], ' s')} | "
        f"{', '.join(f'{g} x{c}' for g, c in gates.most_common()) or '-'} |"
    )


def main(argv: list[str] | None = None) -> None:
    """Run every scenario and print a markdown table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rps", type=float, default=50.0)
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_PATH,
        help="latency recorded by loadtest.rollout_trials --record",
    )
    parser.add_argument(
        "--block",
        type=int,
        default=DEFAULT_BLOCK,
        help="recorded slices per block of the bootstrap",
    )
    parser.add_argument(
        "--horizon-s",
        type=float,
        default=HORIZON_S,
        help="a run still undecided this long is counted undecided; the "
        "harness's --limit-s, to compare rates with it",
    )
    args = parser.parse_args(argv)

    default, shadowed = RolloutSpec(), RolloutSpec(shadow_percent=10)
    rps = args.rps
    scenarios = [
        Scenario("identical canary", IDENTICAL, default, True, rps),
        Scenario("bad canary (v3)", BAD_V3, default, False, rps),
        Scenario("slow canary (3x latency)", SLOW, default, False, rps),
        Scenario("good canary, 10% shadow first", IDENTICAL, shadowed, True, rps),
        Scenario("bad canary (v3), 10% shadow first", BAD_V3, shadowed, False, rps),
    ]
    data = _shown(args.data)
    if args.data.exists():
        recording = read_recording(args.data)
        scenarios += recorded_scenarios(recording, default, args.block)
        loads = ", ".join(recording.loads) or "none"
        source = f"latency data: {data} (loads: {loads})"
    else:
        source = (
            f"latency data: {data} is missing, so the recorded scenarios are "
            "skipped; record it with .venv/bin/python -m loadtest.rollout_trials "
            "--record"
        )
    print(
        f"command: .venv/bin/python -m loadtest.sim_rollout --runs {args.runs} "
        f"--seed {args.seed} --rps {args.rps:g} --data {data} --block {args.block} "
        f"--horizon-s {args.horizon_s:g}"
    )
    print(source)
    print(
        f"lognormal scenarios at {args.rps:g} requests/s, recorded ones at their "
        f"load's measured rate; steps {list(default.steps)}; "
        f"min {default.min_requests_per_step} canary requests and "
        f"{default.min_step_s:g} s a step; decisions every "
        f"{default.evaluate_every_s:g} s\n"
    )
    print(
        "| scenario | requests/s | runs | promoted | rolled back | undecided | "
        "canary requests served (median / p95 / max) | "
        "seconds to decision (median / p95 / max) | failing gates |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for index, scenario in enumerate(scenarios):
        outcomes = run_scenario(scenario, args.runs, args.seed, index, args.horizon_s)
        print(table_row(scenario, outcomes), flush=True)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    main()
