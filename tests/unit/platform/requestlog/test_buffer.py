"""The request log's buffer: bounded by bytes, dropping and counting over it."""

from __future__ import annotations

import numpy as np
import pytest

from rayfleet.platform.requestlog.buffer import LogBuffer, LoggedRequest, tensor_bytes


def request(rows: int, width: int = 64, request_id: str = "r") -> LoggedRequest:
    inputs = {"input": np.zeros((rows, width), np.float32)}
    outputs = {"label": np.zeros(rows, np.int64)}
    return LoggedRequest(
        request_id=request_id,
        time=0.0,
        model="m",
        version="v1",
        status=200,
        latency_ms=1.0,
        model_ms=0.5,
        inputs=inputs,
        outputs=outputs,
        shadow_of=None,
        rows=rows,
        nbytes=tensor_bytes(inputs) + tensor_bytes(outputs),
    )


def test_tensor_bytes_counts_what_bytes_tensors_hold_too() -> None:
    texts = np.array([b"abc", b"defgh"], dtype=object)
    assert tensor_bytes({"a": np.zeros((2, 3), np.float32), "t": texts}) == (
        24 + texts.nbytes + 8
    )


def test_a_burst_is_kept_up_to_the_bound_and_the_rest_dropped_and_counted() -> None:
    one = request(4)  # 4 x 64 x 4 + 4 x 8 = 1056 bytes
    buffer = LogBuffer(max_bytes=10 * one.nbytes + 100)
    kept = [buffer.offer(request(4, request_id=str(n))) for n in range(1000)]
    assert kept == [True] * 10 + [False] * 990
    assert buffer.held_bytes == 10 * one.nbytes <= buffer.max_bytes
    assert (len(buffer), buffer.waiting_rows, buffer.dropped_rows) == (10, 40, 3960)


def test_taken_requests_hold_their_bytes_until_released() -> None:
    one = request(2)
    buffer = LogBuffer(max_bytes=2 * one.nbytes)
    assert buffer.offer(one) and buffer.offer(request(2))
    taken = buffer.take()
    assert [len(buffer), buffer.waiting_rows, buffer.waiting_bytes] == [0, 0, 0]
    # Being written, they still count: memory is bounded, not just the queue.
    assert not buffer.offer(request(2))
    buffer.release(sum(entry.nbytes for entry in taken))
    assert buffer.held_bytes == 0
    assert buffer.offer(request(2))
    assert buffer.dropped_rows == 2


def test_a_request_larger_than_the_bound_is_dropped_alone() -> None:
    buffer = LogBuffer(max_bytes=1000)
    assert not buffer.offer(request(100))
    assert buffer.offer(request(1, width=8))
    assert buffer.dropped_rows == 100


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LogBuffer(0)
