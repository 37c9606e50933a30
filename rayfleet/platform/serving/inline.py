"""When a replica runs its model on the event loop instead of a worker thread.

Handing a batch to a thread and back costs two context switches and a wake-up
of the event loop, about a tenth of a millisecond here: more than a small
model's whole run. Measured on the direct channel (digits, 4 rows a request,
``loadtest/RESULTS.md``, "The hop"), running it on the loop gave 8-13% more
requests per second at 8 and 32 clients. The price is that the loop does
nothing else while the model runs, so only a model that has been fast for a
while runs there, and one slow batch sends it back to the thread.
"""

from __future__ import annotations

__all__ = ["INLINE_BELOW_MS", "InlineRule"]

# The longest the event loop is held by one batch in the steady state: well
# under a request's own latency at one hop, and what a health check, a metrics
# push or the next frame waits at most.
INLINE_BELOW_MS = 1.0
# Batches seen before the first decision: the first runs of a session are slow
# (allocation, caches), and one fast one proves little.
SETTLE_BATCHES = 16
# Weight of the newest batch in the running mean: a slow batch of ten times the
# limit moves the mean over it at once.
SMOOTHING = 0.1


class InlineRule:
    """Decides per batch: on the loop while the model's recent batches took
    under ``below_ms`` on average, in a thread otherwise."""

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

    @property
    def inline(self) -> bool:
        """Whether the next batch runs on the event loop."""
        return self.batches >= self.settle and self.mean_ms < self.below_ms

    def observe(self, model_ms: float) -> None:
        """One batch's model time, however it ran."""
        self.batches += 1
        if self.batches == 1:
            self.mean_ms = model_ms
        else:
            self.mean_ms += self.smoothing * (model_ms - self.mean_ms)
