"""KServe's own ModelServer serving an ONNX model over the v2 protocol.

Runs inside the separate virtualenv that ``loadtest/bench_overhead.py`` builds
(``build/kserve-venv``, kserve 0.21), never inside rayfleet's: KServe pins its own
versions of fastapi, pydantic and friends.

    build/kserve-venv/bin/python loadtest/peers/kserve_server.py MODEL.onnx NAME PORT
"""

from __future__ import annotations

import sys

import kserve
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.numpy_codec import from_np_dtype


class OnnxModel(Model):
    """One ONNX session, v2 in and out, as a KServe user would write it."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: ort.InferenceSession | None = None

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, sess_options=options)
        self.ready = True
        return self.ready

    async def predict(
        self, payload: InferRequest, headers=None, response_headers=None
    ) -> InferResponse:
        assert self.session is not None
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        results = self.session.run(names, feeds)
        outputs = []
        for name, array in zip(names, results, strict=True):
            output = InferOutput(
                name=name, shape=list(array.shape), datatype=from_np_dtype(array.dtype)
            )
            output.set_data_from_numpy(array, binary_data=False)
            outputs.append(output)
        return InferResponse(
            model_name=self.name, infer_outputs=outputs, response_id=payload.id or ""
        )


if __name__ == "__main__":
    path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = OnnxModel(name, path)
    model.load()
    kserve.logging.configure_logging(None)
    ModelServer(http_port=port, grpc_port=port + 1, enable_grpc=False, workers=1).start(
        [model]
    )
