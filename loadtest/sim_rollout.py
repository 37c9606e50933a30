"""Progressive rollouts under simulated traffic: false rollbacks and time to decide.

Drives the pure state machine in ``rayfleet.platform.rollout`` with window
statistics sampled from known distributions, no Ray and no HTTP::

    .venv/bin/python -m loadtest.sim_rollout [--runs 100] [--seed 0] [--rps 50]

Traffic arrives at ``--rps`` (Poisson); each request goes to the canary with the
rollout's current weight. Every ``evaluate_every_s`` the controller's window since
the step began is summarised the way a validator would: error rates, p50/p99 of
lognormal latencies, the Jensen-Shannon divergence (bits) between predicted-class
counts drawn from multinomials, input-drift share (PSI per feature, approximated by
its sampling distribution, since canary and stable see the same inputs) and, in the
shadow phase, agreement on shadow pairs. At the 100% step stable takes no
traffic; its numbers come from the previous step's window, as the validator's do.

The class mixes and accuracies are the demo's (``rayfleet.cli.demo``) predictions on
its 540 held-out digits: v1, logistic regression, 96.1% accurate (stable); v3, a
depth-3 decision tree, 47.6% accurate, agreeing with v1 on 48.0% (the bad canary).

Scenarios, all with the default :class:`RolloutSpec` unless named:

- identical: the canary's statistics come from stable's own distributions;
  every rollback is a false one (target 0 of 100).
- bad (v3): how many canary requests users see, and how long, before rollback
  (targets: at most 500 requests and 60 s).
- the same two with a 10% shadow phase first (good canary agreeing 96.3% with
  stable, as v2 does), where the bad canary should never reach users.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

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

CLASSES = 10
FEATURES = 64  # 8x8 digits pixels
REFERENCE_ROWS = 540  # held-out rows in each version's reference.parquet
PSI_BINS = 10
HORIZON_S = 1800.0


@dataclass(frozen=True)
class Behaviour:
    """What a version's traffic looks like: the distributions windows sample."""

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
    latencies: list[np.ndarray] = field(default_factory=list)
    classes: np.ndarray = field(default_factory=lambda: np.zeros(CLASSES))

    def add(self, rng: np.random.Generator, n: int, behaviour: Behaviour) -> None:
        errors = int(rng.binomial(n, behaviour.error_rate))
        self.requests += n
        self.errors += errors
        self.latencies.append(
            rng.lognormal(
                np.log(behaviour.latency_median_ms), behaviour.latency_sigma, n
            )
        )
        self.classes += rng.multinomial(n - errors, behaviour.class_mix)

    def percentile(self, q: float) -> float | None:
        if not self.requests:
            return None
        return float(np.percentile(np.concatenate(self.latencies), q))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


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
            canary_p50_ms=canary.percentile(50),
            canary_p99_ms=canary.percentile(99),
            stable_p50_ms=stable.percentile(50),
            stable_p99_ms=stable.percentile(99),
            prediction_js=js,
            prediction_chi2_pvalue=pvalue,
            input_drift_share=drift,
            shadow_pairs=self.pairs,
            agreement=self.agreed / self.pairs if self.pairs else None,
        )


@dataclass(frozen=True)
class Outcome:
    phase: Phase
    seconds: float
    canary_requests: int  # served to users, shadow requests not counted
    failed_gates: tuple[str, ...]


def simulate(
    rng: np.random.Generator, spec: RolloutSpec, canary: Behaviour, rps: float
) -> Outcome:
    """One rollout from start to a decision (or the horizon)."""
    state, _ = start("digits", "canary", "v1", spec, 0.0)
    state, _ = step(state, spec, Window().compare(rng, Side(), 1.0), 0.0)
    window, baseline, served, now = Window(), Side(), 0, 0.0
    dt = spec.evaluate_every_s
    while not state.finished and now < HORIZON_S:
        now += dt
        n = int(rng.poisson(rps * dt))
        if state.phase is Phase.SHADOW:
            shadowed = int(rng.binomial(n, shadow_percent(state) / 100))
            window.stable.add(rng, n, STABLE)
            window.canary.add(rng, shadowed, canary)
            window.pairs += shadowed
            window.agreed += int(rng.binomial(shadowed, canary.agreement_with_stable))
        else:
            to_canary = int(rng.binomial(n, state.weight / 100))
            served += to_canary
            window.canary.add(rng, to_canary, canary)
            window.stable.add(rng, n - to_canary, STABLE)
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


def _spread(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    median, p95 = np.percentile(values, [50, 95])
    return f"{median:.0f} / {p95:.0f} / {max(values):.0f}{unit}"


def main() -> None:
    """Run every scenario and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rps", type=float, default=50.0)
    args = parser.parse_args()

    default, shadowed = RolloutSpec(), RolloutSpec(shadow_percent=10)
    scenarios = [
        Scenario("identical canary", IDENTICAL, default, good=True),
        Scenario("bad canary (v3)", BAD_V3, default, good=False),
        Scenario("good canary, 10% shadow first", IDENTICAL, shadowed, good=True),
        Scenario("bad canary (v3), 10% shadow first", BAD_V3, shadowed, good=False),
    ]
    print(
        f"command: .venv/bin/python -m loadtest.sim_rollout --runs {args.runs} "
        f"--seed {args.seed} --rps {args.rps:g}"
    )
    print(
        f"{args.rps:g} requests/s; steps {list(default.steps)}; "
        f"min {default.min_requests_per_step} canary requests and "
        f"{default.min_step_s:g} s a step; decisions every "
        f"{default.evaluate_every_s:g} s\n"
    )
    print(
        "| scenario | runs | promoted | rolled back | undecided | "
        "canary requests served (median / p95 / max) | "
        "seconds to decision (median / p95 / max) | failing gates |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for index, scenario in enumerate(scenarios):
        outcomes = [
            simulate(
                np.random.default_rng([args.seed, index, run]),
                scenario.spec,
                scenario.canary,
                args.rps,
            )
            for run in range(args.runs)
        ]
        phases = Counter(o.phase for o in outcomes)
        decided = [
            o for o in outcomes if o.phase in (Phase.PROMOTED, Phase.ROLLED_BACK)
        ]
        gates = Counter(g for o in outcomes for g in o.failed_gates)
        rolled = phases[Phase.ROLLED_BACK]
        print(
            f"| {scenario.name} | {args.runs} | {phases[Phase.PROMOTED]} | "
            f"{rolled}{' (false)' if scenario.good and rolled else ''} | "
            f"{args.runs - len(decided)} | "
            f"{_spread([o.canary_requests for o in decided], '')} | "
            f"{_spread([o.seconds for o in decided], ' s')} | "
            f"{', '.join(f'{g} x{c}' for g, c in gates.most_common()) or '-'} |"
        )


if __name__ == "__main__":
    main()
