"""Which requests the log keeps: a share chosen by the request id alone.

The choice is a hash of the id, not a random draw, so it is the same wherever it
is made: every row of a request, its shadow copy on the canary, and the same id
sent to two routers are kept or left together. The hash runs on the router's
event loop for every request, so it is CRC-32 (in C, stable across processes and
Python versions; a cryptographic hash cost five times as much here) followed by
MurmurHash3's finalizer, which spreads ids that differ in a character or two
(``req-1``, ``req-2``) over the whole range.
"""

from __future__ import annotations

import zlib

__all__ = ["Sampler", "id_hash"]

_SPACE = 1 << 32
_MASK = _SPACE - 1


def id_hash(request_id: str) -> int:
    """A 32-bit hash of ``request_id``, the same in every process."""
    h = zlib.crc32(request_id.encode("utf-8", "surrogatepass"))
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


class Sampler:
    """Keeps ``rate`` (0 to 1) of request ids, the same ones every time."""

    def __init__(self, rate: float) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must lie in [0, 1]: {rate}")
        self.rate = rate
        # An id's hash falls below this for `rate` of all ids.
        self._below = round(rate * _SPACE)

    def __call__(self, request_id: str) -> bool:
        """Whether the request called ``request_id`` is logged."""
        return id_hash(request_id) < self._below
