"""Models on a remote KServe v2 / Triton server, called with tritonclient over HTTP.

The remote server owns the model; rayfleet adds its router, traffic split and
validation in front. The version's signature comes from the server's metadata.
Each call carries the W3C ``traceparent`` of the span current where it runs (the
request's, or its batch's first request's, when tracing is on), so the server's
own trace of it joins the request's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.spec import TritonTarget
from rayfleet.platform.config.store import Manifest
from rayfleet.platform.errors import ModelError, StoreError
from rayfleet.platform.runtimes.device import Device
from rayfleet.platform.tracing.propagation import trace_headers

__all__ = ["TritonRuntime", "triton_manifest"]


def _client(target: TritonTarget) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(
        target.url,
        connection_timeout=target.timeout_s,
        network_timeout=target.timeout_s,
    )


def triton_manifest(target: TritonTarget) -> Manifest:
    """The manifest of a remote model, built from the server's model metadata."""
    client = _client(target)
    try:
        metadata = client.get_model_metadata(target.model_name, target.model_version)
    except (InferenceServerException, OSError) as error:
        raise StoreError(
            f"cannot read metadata of {target.model_name!r} from {target.url}: {error}"
        ) from error
    finally:
        client.close()

    def specs(entries: list[dict[str, object]]) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(
                name=str(e["name"]),
                datatype=str(e["datatype"]),
                shape=tuple(int(d) for d in e["shape"]),  # type: ignore[attr-defined]
            )
            for e in entries
        )

    return Manifest(
        runtime="triton",
        signature=Signature(
            inputs=specs(metadata["inputs"]), outputs=specs(metadata["outputs"])
        ),
        description=f"{target.model_name} on {target.url}",
    )


class TritonRuntime:
    """Forwards each batch to the remote server as one binary-tensor request;
    ``device`` is what reports name it (the server places the model itself)."""

    def __init__(
        self, target: TritonTarget, signature: Signature, *, device: Device
    ) -> None:
        self.device = device
        self.target = target
        self.signature = signature
        self.client = _client(target)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Send one batch to the remote server and return its outputs."""
        infer_inputs = []
        for spec in self.signature.inputs:
            array = inputs[spec.name]
            infer_input = triton_http.InferInput(
                spec.name, list(array.shape), spec.datatype
            )
            infer_input.set_data_from_numpy(array, binary_data=True)
            infer_inputs.append(infer_input)
        outputs = [
            triton_http.InferRequestedOutput(spec.name, binary_data=True)
            for spec in self.signature.outputs
        ]
        try:
            result = self.client.infer(
                self.target.model_name,
                infer_inputs,
                model_version=self.target.model_version,
                outputs=outputs,
                headers=trace_headers() or None,
            )
        except InferenceServerException as error:
            raise ModelError(
                f"remote server {self.target.url} failed: {error.message()}"
            ) from error
        return {
            spec.name: result.as_numpy(spec.name) for spec in self.signature.outputs
        }
