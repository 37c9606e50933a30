"""Agreement between a version and its shadow on the same (mirrored) requests.

The router sends a copy of some requests to the shadowed canary; both answers come
back as observations sharing a ``request_id``, the copy naming the primary's
version in ``shadow_of``. :class:`AgreementTracker` pairs them, in either arrival
order, and counts how often the two answers agree.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayfleet.platform.validation._json import json_float
from rayfleet.platform.validation.observation import Observation

__all__ = ["Agreement", "AgreementTracker", "agreement_mask", "predictions_agree"]


def predictions_agree(a: float, b: float, tolerance: float = 1e-3) -> bool:
    """Whether two predictions agree.

    Two whole numbers are class ids and must be equal. Otherwise they are values,
    which agree when they differ by at most ``tolerance`` relative to the larger
    magnitude (so 0 agrees only with 0).
    """
    if float(a).is_integer() and float(b).is_integer():
        return a == b
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=0.0)


def agreement_mask(a: np.ndarray, b: np.ndarray, tolerance: float = 1e-3) -> np.ndarray:
    """Per pair of predictions, whether they agree as :func:`predictions_agree`
    says: a boolean array as long as ``a`` and ``b``, which must match."""
    pairs = zip(a, b, strict=True)
    return np.fromiter(
        (predictions_agree(x, y, tolerance) for x, y in pairs), dtype=bool, count=len(a)
    )


@dataclass(frozen=True)
class Agreement:
    """Counts of paired primary and shadow answers.

    ``pairs`` had a prediction on both sides and ``agreeing`` of them agreed;
    ``failed_pairs`` lacked a prediction on a side (an error, say) and count in
    neither; ``evicted`` halves waited too long for their partner, or never
    reached the Validator (a router's buffer of them was full).
    """

    pairs: int
    agreeing: int
    failed_pairs: int
    evicted: int

    @property
    def rate(self) -> float | None:
        """``agreeing / pairs``; ``None`` before the first pair."""
        return self.agreeing / self.pairs if self.pairs else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the counts and the rate."""
        return {
            "pairs": self.pairs,
            "agreeing": self.agreeing,
            "rate": json_float(self.rate),
            "failed_pairs": self.failed_pairs,
            "evicted": self.evicted,
        }


class AgreementTracker:
    """Pairs primaries and shadows by ``request_id`` and counts agreement.

    Unpaired halves wait in a map of at most ``max_pending`` entries; past that the
    oldest is evicted (its partner was lost, or is very late) and counted, so a
    shadow that never answers cannot grow memory.
    """

    def __init__(self, max_pending: int = 10_000, tolerance: float = 1e-3) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be positive: {max_pending}")
        self.max_pending = max_pending
        self.tolerance = tolerance
        self.pairs = 0
        self.agreeing = 0
        self.failed_pairs = 0
        self.evicted = 0
        self._pending: OrderedDict[tuple[str, bool], Observation] = OrderedDict()

    @property
    def pending(self) -> int:
        """Halves waiting for their partner."""
        return len(self._pending)

    def add(self, observation: Observation) -> None:
        """Take one observation; those without a ``request_id`` are ignored."""
        if observation.request_id is None:
            return
        shadow = observation.shadow_of is not None
        partner = self._pending.pop((observation.request_id, not shadow), None)
        if partner is None:
            self._pending[(observation.request_id, shadow)] = observation
            if len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.evicted += 1
            return
        a, b = observation.prediction, partner.prediction
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            self.failed_pairs += 1
            return
        self.pairs += 1
        if predictions_agree(a, b, self.tolerance):
            self.agreeing += 1

    def lose(self, halves: int) -> None:
        """Count ``halves`` that will never arrive (a router had no room for
        them) with the evicted: whatever they would have paired with cannot."""
        self.evicted += halves

    def snapshot(self) -> Agreement:
        """The counts so far."""
        return Agreement(self.pairs, self.agreeing, self.failed_pairs, self.evicted)
