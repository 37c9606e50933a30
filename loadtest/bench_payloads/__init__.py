"""What each wire format costs for image batches: JSON, binary v2, Arrow, gRPC.

Two measurements in one run, on the image CNN (``image/v1``, FP32 images of
3 x 224 x 224):

1. Peak memory per request, in this process. An 8-image batch goes through the
   router's own code over the model loaded in-process (InProcessBackend): the HTTP
   app called as an ASGI app with the body in one piece, and the router's gRPC
   method with the serialized message, as Serve's gRPC server hands it over.
   ``tracemalloc`` sees every Python and numpy allocation from the body's arrival
   to the encoded answer (not onnxruntime's own, the same for every format). The
   router observes every request here (validation ``sample_rate`` 1), its worst
   case: the observation's summary of the first image is part of each peak.
2. Load against a rayfleet app this script starts (router plus an image replica,
   rayfleet's Serve environment, gRPC on its own port): batches of 1 and 8 images
   in each format, closed loop at nice 19 (loadtest/loadgen.py for HTTP, a grpc.aio
   loop here for gRPC): requests/s, p50/p99, bytes on the wire per request, and CPU
   per request of the router replica and of the whole server (every process of its
   Ray, HAProxy included), read with psutil around the measured window.

    .venv/bin/python -m loadtest.bench_payloads [--duration 4] [-c 1 8]
        [--batches 1 8] [--formats json binary arrow grpc] [--memory-only]

gRPC is also sent straight to the router replica's own gRPC server ("no HAProxy"),
which shows what HAProxy's HTTP/2 relay costs. rayfleet's Serve settings
(``SERVE_ENV``) apply unless this environment sets one: e.g. Serve's own HTTP/2
defaults, ``RAY_SERVE_HAPROXY_TUNE_BUFSIZE=16384
RAY_SERVE_HAPROXY_H2_MAX_FRAME_SIZE=16384
RAY_SERVE_HAPROXY_H2_FE_INITIAL_WINDOW_SIZE=65536
RAY_SERVE_HAPROXY_H2_BE_INITIAL_WINDOW_SIZE=65536``, measure what rayfleet's
larger frames and windows buy.

Prints markdown tables and writes them to loadtest/out/payloads.md. Loopback only;
the server is stopped at the end.

The package: ``profile`` (the request in every format), ``memory`` (measurement
1), ``run`` and ``load`` (measurement 2: the server, and the load process at nice
19), ``report`` (the tables).
"""

__all__: list[str] = []
