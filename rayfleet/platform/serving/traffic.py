"""Which version answers a request: pins, sticky keys, then weights.

A :class:`TrafficPlan` is immutable; a new split is a new plan. Versions are laid
out on [0, 100) in plan order, canaries first, so a sticky key that lands on a
canary stays on it while the canary's share grows.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from rayfleet.platform.errors import VersionNotFound

__all__ = ["TrafficPlan", "sticky_point"]


def sticky_point(key: str) -> float:
    """A stable point in [0, 100) for ``key``, the same in every process."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


@dataclass(frozen=True)
class TrafficPlan:
    """Percent of unpinned traffic per version, in layout order, and the version
    (if any) that gets a shadow copy of ``shadow_percent`` of requests."""

    model: str
    weights: Mapping[str, float]
    shadow: str | None = None
    shadow_percent: float = 0.0
    _cumulative: tuple[tuple[float, str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        total = sum(self.weights.values())
        if any(w < 0 for w in self.weights.values()) or total <= 0:
            raise ValueError(
                f"weights must be >= 0 with a positive sum: {self.weights}"
            )
        edges, running = [], 0.0
        for name, weight in self.weights.items():
            if weight > 0:
                running += weight / total * 100
                edges.append((running, name))
        object.__setattr__(self, "_cumulative", tuple(edges))

    def choose(
        self,
        *,
        pin: str | None = None,
        sticky_key: str | None = None,
        rand: Callable[[], float] = random.random,
    ) -> str:
        """The version for one request.

        A pin names any declared version, even one at weight 0; an unknown pin is
        :class:`VersionNotFound`. A sticky key always maps to the same version
        under the same plan. Otherwise a weighted draw.
        """
        if pin is not None:
            if pin not in self.weights:
                raise VersionNotFound(
                    f"model {self.model!r} has no version {pin!r}; "
                    f"versions: {sorted(self.weights)}"
                )
            return pin
        point = sticky_point(sticky_key) if sticky_key is not None else rand() * 100
        for edge, name in self._cumulative:
            if point < edge:
                return name
        return self._cumulative[-1][1]

    def shadow_target(
        self, primary: str, rand: Callable[[], float] = random.random
    ) -> str | None:
        """The version to send a shadow copy of a request to, if any.

        Only requests answered by another version are shadowed: a shadow compares
        the candidate with what the client actually got.
        """
        if self.shadow is None or self.shadow == primary or self.shadow_percent <= 0:
            return None
        return self.shadow if rand() * 100 < self.shadow_percent else None

    def to_dict(self) -> dict[str, object]:
        """The plan as JSON: weights and shadow."""
        return {
            "weights": dict(self.weights),
            "shadow": self.shadow,
            "shadow_percent": self.shadow_percent,
        }
