"""The Serve settings rayfleet runs under, in one place.

They are read by Ray's processes at start-up, so they must be in the environment of
``ray start`` (cluster.yaml, the KubeRay manifest) or of the process that calls
``ray.init`` (``rayfleet up``, the tests, the benchmarks). Measured on a 2-core
machine (loadtest/RESULTS.md): with HAProxy forwarding straight to the router's own
HTTP server, a request to a version placed in the router crosses no Ray hop, and
rayfleet outruns KServe's ModelServer; with Serve's default proxy, every request
pays a proxy -> replica hop of several milliseconds.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["GRPC_PORT", "GRPC_SERVICER", "SERVE_ENV", "apply_serve_env", "grpc_options"]

SERVE_ENV: dict[str, str] = {
    # HAProxy on the HTTP port, forwarding to each ingress replica's own server
    # (direct ingress): no Python proxy and no proxy -> router hop.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # Serve's throughput preset: gRPC between router and replicas, user code on
    # the replica's event loop, buffered access logs, GC frozen after start-up.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # gRPC between router and replicas caps a message at 4 MiB by default: an
    # 8-image batch (4.8 MB) to a version in its own replica would fail.
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": "2147483647",
    # HAProxy relays gRPC as HTTP/2 in 16 KiB frames and 64 KiB flow-control
    # windows by default: an 8-image request (4.8 MB) crosses as ~300 frames and
    # waits on a window update every four. 256 KiB frames (a buffer must hold a
    # frame plus its header) and 4 MiB windows take gRPC through HAProxy from about
    # half the speed of calling the router directly to level with it
    # (loadtest/RESULTS.md, "HAProxy's HTTP/2 settings").
    "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": "262400",
    "RAY_SERVE_HAPROXY_H2_MAX_FRAME_SIZE": "262144",
    "RAY_SERVE_HAPROXY_H2_FE_INITIAL_WINDOW_SIZE": "4194304",
    "RAY_SERVE_HAPROXY_H2_BE_INITIAL_WINDOW_SIZE": "4194304",
    # HAProxy retries a request on another router replica when the connection
    # failed (Serve's default) and also when the router closed it without a word:
    # a router killed mid-request. Inference has no side effects; an admin action
    # replayed after it took effect is refused with 409 or sets the same value,
    # except a validation job (POST /-/validations), which would run twice.
    # Measured with two routers, a router kill still failed about one request
    # (loadtest/RESULTS.md, "Faults under load").
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
}

# The v2 gRPC service's servicer function: it also registers the pickling alias
# tritonclient's messages need (see rayfleet/platform/ingress/grpc.py), so it
# must be importable wherever Serve runs its proxies: rayfleet installed on every
# node, not only in an application's runtime_env.
GRPC_SERVICER = "rayfleet.deployments.grpc_ingress.add_inference_servicer"
GRPC_PORT = 9000


def apply_serve_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set :data:`SERVE_ENV` in ``environ`` (``os.environ`` by default) where the
    user has not set a value already; return what is in force."""
    target = os.environ if environ is None else environ
    for key, value in SERVE_ENV.items():
        target.setdefault(key, value)
    return {key: target[key] for key in SERVE_ENV}


def grpc_options(port: int = GRPC_PORT) -> dict[str, Any]:
    """``serve.start(grpc_options=...)`` for the v2 gRPC service on ``port``."""
    return {"port": port, "grpc_servicer_functions": [GRPC_SERVICER]}
