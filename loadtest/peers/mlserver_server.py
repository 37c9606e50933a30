"""Seldon MLServer serving an ONNX model over the v2 protocol, in one process.

A small custom runtime around onnxruntime, as an MLServer user would write one
(MLServer ships no ONNX runtime). ``parallel_workers: 0`` keeps inference in the
server's own process, as KServe's peer and rayfleet's router do; MLServer's
default hands each request to a worker process. Runs inside the separate
virtualenv that ``loadtest/bench_overhead.py`` builds (``build/mlserver-venv``,
mlserver 1.7.1), never inside rayfleet's.

    build/mlserver-venv/bin/python loadtest/peers/mlserver_server.py \
        MODEL.onnx NAME PORT
"""

from __future__ import annotations

import asyncio
import sys

import onnxruntime as ort
from mlserver import MLModel, MLServer, ModelSettings, Settings
from mlserver.codecs import NumpyCodec
from mlserver.settings import ModelParameters
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    """One ONNX session, v2 in and out."""

    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        assert self.settings.parameters is not None
        self.session = ort.InferenceSession(
            self.settings.parameters.uri, sess_options=options
        )
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self.session.run(self.output_names, feeds)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(name, array)
                for name, array in zip(self.output_names, results, strict=True)
            ],
        )


if __name__ == "__main__":
    path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings = Settings(
        host="127.0.0.1",
        http_port=port,
        grpc_port=port + 1,
        metrics_port=port + 2,
        parallel_workers=0,
        # Not debug: no access log line per request, as in production.
        debug=False,
    )
    model = ModelSettings(
        name=name, implementation=OnnxModel, parameters=ModelParameters(uri=path)
    )
    asyncio.run(MLServer(settings).start([model]))
