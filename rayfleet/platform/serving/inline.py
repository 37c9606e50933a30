"""When a replica runs its model on the event loop instead of a worker thread.

Handing a batch to a thread and back costs two context switches and a wake-up
of the event loop, about a tenth of a millisecond here: more than a small
model's whole run. Measured on the direct channel (digits, 4 rows a request,
``loadtest/RESULTS.md``, "The hop without the actor call"), running it on the
loop gave 8-13% more requests per second at 8 and 32 clients. The price is that
the loop does nothing else while the model runs, so only a model that has been
fast for a while runs there, only a batch it expects to be fast (from the
model's time per input element so far, times the batch's elements), and one
slow batch sends it back to the thread.
"""

from __future__ import annotations

__all__ = ["INLINE_BELOW_MS", "InlineRule"]

# The model time, on average and expected for the batch at hand, under which a
# batch runs on the loop: well under a request's own latency at one hop, so a
# health check, a metrics push or the next frame waits about that long. A batch
# slower than expected holds the loop for its whole run, once.
INLINE_BELOW_MS = 1.0
# Batches seen before the first decision: the first runs of a session are slow
# (allocation, caches), and one fast one proves little.
SETTLE_BATCHES = 16
# Weight of the newest batch in the running mean: a slow batch of ten times the
# limit moves the mean over it at once.
SMOOTHING = 0.1


class InlineRule:
    """Decides per batch: on the loop while the model's recent batches took
    under ``below_ms`` on average and this batch is expected to as well, in a
    thread otherwise."""

    def __init__(
        self,
        below_ms: float = INLINE_BELOW_MS,
        *,
        settle: int = SETTLE_BATCHES,
        smoothing: float = SMOOTHING,
    ) -> None:
        if below_ms <= 0 or settle < 1 or not 0 < smoothing <= 1:
            raise ValueError("below_ms > 0, settle >= 1, 0 < smoothing <= 1")
        self.below_ms = below_ms
        self.settle = settle
        self.smoothing = smoothing
        self.batches = 0
        self.mean_ms = 0.0
        # Per input element: a batch ten times larger than those seen so far
        # is expected to take ten times as long. Small batches overstate it
        # (their fixed cost is spread thin), which errs towards the thread.
        self.mean_ms_per_element = 0.0

    def inline_for(self, elements: int) -> bool:
        """Whether a batch of ``elements`` input elements runs on the loop."""
        return (
            self.batches >= self.settle
            and self.mean_ms < self.below_ms
            and self.mean_ms_per_element * elements < self.below_ms
        )

    def observe(self, model_ms: float, elements: int) -> None:
        """One batch's model time and its input elements, however it ran."""
        per_element = model_ms / max(elements, 1)
        self.batches += 1
        if self.batches == 1:
            self.mean_ms, self.mean_ms_per_element = model_ms, per_element
            return
        self.mean_ms += self.smoothing * (model_ms - self.mean_ms)
        self.mean_ms_per_element += self.smoothing * (
            per_element - self.mean_ms_per_element
        )
