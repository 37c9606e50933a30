"""The load child: the step profile from locust's library API, at nice 19.

    python -m loadtest.step_load load --host URL --phases 20:1,60:32 ...

Closed-loop users from ``loadtest/locustfile.py`` with no think time, so the
requests in flight track the user count; records every request and the user
count each second. Locust (and its gevent patching) is imported only in here.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest.step_load.profile import Profile

__all__ = ["load_main"]


def load_main(argv: Sequence[str]) -> int:
    """Run the step profile against ``--host`` at nice 19 and record requests."""
    parser = argparse.ArgumentParser(prog="step_load load")
    parser.add_argument("--host", required=True)
    parser.add_argument("--phases", required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--users", type=Path, required=True)
    args = parser.parse_args(argv)
    profile = Profile.parse(args.phases)

    os.nice(19)
    # Imported here: locust patches the standard library with gevent on import.
    import gevent
    from locust import LoadTestShape, constant
    from locust.env import Environment
    from locust.runners import STATE_CLEANUP, STATE_STOPPED, STATE_STOPPING

    from loadtest.locustfile import RayfleetUser

    class StepUser(RayfleetUser):
        # Closed loop with no think time: requests in flight follow the users.
        wait_time = constant(0)

    class StepShape(LoadTestShape):
        def tick(self) -> tuple[int, float] | None:
            users = profile.users_at(time.time() - started_at)
            # A whole step within a second; locust warns above 100 a second.
            return None if users is None else (users, 100.0)

    requests: list[tuple[float, float, str, bool]] = []

    def on_request(
        name: str,
        response_time: float,
        exception: BaseException | None,
        start_time: float | None = None,
        **_: Any,
    ) -> None:
        started = start_time if start_time is not None else time.time()
        requests.append((started, response_time, name, exception is None))

    # Locust leaves these two unannotated.
    shape = StepShape()  # type: ignore[no-untyped-call]
    env = Environment(user_classes=[StepUser], shape_class=shape, host=args.host)
    env.events.request.add_listener(on_request)  # type: ignore[no-untyped-call]
    runner = env.create_local_runner()
    users: list[tuple[float, int]] = []
    started_at = time.time()
    runner.start_shape()
    deadline = started_at + profile.duration_s + 30.0
    stopped = (STATE_STOPPING, STATE_STOPPED, STATE_CLEANUP)
    while runner.state not in stopped and time.time() < deadline:
        users.append((time.time(), runner.user_count))
        gevent.sleep(1.0 - (time.time() - started_at) % 1.0)
    runner.quit()

    with args.requests.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["start", "latency_ms", "name", "ok"])
        for start, latency, name, ok in requests:
            writer.writerow([f"{start:.4f}", f"{latency:.2f}", name, int(ok)])
    with args.users.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["time", "users"])
        writer.writerow([f"{started_at:.3f}", 0])
        writer.writerows([f"{at:.3f}", count] for at, count in users)
    return 0
