"""The step profile: how many closed-loop users, for how long, phase after phase."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PHASES", "Phase", "Profile"]

DEFAULT_PHASES = "20:1,60:32,100:4"


@dataclass(frozen=True)
class Phase:
    """Hold ``users`` closed-loop users for ``duration_s`` seconds."""

    duration_s: float
    users: int


@dataclass(frozen=True)
class Profile:
    """Phases one after another; the load test ends with the last."""

    phases: tuple[Phase, ...]

    @classmethod
    def parse(cls, text: str) -> Profile:
        """``"20:1,60:32,100:4"``: 20 s of 1 user, 60 s of 32, 100 s of 4."""
        phases = []
        for part in text.split(","):
            seconds, _, users = part.partition(":")
            phase = Phase(float(seconds), int(users))
            if phase.duration_s <= 0 or phase.users < 1:
                raise ValueError(f"bad phase {part!r}: want seconds > 0, users >= 1")
            phases.append(phase)
        if not phases:
            raise ValueError("a profile needs at least one phase, e.g. 20:1,60:32")
        return cls(tuple(phases))

    @property
    def duration_s(self) -> float:
        """How long the whole profile runs."""
        return sum(phase.duration_s for phase in self.phases)

    def bounds(self) -> list[tuple[float, float, int]]:
        """``(start_s, end_s, users)`` of each phase."""
        out = []
        start = 0.0
        for phase in self.phases:
            out.append((start, start + phase.duration_s, phase.users))
            start += phase.duration_s
        return out

    def users_at(self, elapsed_s: float) -> int | None:
        """Users at ``elapsed_s`` into the run; ``None`` once it is over."""
        for start, end, users in self.bounds():
            if start <= elapsed_s < end:
                return users
        return None
