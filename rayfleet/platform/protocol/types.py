"""Protocol-neutral request and response types.

Every wire format (KServe v2 JSON and binary tensors, v1 ``:predict``, Arrow IPC)
decodes into :class:`InferRequest` and encodes from :class:`InferResponse`; the
router and the replicas see only these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InferRequest", "InferResponse", "RequestedOutput"]


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as binary data."""

    name: str
    binary_data: bool = False


@dataclass
class InferRequest:
    """One inference request: named input arrays and what to send back.

    ``inputs`` keeps the client's order. A BYTES tensor is a numpy object array of
    ``bytes``. ``datatypes`` keeps the v2 datatype each input was sent as, since
    numpy cannot tell BYTES from other object arrays, nor BF16 from raw uint16.
    ``outputs`` empty means every output, encoded as ``binary_default`` says.
    """

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str] = field(default_factory=dict)
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_default: bool = False


@dataclass
class InferResponse:
    """Named output arrays from one version of one model."""

    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
