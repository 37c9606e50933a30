"""How a gate's measured value reads against its threshold.

The rollout's gates (:class:`~rayfleet.platform.rollout.machine.GateResult`) and the
offline validation's (:class:`~rayfleet.platform.validation.report.GateCheck`)
word a measurement alike, so events, webhooks and reports read the same. This
module imports nothing heavier than ``typing``: the rollout stays free of numpy.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Bound", "describe_measurement"]

Bound = Literal["max", "min"]


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
