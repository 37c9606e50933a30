"""``python -m loadtest.bench_payloads``: both measurements, or (``load``) the load
process of the second."""

from __future__ import annotations

import argparse
import sys

from loadtest import bench_payloads
from loadtest.bench_payloads.profile import FORMATS
from loadtest.common import OUT, ensure_image_model, write_report

__all__ = ["main"]


def main() -> None:
    """Measure memory, then (unless ``--memory-only``) load; write the report."""
    if sys.argv[1:2] == ["load"]:
        # The load process needs only its own side, not the router's code.
        from loadtest.bench_payloads.load import load_main

        load_main(sys.argv[2:])
        return
    from loadtest.bench_payloads.memory import measure_memory, summary_peak
    from loadtest.bench_payloads.report import load_table, memory_table
    from loadtest.bench_payloads.run import measure_load

    description = (bench_payloads.__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_payloads", description=description
    )
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument(
        "--memory-only", action="store_true", help="skip the load measurements"
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_image_model()
    from rayfleet.cli.demo import image_batch

    images = image_batch(8)
    memory = memory_table(measure_memory(images), images.nbytes, summary_peak(images))
    print(memory, flush=True)
    report = memory
    if not args.memory_only:
        rows = measure_load(args.batches, args.concurrency, args.duration, args.formats)
        report += "\n" + load_table(rows)
    write_report("payloads.md", report)


if __name__ == "__main__":
    main()
