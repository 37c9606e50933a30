"""Rollouts on real Serve under the loads users make: is a good canary ever rolled
back, and is a bad one always caught?

Each trial deploys the demo's layout (digits v1 stable in the router, one canary in
a replica of its own) as a fresh application, so the rollout starts from nothing,
drives a load from a separate process at ``nice 19`` (Ray's workers run at 15), and
watches ``/-/rollouts`` until the canary is promoted or rolled back, or the time
limit passes (undecided: still advancing or holding).

Loads: ``open20`` / ``open60`` (requests/s, open loop), ``closed16`` /
``closed64`` (clients, closed loop; either saturates two cores), and ``hog16``
(16 clients while two busy-looping processes at Ray's niceness compete for the
cores: a noisy neighbour). Canaries:

- ``good``: v2, a better model than v1;
- ``bad``: v3, a deliberately poor model (wrong predictions);
- ``slow``: v1's own ONNX file in a python version that then waits
  ``SLOW_WAIT_MS``, several times v1's model time even at its p99;
- ``failing``: v1's ONNX file in a python version that raises on 5% of requests.

    .venv/bin/python -m loadtest.rollout_trials --loads closed64,hog16 \\
        --canaries good --repeats 3

prints one line per trial and writes a markdown table to
``loadtest/out/rollout_trials.md``. Loopback only; bounded; shuts its Ray down.

``--record [PATH]`` also keeps each trial's latency for
``loadtest/sim_rollout.py``: every evaluation interval it reads the Validator's
sketches (``/-/validation?sketches=true``) and saves the trial's slices, each
version's end-to-end and model-time bins per interval and the measured request
rate, into one JSON file (``loadtest/data/latency_slices.json`` by default),
merged by load and canary with what earlier runs saved there
(:mod:`loadtest.latency_slices`).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ray
from ray import serve

from loadtest.common import free_port, markdown_table, write_report
from loadtest.latency_slices import DEFAULT_PATH, Recorder, Run, Slice, save_run
from rayfleet.cli.demo import build_demo_store, digits_split
from rayfleet.deployments.app import build
from rayfleet.deployments.serve_env import apply_serve_env
from rayfleet.platform.config.spec import PlatformSpec, parse_spec
from rayfleet.platform.config.store import MANIFEST, Manifest, ModelStore

# v1's model time is well under a millisecond; 5 ms on top of it is several times
# its p99 under load and well above the gates' 1 ms latency floor.
SLOW_WAIT_MS = 5.0
FAILING_SHARE = 0.05

# python versions around v1's ONNX file: a fixed wait, or a 5% chance to raise.
WRAPPED_V1 = textwrap.dedent(
    """
    import random
    import time
    from pathlib import Path

    import numpy as np
    import onnxruntime as ort

    WAIT_S = {wait_s}
    FAIL_SHARE = {fail_share}


    def load(version_dir):
        session = ort.InferenceSession(
            str(Path(version_dir, "model.onnx")), providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]
        draw = random.Random(0)

        def predict(inputs):
            if FAIL_SHARE and draw.random() < FAIL_SHARE:
                raise RuntimeError("injected failure")
            outputs = session.run(names, {{"input": inputs["input"]}})
            if WAIT_S:
                time.sleep(WAIT_S)
            return dict(zip(names, outputs))

        return predict
    """
)

CANARIES = {"good": "v2", "bad": "v3", "slow": "slow", "failing": "failing"}

# How far before the trial the recorder's window reaches: past the app's first
# request whatever the bucket alignment, so each answer covers the whole trial
# (Recorder's docstring says why).
RECORD_MARGIN_S = 60.0


@dataclass(frozen=True)
class LoadShape:
    """How the load process drives the router."""

    kind: str  # "open": ``level`` requests/s; "closed": ``level`` clients
    level: int
    hog: bool = False


LOADS = {
    "open20": LoadShape("open", 20),
    "open60": LoadShape("open", 60),
    "closed16": LoadShape("closed", 16),
    "closed64": LoadShape("closed", 64),
    "hog16": LoadShape("closed", 16, hog=True),
}


def write_wrapped_versions(store: Path) -> None:
    """The ``slow`` and ``failing`` digits versions, around v1's ONNX file."""
    models = ModelStore(str(store))
    v1 = models.manifest("digits", "v1")
    for name, wait_s, fail_share in (
        ("slow", SLOW_WAIT_MS / 1000, 0.0),
        ("failing", 0.0, FAILING_SHARE),
    ):
        folder = store / "digits" / name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(store / "digits" / "v1" / "model.onnx", folder / "model.onnx")
        code = WRAPPED_V1.format(wait_s=wait_s, fail_share=fail_share)
        (folder / "predict.py").write_text(code)
        manifest = Manifest(
            runtime="python",
            artifact="predict.py",
            python={"callable": "predict:load"},  # type: ignore[arg-type]
            signature=v1.signature,
        )
        (folder / MANIFEST).write_text(manifest.to_json())


def trial_spec(store: Path, canary: str, min_step_s: float) -> dict[str, Any]:
    """The demo's layout and rollout, with one canary."""
    return {
        "store": str(store),
        "router": {"num_cpus": 0.5},
        "observations": {"num_cpus": 0.25},
        "models": [
            {
                "name": "digits",
                "rollout": {
                    "steps": [5, 25, 50, 100],
                    "min_requests_per_step": 100,
                    "min_step_s": min_step_s,
                },
                "versions": [
                    {"name": "v1", "placement": "router"},
                    {"name": canary, "canary": True, "num_cpus": 0.25},
                ],
            }
        ],
    }


def _bodies() -> list[dict[str, Any]]:
    rows = digits_split()[1]
    return [
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [4, 64],
                    "data": rows[i : i + 4].ravel().tolist(),
                }
            ]
        }
        for i in range(0, len(rows) - 4, 4)
    ]


async def _drive(url: str, shape: LoadShape, stop: EventType) -> Counter[str]:
    """Send until ``stop``; count answers by version and failures by status."""
    bodies = _bodies()
    seen: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(index: int) -> None:
            try:
                response = await client.post(
                    "/v2/models/digits/infer", json=bodies[index % len(bodies)]
                )
            except httpx.HTTPError as error:
                seen[type(error).__name__] += 1
                return
            if response.status_code == 200:
                seen[response.headers.get("x-model-version", "?")] += 1
            else:
                seen[f"status {response.status_code}"] += 1

        if shape.kind == "open":
            tasks = []
            start, index = time.monotonic(), 0
            while not stop.is_set():
                tasks.append(asyncio.create_task(one(index)))
                index += 1
                pause = start + index / shape.level - time.monotonic()
                await asyncio.sleep(max(0.0, pause))
            await asyncio.gather(*tasks)
        else:

            async def client_loop(offset: int) -> None:
                index = offset
                while not stop.is_set():
                    await one(index)
                    index += shape.level

            await asyncio.gather(*(client_loop(i) for i in range(shape.level)))
    return seen


def _load_process(
    url: str, shape: LoadShape, stop: EventType, results: mp.Queue[Any]
) -> None:
    os.nice(19)
    results.put(dict(asyncio.run(_drive(url, shape, stop))))


def _spin(stop: EventType) -> None:
    os.nice(15)  # Ray's workers' niceness: an equal neighbour, not a bully
    while not stop.is_set():
        sum(range(10_000))


@contextmanager
def load(url: str, shape: LoadShape) -> Iterator[dict[str, int]]:
    """Run the load (and the hog) for the body of the ``with``; the dict it gives
    is filled with the load's counts when the block ends."""
    context = mp.get_context("spawn")
    stop = context.Event()
    results: mp.Queue[Any] = context.Queue()
    processes = [
        context.Process(target=_load_process, args=(url, shape, stop, results))
    ]
    if shape.hog:
        processes += [context.Process(target=_spin, args=(stop,)) for _ in range(2)]
    for process in processes:
        process.start()
    counts: dict[str, int] = {}
    try:
        yield counts
    finally:
        stop.set()
        counts.update(results.get(timeout=120))
        for process in processes:
            process.join(timeout=30)


@dataclass(frozen=True)
class Trial:
    """One rollout's outcome."""

    load: str
    canary: str
    outcome: str  # promoted, rolled_back, or undecided (with the phase)
    seconds: float | None  # first canary step to the decision
    canary_requests: int
    failing_gates: tuple[str, ...]  # or, undecided, the gates holding it
    client_failures: int


def run_trial(
    url: str, app: str, store: Path, load_name: str, canary: str, args: Any
) -> Trial:
    """Deploy a fresh app with ``canary``, load it, wait for the decision; with
    ``args.record``, save the trial's latency slices there."""
    version = CANARIES[canary]
    layout = trial_spec(store, version, args.min_step_s)
    spec = parse_spec(layout)
    serve.run(build(layout), name=app, route_prefix="/")
    deployed_at = time.time()
    recorder = Recorder("digits")
    slices: list[Slice] = []
    state: dict[str, Any] = {}
    with load(url, LOADS[load_name]) as counts:
        deadline = time.monotonic() + args.limit_s
        next_record = time.monotonic()
        while time.monotonic() < deadline:
            if args.record and time.monotonic() >= next_record:
                next_record += _evaluate_every_s(spec)
                elapsed_s = time.time() - deployed_at
                piece = record_slice(url, recorder, elapsed_s, spec)
                if piece is not None:
                    slices.append(piece)
            state = httpx.get(f"{url}/-/rollouts", timeout=10).json()["digits"]
            rollout = state.get("rollout") or {}
            if rollout.get("phase") in ("promoted", "rolled_back"):
                break
            time.sleep(0.5)
    serve.delete(app)
    if slices and recorder.relative_accuracy is not None:
        run = Run(version, tuple(slices))
        save_run(args.record, load_name, canary, run, recorder.relative_accuracy)
    rollout = state.get("rollout") or {}
    phase = rollout.get("phase", "none")
    history = rollout.get("history", [])
    steps = [h["ts"] for h in history if h["phase"] == "canary"]
    decided = phase in ("promoted", "rolled_back")
    seconds = history[-1]["ts"] - steps[0] if decided and steps else None
    # An undecided trial names the gates holding its step, and why it is stuck.
    shown = ("fail",) if decided else ("fail", "pending")
    gates = tuple(
        g["name"] + ("" if g["verdict"] == "fail" else " (holding)")
        for g in rollout.get("gates", [])
        if g.get("verdict") in shown
    )
    answered = {"v1", version}
    failures = sum(n for key, n in counts.items() if key not in answered)
    return Trial(
        load_name,
        canary,
        phase if decided else f"undecided ({phase})",
        seconds,
        counts.get(version, 0),
        gates,
        failures,
    )


def _evaluate_every_s(spec: PlatformSpec) -> float:
    rollout = spec.model("digits").rollout
    assert rollout is not None
    return rollout.evaluate_every_s


def record_slice(
    url: str, recorder: Recorder, elapsed_s: float, spec: PlatformSpec
) -> Slice | None:
    """The Validator's latency since the recorder's previous answer."""
    window_s = min(elapsed_s + RECORD_MARGIN_S, spec.observations.horizon_s)
    answer = httpx.get(
        f"{url}/-/validation",
        params={"window_s": f"{window_s:.3f}", "sketches": "true"},
        timeout=10,
    )
    answer.raise_for_status()
    return recorder.observe(answer.json())


def _record_option(path: Path | None) -> str:
    if path is None:
        return ""
    return " --record" if path == DEFAULT_PATH else f" --record {path}"


def report(trials: Sequence[Trial], command: str) -> str:
    """Per load and canary: outcomes, canary requests and seconds to the decision."""
    groups: dict[tuple[str, str], list[Trial]] = {}
    for trial in trials:
        groups.setdefault((trial.load, trial.canary), []).append(trial)
    rows = []
    for (load_name, canary), group in groups.items():
        outcomes = Counter(t.outcome.split(" ")[0] for t in group)
        seconds = [t.seconds for t in group if t.seconds is not None]
        gates = Counter(g for t in group for g in t.failing_gates)
        rows.append(
            [
                load_name,
                canary,
                str(len(group)),
                str(outcomes["promoted"]),
                str(outcomes["rolled_back"]),
                str(outcomes["undecided"]),
                f"{np.median([t.canary_requests for t in group]):.0f}",
                f"{np.median(seconds):.0f}" if seconds else "-",
                ", ".join(f"{g} x{n}" for g, n in gates.most_common()) or "-",
                str(sum(t.client_failures for t in group)),
            ]
        )
    header = [
        "load",
        "canary",
        "runs",
        "promoted",
        "rolled back",
        "undecided",
        "canary requests (median)",
        "s to decision (median)",
        "failing (or holding) gates",
        "client failures",
    ]
    return f"{markdown_table(header, rows, right=range(2, 8))}\n\n`{command}`\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--canaries", default=",".join(CANARIES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--min-step-s", type=float, default=30.0)
    parser.add_argument("--limit-s", type=float, default=240.0)
    parser.add_argument(
        "--record",
        type=Path,
        nargs="?",
        const=DEFAULT_PATH,
        default=None,
        metavar="PATH",
        help="save each trial's latency slices for loadtest.sim_rollout "
        "(default loadtest/data/latency_slices.json)",
    )
    args = parser.parse_args()
    loads, canaries = args.loads.split(","), args.canaries.split(",")
    unknown = (set(loads) - set(LOADS)) | (set(canaries) - set(CANARIES))
    if unknown:
        parser.error(f"unknown loads or canaries: {sorted(unknown)}")
    store = Path(tempfile.mkdtemp(prefix="rayfleet-trials-"))
    build_demo_store(str(store))
    write_wrapped_versions(store)
    apply_serve_env()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    trials = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for repeat in range(args.repeats):
            for load_name in loads:
                for canary in canaries:
                    app = f"trial-{repeat}-{load_name}-{canary}"
                    trial = run_trial(url, app, store, load_name, canary, args)
                    trials.append(trial)
                    print(trial, flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(store, ignore_errors=True)
    command = (
        f".venv/bin/python -m loadtest.rollout_trials --loads {args.loads} "
        f"--canaries {args.canaries} --repeats {args.repeats} "
        f"--min-step-s {args.min_step_s:g} --limit-s {args.limit_s:g}"
        + _record_option(args.record)
    )
    write_report("rollout_trials.md", report(trials, command))


if __name__ == "__main__":
    main()
