from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rayfleet.platform.validation.observation import (
    Observation,
    batch_predictions,
    summarize_batch,
    summarize_inputs,
    summarize_outputs,
)


def _observation(**overrides: object) -> Observation:
    fields: dict[str, object] = {
        "model": "digits",
        "version": "v2",
        "ts": 1_700_000_000.25,
        "latency_ms": 3.5,
        "model_ms": 1.25,
        "status": 200,
        "features": (0.0, 5.0, 16.0),
        "prediction": 7.0,
        "confidence": 0.93,
        "shadow_of": None,
        "request_id": "r-1",
    }
    fields.update(overrides)
    return Observation(**fields)  # type: ignore[arg-type]


def test_rows_round_trip_as_plain_builtins() -> None:
    batch = [_observation(request_id=f"r-{i}", ts=1e9 + i) for i in range(200)]
    rows = [obs.to_row() for obs in batch]
    assert [Observation.from_row(row) for row in rows] == batch
    payload = pickle.dumps(rows)
    # No class reference: unpickling runs no constructor, field by field.
    assert b"rayfleet" not in payload
    assert len(payload) < len(pickle.dumps(batch))
    assert pickle.loads(pickle.dumps(batch[0])) == batch[0]


@pytest.mark.parametrize(
    ("status", "error", "client_error"),
    [(200, False, False), (404, False, True), (499, False, True), (503, True, False)],
)
def test_status_classes(status: int, error: bool, client_error: bool) -> None:
    obs = _observation(status=status)
    assert (obs.is_error, obs.is_client_error) == (error, client_error)


def test_tabular_summary_is_the_first_row() -> None:
    batch = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert summarize_inputs({"input": batch}) == (0.0, 1.0, 2.0, 3.0)
    assert summarize_inputs({"input": batch}, max_features=2) == (0.0, 1.0)


def test_image_summary_is_four_statistics_of_the_first_item() -> None:
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    images[0, 0, 0, 0] = 16
    images[1] = 255  # the second item must not count
    mean, std, low, high = summarize_inputs({"image": images}) or ()
    assert (mean, low, high) == (16 / 48, 0.0, 16.0)
    assert std == pytest.approx(np.std([16] + [0] * 47))


def test_summary_skips_bytes_and_joins_inputs_in_order() -> None:
    inputs = {
        "text": np.array([b"a", b"b"], dtype=object),
        "x": np.array([[1.0, 2.0], [3.0, 4.0]]),
        "flag": np.array([True, False]),
    }
    assert summarize_inputs(inputs) == (1.0, 2.0, 1.0)
    assert summarize_inputs({"text": inputs["text"]}) is None
    assert summarize_inputs({"empty": np.zeros((0, 3))}) is None


def test_batch_summary_matches_the_single_summary_row_by_row() -> None:
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(5, 3)), "img": rng.normal(size=(5, 2, 2))}
    table = summarize_batch(inputs)
    assert table is not None and table.shape == (5, 7)
    for row in range(5):
        one = {name: array[row : row + 1] for name, array in inputs.items()}
        assert summarize_inputs(one) == pytest.approx(tuple(table[row]))


def test_outputs_label_and_probabilities() -> None:
    outputs = {
        "label": np.array([3, 1], dtype=np.int64),
        "probabilities": np.array([[0.1, 0.2, 0.0, 0.7], [0.0, 1.0, 0.0, 0.0]]),
    }
    prediction, confidence = summarize_outputs(outputs)
    assert prediction == 3.0 and confidence == pytest.approx(0.7)


def test_outputs_argmax_of_scores_without_a_label() -> None:
    outputs = {"scores": np.array([[0.2, 0.5, 0.3]], dtype=np.float32)}
    prediction, confidence = summarize_outputs(outputs)
    assert prediction == 1.0 and confidence == pytest.approx(0.5)


@pytest.mark.parametrize("shape", [(2,), (2, 1)])
def test_outputs_regression_value(shape: tuple[int, ...]) -> None:
    outputs = {"value": np.array([2.5, 9.0]).reshape(shape)}
    assert summarize_outputs(outputs) == (2.5, None)


def test_outputs_without_a_prediction() -> None:
    assert summarize_outputs({"text": np.array([b"x"], dtype=object)}) == (None, None)
    assert batch_predictions({}) == (None, None)


@pytest.mark.parametrize(
    "outputs",
    [
        {
            "label": np.zeros((0,), dtype=np.int64),
            "probabilities": np.zeros((0, 10), dtype=np.float32),
        },
        {"label": np.zeros((0, 1), dtype=np.int64)},
        {"scores": np.zeros((0, 3), dtype=np.float32)},
        {"value": np.zeros((0,), dtype=np.float32)},
        {"value": np.zeros((0, 1), dtype=np.float64)},
        {"label": np.zeros((2, 0), dtype=np.int64)},
        {"text": np.zeros((0,), dtype=object)},
    ],
)
def test_empty_outputs_summarize_to_nothing(outputs: dict[str, np.ndarray]) -> None:
    assert summarize_outputs(outputs) == (None, None)
    classes, confidence = batch_predictions(outputs)
    for column in (classes, confidence):
        assert column is None or column.shape == (0,)


@pytest.mark.parametrize(
    "shape", [(0, 64), (0,), (0, 3, 8, 8), (2, 0), (2, 0, 3), (2, 3, 0, 1)]
)
def test_inputs_without_elements_have_no_summary(shape: tuple[int, ...]) -> None:
    inputs = {"x": np.zeros(shape, dtype=np.float32)}
    assert summarize_inputs(inputs) is None
    assert summarize_batch(inputs) is None


def test_an_empty_input_leaves_the_others_summarized() -> None:
    inputs = {
        "empty": np.zeros((1, 0, 4), dtype=np.float32),
        "x": np.array([[1.0, 2.0]], dtype=np.float32),
    }
    assert summarize_inputs(inputs) == (1.0, 2.0)


# The request path's summaries take shortcuts for the common cases; they must give
# exactly what the general batch functions give for the first item.

_DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_]


@st.composite
def _tensor_maps(draw: st.DrawFn) -> dict[str, np.ndarray]:
    names = draw(
        st.lists(
            st.sampled_from(["label", "probabilities", "x", "y"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    return {
        name: draw(
            hnp.arrays(
                dtype=draw(st.sampled_from(_DTYPES)),
                shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
            )
        )
        for name in names
    }


def _first_items(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: a[:1] if a.ndim else a for name, a in arrays.items()}


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (
        a is not None and b is not None and math.isnan(a) and math.isnan(b)
    )


@settings(max_examples=400, deadline=None)
@given(_tensor_maps(), st.integers(min_value=-2, max_value=6))
def test_input_summary_is_the_batch_summary_of_the_first_item(
    inputs: dict[str, np.ndarray], max_features: int
) -> None:
    # Image statistics of generated extremes overflow; both sides alike.
    with np.errstate(all="ignore"):
        summary = summarize_batch(_first_items(inputs), max_features)
        got = summarize_inputs(inputs, max_features)
    expected = (
        None
        if summary is None or summary.shape[1] == 0
        else tuple(float(v) for v in summary[0])
    )
    assert (got is None) == (expected is None)
    if got is not None and expected is not None:
        assert len(got) == len(expected)
        assert all(_same(a, b) for a, b in zip(got, expected, strict=True))


@settings(max_examples=400, deadline=None)
@given(_tensor_maps())
def test_output_summary_is_the_batch_prediction_of_the_first_item(
    outputs: dict[str, np.ndarray],
) -> None:
    classes, confidence = batch_predictions(_first_items(outputs))
    expected = (
        float(classes[0]) if classes is not None and classes.size else None,
        float(confidence[0]) if confidence is not None and confidence.size else None,
    )
    got = summarize_outputs(outputs)
    assert _same(got[0], expected[0]) and _same(got[1], expected[1])
