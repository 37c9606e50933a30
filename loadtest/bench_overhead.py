"""What each layer between a client and the model costs, measured side by side.

One run, one machine, one ONNX model (digits v1, 4 rows a request), one load
generator (loadtest/loadgen.py at nice 19, closed loop):

- raw onnxruntime in-process (the compute limit);
- rayfleet's HTTP app on one uvicorn process, no Ray (the HTTP limit);
- KServe 0.21 ``ModelServer`` and Seldon MLServer 1.7.1 (one process, a small
  custom runtime around onnxruntime), each in its own virtualenv, built here on
  first use;
- a bare one-deployment Serve app with default settings;
- the rayfleet router path, JSON and binary tensors, under Serve's knobs.

    .venv/bin/python -m loadtest.bench_overhead [--duration 5] [-c 1 8 32]

Prints a markdown table of requests/s and p50/p99 with ratios to KServe, and writes
it to loadtest/out/overhead.md. Loopback only; every server is stopped at the end.

By default the targets run one after another, so a slow spell of the machine
hits whichever runs then. With ``--rounds N`` every selected target is up at
once and they take turns, round after round (the order rotating each round):
the table then shows each row's median round, and a second table the median of
the rounds' ratios to KServe (each round's pair ran minutes apart at most: the
number to read) and each round's. At most one of the targets may run on Ray
then (each starts a Ray instance of its own), for example
``--only kserve mlserver "direct to replica" --rounds 4``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.common import (
    OUT,
    ROOT,
    STORE,
    ensure_digits_store,
    ensure_kserve,
    ensure_mlserver,
    markdown_row,
    versus_table,
    write_report,
)
from loadtest.loadgen import (
    LoadResult,
    infer_load,
    raw_onnxruntime,
    v2_request,
)
from loadtest.rounds import ratio_cell
from loadtest.servers import Server, serving, target_command
from rayfleet.deployments.serve_env import SERVE_ENV

__all__ = ["ROWS", "Target", "digits_payloads", "main", "running", "targets"]

ROWS = 4
# How the rounds tables name the targets they divide by.
_TITLES = {"kserve": "KServe", "mlserver": "MLServer"}


@dataclass(frozen=True)
class Target(Server):
    """A server to start and the payloads to send it; ``ray``: whether it
    starts a Ray instance of its own."""

    payloads: tuple[str, ...] = ("json",)
    ray: bool = True


def digits_payloads(rows: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """A v2 request of ``rows`` for the digits model: ``json`` and ``binary``."""
    json_body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": rows.flatten().tolist(),
                }
            ]
        }
    ).encode()
    return {
        "json": (json_body, {"content-type": "application/json"}),
        "binary": v2_request(
            rows, binary=True, name="input", outputs=("label", "probabilities")
        ),
    }


@contextlib.contextmanager
def running(target: Target, port: int) -> Iterator[str]:
    """Start ``target`` on ``port``, wait until it answers, stop it afterwards."""
    with serving(target, port, "digits", ready_timeout_s=180):
        yield f"http://127.0.0.1:{port}"


def targets(only: Sequence[str] = ()) -> list[Target]:
    """The servers in the comparison, in table order: every one, or those whose
    names contain one of ``only`` (KServe's virtualenv is built only if needed)."""
    quiet = {"RAY_SERVE_LOG_TO_STDERR": "0"}
    fast = {**quiet, **SERVE_ENV}  # what rayfleet ships with
    both = ("json", "binary")

    def target(kind: str, *options: str) -> list[str]:
        return target_command(kind, *options, model="digits")

    def selected(name: str) -> bool:
        return not only or any(part in name for part in only)

    def peer(name: str, python: Callable[[], Path]) -> list[Target]:
        # The peer's virtualenv is built only when it is measured.
        if not selected(name):
            return []
        command = [
            str(python()),
            str(ROOT / f"loadtest/peers/{name}_server.py"),
            str(STORE / "digits/v1/model.onnx"),
            "digits",
            "{port}",
        ]
        return [Target(name, command, ray=False)]

    every = [
        Target("starlette (no Ray)", target("starlette"), payloads=both, ray=False),
        *peer("kserve", ensure_kserve),
        *peer("mlserver", ensure_mlserver),
        Target("serve-bare (Serve defaults)", target("serve-bare"), quiet),
        Target("rayfleet (Serve defaults)", target("rayfleet"), quiet),
        Target("serve-bare (rayfleet's Serve env)", target("serve-bare"), fast),
        Target("rayfleet (hop to replica)", target("rayfleet"), fast, both),
        Target(
            "rayfleet (direct to replica)",
            target("rayfleet", "--transport", "direct"),
            fast,
            both,
        ),
        Target(
            "rayfleet (in-router)",
            target("rayfleet", "--placement", "router"),
            fast,
            both,
        ),
        Target(
            "rayfleet (in-router, validation off)",
            target("rayfleet", "--placement", "router", "--no-validation"),
            fast,
            both,
        ),
    ]
    return [t for t in every if selected(t.name)]


def main() -> None:
    """Measure raw onnxruntime, then every target with its payloads."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--only", nargs="*", help="substrings of target names to run")
    parser.add_argument("--port", type=int, default=18123)
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="every target up at once, measured in turns, this many rounds",
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_digits_store()
    from rayfleet.cli.demo import digits_split

    rows = np.ascontiguousarray(digits_split()[1][:ROWS])
    payloads = digits_payloads(rows)
    raw = raw_onnxruntime(
        STORE / "digits" / "v1" / "model.onnx",
        {"input": rows},
        args.duration,
        warmup_runs=100,
    )
    results: dict[tuple[str, ...], dict[int, tuple[float, LoadResult]]] = {
        ("raw onnxruntime (in-process)", "-"): {raw.concurrency: (raw.rps, raw)}
    }
    print(f"raw onnxruntime: {raw.rps:.0f} runs/s, p50 {raw.p50_ms:.3f} ms", flush=True)
    chosen = targets(args.only or ())
    if args.rounds:
        rounds = interleaved(chosen, payloads, args)
    else:
        rounds = [one_after_another(chosen, payloads, args)]
    for key in rounds[0]:
        name, payload, concurrency = key
        by_rps = sorted((r[key] for r in rounds), key=lambda result: result.rps)
        # A real round (the upper middle one of an even count), so that its
        # p50 and p99 belong with its rate.
        median = by_rps[len(by_rps) // 2]
        results.setdefault((name, payload), {})[concurrency] = (median.rps, median)
    kserve = {c: rate for c, (rate, _) in results.get(("kserve", "json"), {}).items()}
    table = versus_table(
        ["server", "payload"],
        "rps",
        results,
        args.concurrency,
        kserve,
        ratio_unit="x rps",
    )
    if args.rounds:
        for baseline in ("kserve", "mlserver"):
            if any(target.name == baseline for target in chosen):
                table += "\n\n" + rounds_table(rounds, args.concurrency, baseline)
    write_report("overhead.md", table)


def measure(
    target: Target,
    port: int,
    payloads: dict[str, tuple[bytes, dict[str, str]]],
    args: argparse.Namespace,
    levels: Sequence[int],
) -> Iterator[tuple[tuple[str, str, int], LoadResult]]:
    """Load ``target`` (up on ``port``) with each of its payloads at each of
    ``levels``; yields ``(name, payload, c)`` and the result, printing each."""
    for payload in target.payloads:
        body, headers = payloads[payload]
        for concurrency in levels:
            result = infer_load(
                port, body, headers, concurrency, args.duration, "digits"
            )
            print(
                f"{target.name:30} {payload:6} c={concurrency:<3} "
                f"{result.rps:7.0f} rps  p50 {result.p50_ms:7.2f} ms  "
                f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}",
                flush=True,
            )
            yield (target.name, payload, concurrency), result


def one_after_another(
    chosen: Sequence[Target],
    payloads: dict[str, tuple[bytes, dict[str, str]]],
    args: argparse.Namespace,
) -> dict[tuple[str, str, int], LoadResult]:
    """Each target started, measured and stopped in turn, on ``args.port``."""
    found: dict[tuple[str, str, int], LoadResult] = {}
    for target in chosen:
        with running(target, args.port):
            found.update(measure(target, args.port, payloads, args, args.concurrency))
    return found


def interleaved(
    chosen: Sequence[Target],
    payloads: dict[str, tuple[bytes, dict[str, str]]],
    args: argparse.Namespace,
) -> list[dict[tuple[str, str, int], LoadResult]]:
    """Every target up at once, measured in turns for ``args.rounds`` rounds;
    one dict of results per round.

    A round goes level by level, every target at one concurrency before the
    next, so that the measurements a ratio pairs are seconds apart, not the
    minute one target's whole sweep takes; the order of the targets rotates
    from round to round."""
    on_ray = [target.name for target in chosen if target.ray]
    if len(on_ray) > 1:
        raise SystemExit(f"--rounds takes at most one target on Ray, not {on_ray}")
    # The peers take the two ports after theirs too (gRPC, metrics).
    ports = {target.name: args.port + 10 * i for i, target in enumerate(chosen)}
    rounds: list[dict[tuple[str, str, int], LoadResult]] = []
    with contextlib.ExitStack() as stack:
        for target in chosen:
            stack.enter_context(running(target, ports[target.name]))
        for round_ in range(args.rounds):
            print(f"round {round_}", flush=True)
            shift = round_ % len(chosen)
            found: dict[tuple[str, str, int], LoadResult] = {}
            for level in args.concurrency:
                for target in [*chosen[shift:], *chosen[:shift]]:
                    found.update(
                        measure(target, ports[target.name], payloads, args, [level])
                    )
            rounds.append(found)
    return rounds


def rounds_table(
    rounds: Sequence[dict[tuple[str, str, int], LoadResult]],
    levels: Sequence[int],
    baseline: str = "kserve",
) -> str:
    """Each row's ratio to ``baseline`` (JSON) at each level: the median of the
    rounds' ratios (a paired measure: in a round the two run seconds apart),
    from five rounds the interval that holds it at 90%
    (:func:`loadtest.rounds.median_interval`), then each round's."""
    shown = _TITLES.get(baseline, baseline)
    header = [
        "server",
        "payload",
        *(f"c={level} vs {shown} (rounds)" for level in levels),
    ]
    lines = [markdown_row(header), markdown_row(["---"] * len(header))]
    for name, payload, level in rounds[0]:
        if level != levels[0] or name == baseline:
            continue
        cells = [name, payload]
        for each in levels:
            ratios = [
                r[(name, payload, each)].rps / r[(baseline, "json", each)].rps
                for r in rounds
                if (baseline, "json", each) in r
            ]
            each_round = ", ".join(f"{ratio:.2f}" for ratio in ratios)
            cells.append(f"{ratio_cell(ratios)} ({each_round})")
        lines.append(markdown_row(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
