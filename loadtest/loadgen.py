"""A closed-loop HTTP load generator, run as its own process at ``nice 19``.

Ray starts its workers at niceness 15; a client at niceness 0 on the same two cores
would starve the server it measures. Each of ``concurrency`` workers sends the same
request, waits for the answer, and sends the next, for ``duration_s`` seconds after
a warm-up.

    python -m loadtest.loadgen URL BODY_FILE --header k=v -c 32 -d 5
prints one JSON line: requests/s, p50/p99/max ms, errors by status.

Also the other side of each comparison, measured the same way: the model called
in a loop in this process (``time_loop``, ``raw_onnxruntime``); and the v2 request
bodies the benchmarks send (``v2_request``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import numpy as np
import onnxruntime as ort
import tritonclient.http as triton_http

from loadtest.common import OUT

__all__ = [
    "LoadResult",
    "infer_load",
    "raw_onnxruntime",
    "run_load",
    "run_load_subprocess",
    "time_loop",
    "v2_request",
]

# How the load generator's process tells its parent where the measured window
# starts and ends, on lines of their own before its result.
WINDOW_MARK = "window "


@dataclass(frozen=True)
class LoadResult:
    """What one closed-loop run measured."""

    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]

    @classmethod
    def from_latencies(
        cls,
        concurrency: int,
        latencies_s: Sequence[float],
        seconds: float,
        errors: Mapping[str, int] | None = None,
    ) -> LoadResult:
        """The summary of per-request latencies (in seconds) over ``seconds``."""
        values = np.array(latencies_s or [float("nan")]) * 1000
        return cls(
            concurrency=concurrency,
            requests=len(latencies_s),
            seconds=seconds,
            rps=len(latencies_s) / seconds,
            p50_ms=float(np.percentile(values, 50)),
            p99_ms=float(np.percentile(values, 99)),
            max_ms=float(values.max()),
            errors=dict(errors or {}),
        )


def time_loop(call: Callable[[], object], duration_s: float) -> LoadResult:
    """Call ``call`` back to back in this process for ``duration_s`` and measure:
    the in-process limit the servers are compared with."""
    latencies = []
    began = time.perf_counter()
    while time.perf_counter() - began < duration_s:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    return LoadResult.from_latencies(1, latencies, time.perf_counter() - began)


def raw_onnxruntime(
    model: Path,
    feed: Mapping[str, np.ndarray],
    duration_s: float,
    *,
    warmup_runs: int,
    providers: Sequence[str] = (),
) -> LoadResult:
    """``session.run`` on ``feed`` in a loop in this process, after ``warmup_runs``
    runs: the most the model can do (with the same one intra-op thread as every
    server's session). ``rps`` counts runs, not rows."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model),
        sess_options=options,
        providers=list(providers) or ["CPUExecutionProvider"],
    )
    for _ in range(warmup_runs):
        session.run(None, feed)
    return time_loop(lambda: session.run(None, feed), duration_s)


def v2_request(
    array: np.ndarray,
    *,
    binary: bool,
    name: str = "image",
    outputs: Sequence[str] = ("probabilities", "label"),
) -> tuple[bytes, dict[str, str]]:
    """A v2 request of ``array`` as input ``name`` (the image model's by default),
    JSON or with binary tensors in and out, as tritonclient.http sends it; and the
    headers it needs."""
    infer_input = triton_http.InferInput(name, list(array.shape), "FP32")
    infer_input.set_data_from_numpy(array, binary_data=binary)
    requested = [
        triton_http.InferRequestedOutput(output, binary_data=binary)
        for output in outputs
    ]
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        [infer_input], outputs=requested
    )
    if header_length is None:
        return body, {"content-type": "application/json"}
    return body, {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(header_length),
    }


async def run_load(
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    window: Callable[[str], None] | None = None,
) -> LoadResult:
    """Drive ``url`` with ``concurrency`` closed-loop workers and measure.

    ``window`` is called with ``"start"`` and ``"end"`` as the measured window
    (after the warm-up) opens and closes, for a caller that reads something else
    over exactly that span.
    """
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        measuring = False
        stop_at = time.perf_counter() + warmup_s + duration_s

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as reply:
                        await reply.read()
                        status = reply.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                    status = -1
                    errors[type(error).__name__] += 1
                elapsed = time.perf_counter() - started
                if measuring:
                    latencies.append(elapsed)
                    if status != 200:
                        errors[str(status)] += 1

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        measuring = True
        if window is not None:
            window("start")
        began = time.perf_counter()
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - began
        if window is not None:
            window("end")
    return LoadResult.from_latencies(concurrency, latencies, seconds, errors)


def run_load_subprocess(
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration_s: float,
    scratch: str,
    window: Callable[[str], None] | None = None,
) -> LoadResult:
    """Run :func:`run_load` in a fresh process at niceness 19; ``window`` as
    there, called here as the process reports its window's edges."""
    import subprocess
    import tempfile
    import threading

    with tempfile.NamedTemporaryFile(dir=scratch, delete=False) as file:
        file.write(body)
    command = [
        sys.executable,
        "-m",
        "loadtest.loadgen",
        url,
        file.name,
        "-c",
        str(concurrency),
        "-d",
        str(duration_s),
    ]
    for key, value in headers.items():
        command += ["--header", f"{key}={value}"]
    lines = []
    try:
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        ) as process:
            watchdog = threading.Timer(duration_s + 120, process.kill)
            watchdog.start()
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    if line.startswith(WINDOW_MARK) and window is not None:
                        window(line.strip().removeprefix(WINDOW_MARK))
                    lines.append(line.strip())
            finally:
                watchdog.cancel()
        if process.returncode != 0:
            raise subprocess.CalledProcessError(process.returncode, command)
    finally:
        os.unlink(file.name)
    return LoadResult(**json.loads(lines[-1]))


def infer_load(
    port: int,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration_s: float,
    model: str = "image",
) -> LoadResult:
    """:func:`run_load_subprocess` on ``model`` of the server on ``port``."""
    return run_load_subprocess(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        body,
        headers,
        concurrency,
        duration_s,
        str(OUT),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("body_file")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    args = parser.parse_args()
    os.nice(19)
    headers = dict(h.split("=", 1) for h in args.header)
    with open(args.body_file, "rb") as file:
        body = file.read()
    result = asyncio.run(
        run_load(
            args.url,
            body,
            headers,
            args.concurrency,
            args.duration,
            window=lambda edge: print(WINDOW_MARK + edge, flush=True),
        )
    )
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
