"""What a decoded input may be, decided at the edge before numpy sees it.

Every codec asks here before it builds an array, so that a hostile shape or size is
a 400 or a 413 with the input's name, never an error from deep inside numpy or
pyarrow (numpy refuses more than 64 dimensions, and any shape whose extent overflows
its index type, even when it holds no elements) and never an allocation the router
cannot afford. Sizes are computed with Python integers, which cannot wrap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from rayfleet.platform.errors import InvalidInput, PayloadTooLarge

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "INT64_MAX",
    "MAX_RANK",
    "check_decoded_bytes",
    "check_shape",
    "decoded_bytes",
]

MAX_RANK: Final = 32
"""The most dimensions an input may have: half numpy's own limit of 64, far past
any model's rank, and small enough that no shape check walks a long list."""

INT64_MAX: Final = 2**63 - 1

DEFAULT_MAX_DECODED_BYTES: Final = 4 * 64 * 1024 * 1024
"""4x the default ``router.max_body_bytes``, as ``RouterSpec`` sets it."""

# What one BYTES element costs once decoded: its pointer in the object array plus
# the header of the bytes object that holds it (sys.getsizeof(b"") is 33).
_BYTES_ELEMENT_COST: Final = 8 + 33


def check_shape(label: str, shape: object, itemsize: int) -> tuple[int, ...]:
    """``shape`` as a tuple when numpy can build an array of it; else InvalidInput.

    ``label`` names the input (``"input 'x'"``) in the message. A shape is a list
    or tuple of at most :data:`MAX_RANK` integers (JSON booleans are
    not), each in ``[0, INT64_MAX]``, whose extent (the product of its non-zero
    dimensions, which numpy checks even when the array is empty) times
    ``itemsize`` fits in int64.
    """
    if not isinstance(shape, list | tuple):
        raise InvalidInput(f"{label}: 'shape' must be a list of integers")
    if len(shape) > MAX_RANK:
        raise InvalidInput(
            f"{label}: shape has {len(shape)} dimensions; at most {MAX_RANK} "
            "are allowed"
        )
    for dim in shape:
        # type() rather than isinstance(): a bool is an int to isinstance.
        if type(dim) is not int:
            raise InvalidInput(f"{label}: 'shape' must be a list of integers")
        if dim < 0:
            raise InvalidInput(f"{label}: shape {list(shape)} has a negative dimension")
        if dim > INT64_MAX:
            raise InvalidInput(
                f"{label}: shape {list(shape)} has a dimension over int64"
            )
    extent = math.prod(dim for dim in shape if dim)
    if extent * max(itemsize, 1) > INT64_MAX:
        raise InvalidInput(f"{label}: shape {list(shape)} is too large for any array")
    return tuple(shape)


def decoded_bytes(shape: Sequence[int], itemsize: int | None) -> int:
    """The bytes an array of ``shape`` takes once decoded; ``itemsize`` None is
    BYTES, counted at the fixed cost of each element (its payload is counted by
    the caller, which knows it)."""
    per_element = _BYTES_ELEMENT_COST if itemsize is None else itemsize
    return math.prod(shape) * per_element


def check_decoded_bytes(label: str, size: int, limit: int) -> None:
    """PayloadTooLarge when ``size`` decoded bytes (so far, for ``label``) are
    over ``limit``."""
    if size > limit:
        raise PayloadTooLarge(
            f"{label} decodes to {size} bytes, over the {limit}-byte "
            "router.max_decoded_bytes limit"
        )
