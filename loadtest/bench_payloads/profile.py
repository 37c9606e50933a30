"""The request the benchmark sends: the same image batch in every wire format."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.loadgen import v2_request
from rayfleet.platform.protocol import ARROW_CONTENT_TYPE
from rayfleet.testing import encode_arrow_request, encode_infer_request

__all__ = ["FORMATS", "MODEL_INFER", "Payload", "payloads"]

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
FORMATS = ("json", "binary", "arrow", "grpc")


@dataclass(frozen=True)
class Payload:
    """One request body in one format, and how to send it."""

    format: str
    body: bytes
    headers: dict[str, str]


def payloads(images: np.ndarray) -> dict[str, Payload]:
    """The same request in every format, as their usual clients build it."""
    built: dict[str, Payload] = {}
    for name, binary in (("json", False), ("binary", True)):
        built[name] = Payload(name, *v2_request(images, binary=binary))
    built["arrow"] = Payload(
        "arrow",
        encode_arrow_request({"image": images}),
        {"content-type": ARROW_CONTENT_TYPE},
    )
    message = encode_infer_request("image", {"image": images})
    built["grpc"] = Payload("grpc", message.SerializeToString(), {})
    return built
