"""The rollout part of the spec: a model's ``rollout`` block and its ``gates``.

:class:`RolloutSpec` says how a canary moves from 0 to 100% of traffic and
:class:`GateSpec` what it must hold against stable on the way; the defaults and
the reasoning behind each live beside them. :data:`EVENT_KINDS` names what a
rollout announces, the words a webhook's ``events`` filter may use.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from rayfleet.platform.config.base import Spec

__all__ = ["EVENT_KINDS", "EventKind", "GateSpec", "RolloutSpec"]

_Fraction = Annotated[float, Field(ge=0, le=1)]
_Percent = Annotated[float, Field(gt=0, le=100)]

EventKind = Literal[
    "rollout_started",
    "step_advanced",
    "promoted",
    "rolled_back",
    "paused",
    "resumed",
    "weight_set",
]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)


class GateSpec(Spec):
    """Thresholds a canary must meet against stable; ``None`` turns a gate off.

    Each default is a line most services can hold without tuning; the comments say
    where it comes from. Ratios and deltas compare canary to stable on the same
    window of traffic, so a slow or flaky stable does not block its successor.
    Each field names its gate (:data:`~rayfleet.platform.thresholds.GATE_NAMES`):
    ``max_model_p50_ratio`` bounds the ``model_p50_ratio`` gate.
    """

    # Renamed in 0.2.0 so that latency names say what was timed and each gate
    # has one name; the old keys are read until REMOVED_IN (config.base).
    RENAMED_KEYS: ClassVar[Mapping[str, str]] = {
        "max_p50_ratio": "max_model_p50_ratio",
        "max_p99_ratio": "max_model_p99_ratio",
        "max_p99_ms": "max_e2e_p99_ms",
        "min_shadow_agreement": "min_agreement",
    }

    # Leaves room for replica-to-replica noise (cache warmth, busy neighbours)
    # and still catches a median slowdown users feel.
    max_model_p50_ratio: PositiveFloat | None = 1.5
    # A p99 over ~100 requests rests on one or two of them: a wider band.
    max_model_p99_ratio: PositiveFloat | None = 2.0
    # The ratios compare the versions' own inference time (the replica's model
    # time; end to end for a version without one, e.g. a remote runtime): where a
    # version runs, in the router or one Ray hop away, is placement, not the
    # version, and a hop alone costs milliseconds.
    # Below this floor a ratio passes whatever it is: 0.05 ms against 0.02 ms is
    # 2.5x, and nothing a user can feel. It is also slack: a canary passes within
    # it of the limit times stable, and fails only when proven over both. A p99
    # of a few ms is scheduling noise (a thread woken on a busy machine costs
    # about one): measured on real Serve at 20 requests/s, good canary v2 had a
    # model p99 of 2.1 ms against v1's 1.3 ms, and its rollout held at 100% for
    # good on the 2x ratio (loadtest/RESULTS.md).
    latency_floor_ms: NonNegativeFloat = 1.0
    # A latency gate over its limit fails only when order-statistic confidence
    # bounds prove it at this confidence (rollout/quantile_bounds.py): a ratio
    # when the canary's lower bound exceeds the limit times stable's upper bound,
    # each bound at half the risk; the ceiling below when the canary's lower
    # bound exceeds it. Until then the step holds. 0.99 matches the error-rate
    # gate: at most 1% false failures even for a canary exactly at the limit, far
    # fewer for one truly like stable (none in 1000 heavy-tailed trials), while a
    # canary 3x slower throughout is proven by the p50 gate within its first 100
    # requests. A p99 rests on its rarest requests: on a heavy tail, proving a
    # slowdown of the tail alone takes thousands (3x: 63% of trials at 10000).
    latency_confidence: float = Field(default=0.99, gt=0.5, lt=1)
    # Flagger's default request-duration check: an absolute SLO, so a canary
    # cannot pass at 2x of an already slow stable. Set it to your SLO; models whose
    # stable p99 is above 500 ms need it raised or turned off. End to end, as
    # users wait: the request at the router, model time, hops and queues included.
    # It fails on the same evidence as the ratios, at latency_confidence, and
    # only while stable keeps it and the canary's model time is shown slower than
    # stable's: time outside the model is placement (gates.py says why).
    max_e2e_p99_ms: PositiveFloat | None = 500.0
    # Flagger's default 99% success rate, as a delta over stable's own errors.
    max_error_rate_delta: _Fraction | None = 0.01
    # The error-rate gate fails only when an exact binomial test puts the
    # canary's rate above stable's (its upper Wilson bound) plus the delta at this
    # one-sided confidence: 2 errors in 100 against stable's 0.1% is noise, not a
    # regression; 6 in 100 is. Until then an excess only holds the step.
    error_rate_confidence: float = Field(default=0.99, gt=0.5, lt=1)
    # Jensen-Shannon divergence in bits (0..1) between the predicted-class
    # distributions. Sampling noise between two draws of 100 and 1900 requests of
    # the same 10-class mix averages 0.02 (99.99th percentile 0.07); moving 30% of
    # a uniform mix onto one class is 0.22. Validators with many classes should
    # bucket them (top-k plus "other"), since noise grows with the class count.
    max_prediction_js: _Fraction | None = 0.1
    # JS between small samples is biased upwards (about (k - 1) / (2 n ln 2) bits
    # for k classes and n requests: 0.16 at 40 requests of 10 classes), so a JS
    # over the limit fails only once the chi-square test also finds the class mix
    # different at this p-value; until then it holds the step and waits for data.
    prediction_evidence_pvalue: Annotated[float, Field(gt=0, lt=1)] = 0.01
    # Off by default: on large windows a p-value flags differences too small to
    # matter; the JS divergence above measures the size of the shift instead.
    min_prediction_chi2_pvalue: Annotated[float, Field(gt=0, lt=1)] | None = None
    # Share of input features drifted against the version's reference data: a
    # feature counts when its KS test rejects at a Bonferroni-corrected p-value.
    max_input_drift_share: _Fraction | None = 0.25
    # Not read by the Validator (the share above is KS's); only
    # loadtest/sim_rollout.py models drift with it. Still accepted so that specs
    # that set it load; it goes, or becomes the share's rule, in 0.3.0.
    feature_psi_threshold: PositiveFloat = 0.25
    # Top-1 agreement with stable on shadow requests. Digits v1 and v2 (96% and
    # 97% accurate) agree on 96%; v1 and the 48% tree v3 on 48%.
    min_agreement: _Fraction | None = 0.9


class RolloutSpec(Spec):
    """How a canary moves from 0 to 100% of traffic.

    With the defaults at 50 requests/s, the 5% step sees its 100 canary requests in
    about 40 s, so a canary failing a gate is rolled back within a minute (after
    ``failure_threshold`` failing evaluations in a row), and an identical canary is
    promoted in about two and a half minutes.
    """

    steps: tuple[_Percent, ...] = (5.0, 25.0, 50.0, 100.0)
    shadow_percent: _Percent | None = Field(
        default=None,
        description="percent of traffic shadowed to the canary before the first "
        "step; None skips the shadow phase",
    )
    # Agreement's standard error at 500 pairs is about one point, so a canary that
    # truly agrees 94% of the time is almost never measured below 90%.
    shadow_min_pairs: PositiveInt = 500
    min_requests_per_step: PositiveInt = 100
    min_step_s: NonNegativeFloat = 30.0
    max_step_s: PositiveFloat | None = Field(
        default=600.0,
        description="after this long in a step without a decision the rollout is "
        "flagged stalled; it still never promotes without data",
    )
    evaluate_every_s: PositiveFloat = 5.0
    # Flagger's failure threshold: a rollback needs a failing gate on this many
    # evaluations in a row; in between the step holds. Any failing gate counts,
    # the early error-rate gate included; an evaluation without one, or a new
    # step, resets the count. 2 removes the single-evaluation fluke (a burst that
    # tips one window) at 5 s more per true rollback; 3 made the bad demo canary
    # take up to 65 s at 50 requests/s in loadtest/sim_rollout.py, past the
    # 60 s its rollback is promised in, and each gate already fails only on
    # evidence at 99% confidence, so a third look buys little.
    failure_threshold: PositiveInt = 2
    gates: GateSpec = GateSpec()

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        increasing = all(a < b for a, b in itertools.pairwise(steps))
        if not steps or not increasing or steps[-1] != 100:
            raise ValueError(
                f"steps must be strictly increasing percents in (0, 100] ending at "
                f"100, e.g. [5, 25, 50, 100]; got {list(steps)}"
            )
        return steps

    @model_validator(mode="after")
    def _step_times(self) -> RolloutSpec:
        if self.max_step_s is not None and self.max_step_s < self.min_step_s:
            raise ValueError(
                f"max_step_s ({self.max_step_s:g}) must not be below min_step_s "
                f"({self.min_step_s:g})"
            )
        return self
