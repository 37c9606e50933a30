"""``rayfleet up``: a local Ray, the config's applications served, Ctrl-C or SIGTERM
to stop everything it started, HAProxy included."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import numpy as np
import ray
from ray import serve

from rayfleet.cli.haproxy import end_haproxy
from rayfleet.cli.ports import busy_message, busy_ports, ports_needed
from rayfleet.deployments.app import build
from rayfleet.deployments.serve_env import apply_serve_env

__all__ = ["serve_config_locally", "smoke_requests"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same way out as Ctrl-C.
    raise KeyboardInterrupt


@contextmanager
def _local_ray() -> Iterator[None]:
    """A local Ray for the block; on the way out, whatever the reason, Serve, Ray
    and the HAProxy this Ray's Serve started are all stopped."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in _STOP_SIGNALS}
    node_id: str | None = None
    try:
        ray.init()
        # Ray's core installs its own SIGTERM handler, which aborts the process:
        # put ours back over it.
        for sig in _STOP_SIGNALS:
            signal.signal(sig, _interrupt)
        node_id = ray.get_runtime_context().get_node_id()
        yield
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave HAProxy
        # holding the ports; every step below ends within a bounded time.
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        print("stopping Serve, HAProxy and Ray", flush=True)
        _stop(node_id)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(node_id: str | None) -> None:
    if ray.is_initialized():
        try:
            # Gracefully: Serve's HAProxy manager kills its HAProxy on the way.
            serve.shutdown()  # type: ignore[no-untyped-call]
        except Exception as error:  # Ray must still be stopped after this.
            print(f"rayfleet: serve shutdown failed: {error}", file=sys.stderr)
    # Also when ray.init itself was interrupted half-way.
    ray.shutdown()
    if node_id is not None:
        ended = end_haproxy(node_id)
        if ended:
            print(f"ended HAProxy that Serve left running (pid {ended})")


def _print_where(config: dict[str, Any], url: str) -> None:
    http = config.get("http_options") or {}
    grpc = config.get("grpc_options")
    print(f"rayfleet is serving on http://{url}")
    print(f"  models:    http://{url}/v2/models/digits")
    print(f"  infer:     POST http://{url}/v2/models/digits/infer")
    if grpc:
        host = http.get("host", "127.0.0.1")
        print(f"  gRPC:      {host}:{grpc.get('port', 9000)} (KServe v2)")
    print(f"  dashboard: http://{url}/-/dashboard (rollouts, latency, drift)")
    print(f"  metrics:   http://{url}/metrics   report: http://{url}/-/validation")
    print("  Ray:       http://127.0.0.1:8265")


def serve_config_locally(config: dict[str, Any], *, smoke: bool = False) -> int:
    """Serve every application of a Serve config on a local Ray until Ctrl-C or
    SIGTERM; return the exit status (2 when a port it needs is held)."""
    apply_serve_env()
    busy = busy_ports(ports_needed(config))
    if busy:
        print(busy_message(busy), file=sys.stderr)
        return 2
    http = config.get("http_options") or {}
    host, port = http.get("host", "127.0.0.1"), int(http.get("port", 8000))
    url = f"{host}:{port}"
    with _local_ray():
        serve.start(
            http_options={"host": host, "port": port},
            grpc_options=config.get("grpc_options"),
        )
        for app in config["applications"]:
            serve.run(
                build(app.get("args") or {}),
                name=app.get("name", "default"),
                route_prefix=app.get("route_prefix", "/"),
                # As `serve deploy` would: where and how the replicas log.
                logging_config=app.get("logging_config"),
            )
        _print_where(config, url)
        if smoke:
            smoke_requests(url)
        print("serving; press Ctrl-C to stop", flush=True)
        _sleep_until_signalled()
    return 0


def _sleep_until_signalled() -> None:
    while True:
        time.sleep(3600)
