"""``rayfleet up``: a local Ray, the config's applications served, Ctrl-C to stop."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import ray
from ray import serve

from rayfleet.deployments.app import build
from rayfleet.deployments.serve_env import apply_serve_env

__all__ = ["serve_config_locally", "smoke_requests"]


def smoke_requests(url: str, model: str = "digits") -> None:
    """Call ``model`` with tritonclient (binary and JSON tensors) and print results."""
    import tritonclient.http as triton_http

    from rayfleet.cli.demo import digits_split

    _, x_test, _, y_test = digits_split()
    rows, labels = x_test[:8], y_test[:8]
    client = triton_http.InferenceServerClient(url)
    metadata = client.get_model_metadata(model)
    print(f"model {model}: versions {metadata['versions']}")
    for version in ["", *metadata["versions"]]:
        for binary in (True, False):
            infer_input = triton_http.InferInput("input", list(rows.shape), "FP32")
            infer_input.set_data_from_numpy(rows, binary_data=binary)
            result = client.infer(
                model,
                [infer_input],
                model_version=version,
                outputs=[triton_http.InferRequestedOutput("label", binary_data=binary)],
            )
            predicted = result.as_numpy("label")
            answered = result.get_response()["model_version"]
            hits = int(np.sum(predicted == labels))
            print(
                f"  pin={version or '-':3} {'binary' if binary else 'json  '} "
                f"answered by {answered}: predicted {predicted.tolist()} "
                f"(true {labels.tolist()}, {hits}/{len(labels)} right)"
            )
    client.close()


def serve_config_locally(config: dict[str, Any], *, smoke: bool = False) -> None:
    """Serve every application of a Serve config on a local Ray until Ctrl-C."""
    http = config.get("http_options") or {}
    host, port = http.get("host", "127.0.0.1"), int(http.get("port", 8000))
    grpc = config.get("grpc_options")
    apply_serve_env()
    ray.init()
    serve.start(http_options={"host": host, "port": port}, grpc_options=grpc)
    for app in config["applications"]:
        serve.run(
            build(app.get("args") or {}),
            name=app.get("name", "default"),
            route_prefix=app.get("route_prefix", "/"),
        )
    url = f"{host}:{port}"
    print(f"rayfleet is serving on http://{url}")
    print(f"  models:    http://{url}/v2/models/digits")
    print(f"  infer:     POST http://{url}/v2/models/digits/infer")
    if grpc:
        print(f"  gRPC:      {host}:{grpc.get('port', 9000)} (KServe v2)")
    print(f"  dashboard: http://{url}/-/dashboard (rollouts, latency, drift)")
    print(f"  metrics:   http://{url}/metrics   report: http://{url}/-/validation")
    print("  Ray:       http://127.0.0.1:8265")
    if smoke:
        smoke_requests(url)
    print("serving; press Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping")
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
