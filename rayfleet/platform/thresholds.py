"""A gate: one measured value against its threshold, its verdict and its wording.

The live rollout's gates (:mod:`rayfleet.platform.rollout.gates`) and the offline
validation's (:mod:`rayfleet.platform.validation.offline`) answer the same
:class:`GateResult` with names from one vocabulary, :data:`GATE_NAMES`, so
events, webhooks, the dashboard and reports read alike. Latency names say what
was timed: ``model_`` the version's own inference time, ``e2e_`` the request end
to end at the router. This module imports nothing heavier than ``math``: the
rollout stays free of numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

__all__ = [
    "GATE_NAMES",
    "Bound",
    "GateResult",
    "Timing",
    "Verdict",
    "describe_measurement",
]

Bound = Literal["max", "min"]
# Which time a latency gate judged: the versions' own inference time, or the
# request end to end at the router (hops and queues included).
Timing = Literal["model", "end_to_end"]

# Every gate either side checks. The limits that set them are ``max_<name>`` or
# ``min_<name>`` in GateSpec (live) and OfflineGates (offline).
GATE_NAMES = (
    "agreement",
    "accuracy_drop",
    "model_p50_ratio",
    "model_p99_ratio",
    "e2e_p99_ms",
    "error_rate_delta",
    "prediction_js",
    "prediction_chi2_pvalue",
    "prediction_psi",
    "input_drift_share",
)


class Verdict(str, Enum):
    """A gate's answer. PENDING blocks a promotion; SKIPPED does not."""

    PASS = "pass"
    FAIL = "fail"
    PENDING = "pending"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class GateResult:
    """One gate on one window or dataset: its measured value against its threshold.

    ``timing`` says which time a latency gate judged (``None`` for other gates):
    a gate named ``model_`` falls back to end-to-end time when a version has no
    model time, and says so here.
    """

    name: str
    value: float | None
    threshold: float
    bound: Bound
    verdict: Verdict
    detail: str = ""
    timing: Timing | None = None

    @property
    def passed(self) -> bool | None:
        """True or False once decided; None while pending or skipped."""
        if self.verdict in (Verdict.PENDING, Verdict.SKIPPED):
            return None
        return self.verdict is Verdict.PASS

    def describe(self) -> str:
        """A one-line account, e.g. ``prediction_js 0.326 > max 0.1``."""
        if self.value is None:
            return f"{self.name} {self.verdict.value}: {self.detail}"
        return describe_measurement(
            self.name, self.value, self.threshold, self.bound, self.detail
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (also what webhooks carry); ``timing`` only when set."""
        value = self.value
        timing = {} if self.timing is None else {"timing": self.timing}
        return {
            "name": self.name,
            "value": value if value is None or math.isfinite(value) else None,
            "threshold": self.threshold,
            "bound": self.bound,
            "verdict": self.verdict.value,
            "passed": self.passed,
            "detail": self.detail,
            **timing,
        }


def describe_measurement(
    name: str, value: float, threshold: float, bound: Bound, detail: str = ""
) -> str:
    """A one-line account, e.g. ``agreement 0.52 < min 0.9``.

    The sign says which side of ``threshold`` the value is on; ``detail``, when
    given, follows in brackets.
    """
    if bound == "max":
        sign = "<=" if value <= threshold else ">"
    else:
        sign = ">=" if value >= threshold else "<"
    text = f"{name} {value:.4g} {sign} {bound} {threshold:g}"
    return f"{text} ({detail})" if detail else text
