from __future__ import annotations

import json

import pytest

from rayfleet.platform.validation.agreement import AgreementTracker, predictions_agree
from rayfleet.platform.validation.observation import Observation


def _obs(
    request_id: str | None, prediction: float | None, *, shadow: bool
) -> Observation:
    return Observation(
        "m",
        "v2" if shadow else "v1",
        0.0,
        1.0,
        1.0,
        200 if prediction is not None else 500,
        prediction=prediction,
        shadow_of="v1" if shadow else None,
        request_id=request_id,
    )


@pytest.mark.parametrize(
    ("a", "b", "agree"),
    [
        (3.0, 3.0, True),
        (3.0, 4.0, False),
        (100_000.0, 100_001.0, False),  # class ids: no tolerance
        (2.5, 2.5024, True),
        (2.5, 2.51, False),
        (0.0, 1e-12, False),
        (0.0, 0.0, True),
    ],
)
def test_predictions_agree(a: float, b: float, agree: bool) -> None:
    assert predictions_agree(a, b, tolerance=1e-3) is agree


def test_pairs_in_either_order() -> None:
    tracker = AgreementTracker()
    tracker.add(_obs("a", 1.0, shadow=False))
    tracker.add(_obs("a", 1.0, shadow=True))
    tracker.add(_obs("b", 2.0, shadow=True))
    tracker.add(_obs("b", 3.0, shadow=False))
    tracker.add(_obs("c", 5.0, shadow=True))
    tracker.add(_obs(None, 5.0, shadow=True))
    snapshot = tracker.snapshot()
    assert (snapshot.pairs, snapshot.agreeing, snapshot.rate) == (2, 1, 0.5)
    assert tracker.pending == 1
    assert json.loads(json.dumps(snapshot.to_dict()))["rate"] == 0.5


def test_failed_side_counts_apart() -> None:
    tracker = AgreementTracker()
    tracker.add(_obs("a", 1.0, shadow=False))
    tracker.add(_obs("a", None, shadow=True))
    snapshot = tracker.snapshot()
    assert (snapshot.pairs, snapshot.failed_pairs, snapshot.rate) == (0, 1, None)


def test_pending_is_bounded_oldest_first() -> None:
    tracker = AgreementTracker(max_pending=3)
    for index in range(5):
        tracker.add(_obs(f"r{index}", 1.0, shadow=False))
    assert tracker.pending == 3 and tracker.snapshot().evicted == 2
    tracker.add(_obs("r0", 1.0, shadow=True))  # its primary was evicted
    tracker.add(_obs("r4", 1.0, shadow=True))
    assert tracker.snapshot().pairs == 1
    with pytest.raises(ValueError, match="max_pending"):
        AgreementTracker(max_pending=0)
