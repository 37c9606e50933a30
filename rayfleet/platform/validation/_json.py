"""JSON-safe numbers: the validation reports hold NaN and infinities, JSON does not."""

from __future__ import annotations

import math

__all__ = ["json_float"]


def json_float(value: float | None) -> float | None:
    """``value`` as a plain float, or ``None`` when it is missing, NaN or infinite.

    ``json.dumps`` would otherwise write ``NaN``, which browsers' ``JSON.parse``
    and most clients reject.
    """
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
