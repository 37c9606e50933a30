"""Locust users for any rayfleet server: KServe v2 inference on the digits model.

    locust -f loadtest/locustfile.py --headless -u 16 -r 16 -t 60s \\
        --host http://127.0.0.1:8000

Run it at ``nice -n 19`` on the machine that serves: Ray's workers run at niceness
15 and a client at 0 starves them. Each simulated user is one client session with
its own ``x-session-id``, so rayfleet's sticky split sends it to one version all
along, as it would a real user. The mix is what an application sends: mostly
single images, binary tensors more often than JSON, now and then a batch of 8, and
a metadata lookup now and then. Request bodies are built once, at import.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import tritonclient.http as triton_http
from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

__all__ = ["MODEL", "RayfleetUser", "binary_body", "json_body"]

MODEL = "digits"
INFER_PATH = f"/v2/models/{MODEL}/infer"
METADATA_PATH = f"/v2/models/{MODEL}"
OUTPUTS = ("label", "probabilities")


def _rows(count: int) -> np.ndarray:
    # Pixel intensities of sklearn's 8x8 digits are integers 0..16.
    rng = np.random.default_rng(count)
    return rng.integers(0, 17, size=(count, 64)).astype(np.float32)


def binary_body(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A v2 request with the binary tensor extension, and the headers it needs."""
    tensor = triton_http.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    outputs = [triton_http.InferRequestedOutput(n, binary_data=True) for n in OUTPUTS]
    body, json_size = triton_http.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs
    )
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(json_size),
    }
    return body, headers


def json_body(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The same request as plain v2 JSON."""
    request = {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ],
        "outputs": [{"name": name} for name in OUTPUTS],
    }
    return json.dumps(request).encode(), {"Content-Type": "application/json"}


BODIES = {
    "infer binary x1": binary_body(_rows(1)),
    "infer json x1": json_body(_rows(1)),
    "infer binary x8": binary_body(_rows(8)),
    "infer json x8": json_body(_rows(8)),
}


class RayfleetUser(FastHttpUser):
    """One application session calling the digits model."""

    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        """Give the session its sticky key."""
        self.session_headers = {"x-session-id": uuid.uuid4().hex}

    def _infer(self, name: str) -> None:
        body, headers = BODIES[name]
        with self.client.post(
            INFER_PATH,
            # Bytes are fine (locust's docstring says so); its annotation says str.
            data=body,  # type: ignore[arg-type]
            headers={**headers, **self.session_headers},
            name=name,
            catch_response=True,
        ) as response:
            _check(response, versioned=True)

    @task(12)
    def infer_binary_one(self) -> None:
        """One image, binary tensor."""
        self._infer("infer binary x1")

    @task(6)
    def infer_json_one(self) -> None:
        """One image, JSON."""
        self._infer("infer json x1")

    @task(2)
    def infer_binary_batch(self) -> None:
        """Eight images in one binary request."""
        self._infer("infer binary x8")

    @task(1)
    def infer_json_batch(self) -> None:
        """Eight images in one JSON request."""
        self._infer("infer json x8")

    @task(1)
    def metadata(self) -> None:
        """What the model takes and returns, as a client looks it up."""
        with self.client.get(
            METADATA_PATH,
            headers=self.session_headers,
            name="metadata",
            catch_response=True,
        ) as response:
            _check(response, versioned=False)


def _check(response: Any, *, versioned: bool) -> None:
    # Every inference answer through rayfleet's router names the version.
    if response.status_code != 200:
        response.failure(f"HTTP {response.status_code}")
    elif versioned and "x-model-version" not in response.headers:
        response.failure("no x-model-version header in the response")
